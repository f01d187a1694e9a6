//! `courier bench idle`: what an idle MQTT TLS connection costs the hub in memory.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::fleet::{self, PREFIX};
use crate::http::Service;
use crate::mqtt::Counters;
use crate::options::{HttpVersion, IdlePlan};
use crate::process::ProcessSample;
use crate::report::IdleReport;
use crate::target::{BenchTarget, Observer};
use crate::BenchError;

/// Creates the devices, samples the hub's RSS, connects and subscribes every
/// device, samples again, then disconnects and (unless kept) deletes them.
pub async fn run_idle(
    target: &BenchTarget,
    plan: &IdlePlan,
    observer: &dyn Observer,
) -> Result<IdleReport, BenchError> {
    plan.validate()?;
    let port = target.mqtt_port.ok_or(BenchError::NoMqttPort)?;
    let pid = target
        .hub_pid
        .ok_or(BenchError::Process(crate::ProcessSampleError::Parse {
            path: "run.json".into(),
            field: "pid (the hub must run on this machine; pass --hub-pid)",
        }))?;
    let service = Service::new(target, HttpVersion::Http1)?;
    let ids = fleet::device_ids(plan.connections);
    let key = courier_auth::generate_key(&mut rand::thread_rng());
    observer.phase(&format!(
        "creating {} devices {PREFIX}0…{PREFIX}{}",
        plan.connections,
        plan.connections - 1
    ));
    let result = match fleet::create(&service, &ids, &key, 1).await {
        Ok(()) => hold(target, plan, &ids, &key, port, pid, observer).await,
        Err(e) => Err(e),
    };
    if !plan.keep_devices {
        observer.phase(&format!("deleting {} devices", ids.len()));
        let failed = fleet::delete(&service, &ids).await;
        if failed > 0 {
            observer.phase(&format!("{failed} bench devices could not be deleted"));
        }
    }
    result
}

async fn hold(
    target: &BenchTarget,
    plan: &IdlePlan,
    ids: &[String],
    key: &str,
    port: u16,
    pid: u32,
    observer: &dyn Observer,
) -> Result<IdleReport, BenchError> {
    let endpoint = target.mqtt_endpoint(port).await?;
    let sources = endpoint.sources(plan.source_addresses, plan.connections)?;
    let before = ProcessSample::read(pid)?;
    observer.phase(&format!(
        "connecting {} idle devices over MQTT/TLS{}",
        ids.len(),
        match (sources.first(), sources.last()) {
            (Some(first), Some(last)) => format!(" from {first}…{last}"),
            _ => String::new(),
        }
    ));
    let started = Instant::now();
    let devices = fleet::connect(&endpoint, &sources, target, ids, key).await?;
    let connect_seconds = started.elapsed().as_secs_f64();
    // Every CONNACK and SUBACK is in: the hub holds each connection's state now.
    let after = ProcessSample::read(pid)?;
    let generator_rss_bytes = ProcessSample::read_self().map_or(0, |s| s.rss_bytes);

    observer.phase("disconnecting");
    let (stop, stopped) = watch::channel(false);
    let counters = Arc::new(Counters::default());
    let epoch = Instant::now();
    let mut tasks = JoinSet::new();
    for device in devices {
        tasks.spawn(device.receive(epoch, 0, counters.clone(), stopped.clone()));
    }
    let _ = stop.send(true);
    while tasks.join_next().await.is_some() {}

    let grown = after.rss_bytes.saturating_sub(before.rss_bytes);
    Ok(IdleReport {
        connections: plan.connections,
        source_addresses: u32::try_from(sources.len()).unwrap_or(u32::MAX).max(1),
        generator_rss_bytes,
        connect_seconds,
        pid,
        rss_before_bytes: before.rss_bytes,
        rss_after_bytes: after.rss_bytes,
        rss_per_connection_bytes: grown as f64 / f64::from(plan.connections),
    })
}
