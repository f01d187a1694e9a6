//! `courier bench c2d`: devices connected, S senders, M × N messages, measured;
//! against the hub (HTTPS senders) or, in broker mode, a plain MQTT broker
//! (MQTT publishers), with the same devices, measurements and report.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::stream::{self, StreamExt as _, TryStreamExt as _};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::fleet::{self, BenchDevice, PREFIX};
use crate::http::Service;
use crate::job::SendJob;
use crate::mqtt::{Counters, DeviceOutcome};
use crate::options::{AckMode, C2dPlan, OptionsError, SendOver, Transport};
use crate::process::ProcessSample;
use crate::publisher::Publisher;
use crate::report::{BrokerReport, C2dReport, ErrorCount, GeneratorUsage, HubUsage, Throughput};
use crate::sender::{SendVia, Sender};
use crate::stats::{ErrorCounts, Latencies};
use crate::target::{BenchTarget, BrokerTarget, Observer, Progress};
use crate::BenchError;

/// A run gives up waiting when nothing arrives for this long.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the progress line and the hub's RSS are refreshed.
const TICK: Duration = Duration::from_millis(100);
/// Feedback receivers running at once (each long-polls, then completes a batch).
const FEEDBACK_RECEIVERS: usize = 4;
/// Broker-mode publisher connections opened at once.
const PUBLISHER_CONNECT_CONCURRENCY: usize = 16;

/// Runs the plan against `target` and reports what happened; devices are
/// deleted at the end unless `plan.keep_devices`.
pub async fn run_c2d(
    target: &BenchTarget,
    plan: &C2dPlan,
    observer: &dyn Observer,
) -> Result<C2dReport, BenchError> {
    plan.validate()?;
    let service = Service::new(target, plan.http)?;
    let ids = fleet::device_ids(plan.devices);
    let key = courier_auth::generate_key(&mut rand::thread_rng());
    // The hub's default depth (50) would refuse most of a flat-out run's sends.
    let max_queue_depth = plan.messages_per_device;
    observer.phase(&format!(
        "creating {} devices {PREFIX}0…{PREFIX}{} with c2dLimits.maxQueueDepth = {max_queue_depth} (hub default 50)",
        plan.devices,
        plan.devices - 1
    ));
    let result = match fleet::create(&service, &ids, &key, max_queue_depth).await {
        Ok(()) => {
            let connected = async {
                if plan.transport != Transport::Mqtt {
                    observer.phase(&format!(
                        "connecting {} devices over {} (Rust SDK)",
                        ids.len(),
                        plan.transport.as_str().to_uppercase()
                    ));
                    return fleet::connect_sdk(target, plan.transport, &ids, &key).await;
                }
                let port = target.mqtt_port.ok_or(BenchError::NoMqttPort)?;
                let endpoint = target.mqtt_endpoint(port).await?;
                let sources = endpoint.sources(plan.source_addresses, plan.devices)?;
                observer.phase(&format!(
                    "connecting {} devices over MQTT/TLS{}",
                    ids.len(),
                    from_sources(&sources)
                ));
                let devices = fleet::connect(&endpoint, &sources, target, &ids, &key).await?;
                Ok(devices.into_iter().map(BenchDevice::Mqtt).collect())
            };
            match connected.await {
                Ok(devices) => match hub_senders(target, plan, &service) {
                    Ok(via) => {
                        let senders = Senders::Hub {
                            service: &service,
                            via: via.clone(),
                        };
                        let report =
                            measure(plan, &ids, devices, senders, target.hub_pid, observer).await;
                        for via in via {
                            if let SendVia::Amqp(client) = via {
                                client.close().await;
                            }
                        }
                        report
                    }
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            }
        }
        Err(e) => Err(e),
    };
    if !plan.keep_devices {
        observer.phase(&format!("deleting {} devices", ids.len()));
        let failed = fleet::delete(&service, &ids).await;
        if failed > 0 {
            observer.phase(&format!("{failed} bench devices could not be deleted"));
        }
    }
    result.map(|mut report| {
        report.max_queue_depth = Some(max_queue_depth);
        report
    })
}

/// Broker mode: the same run against a plain MQTT broker. Devices connect
/// with persistent sessions (clean session = false, after clearing what an
/// earlier run left) and subscribe QoS 1 to their C2D topic filter;
/// `plan.senders` publisher connections stand in for the service and publish
/// QoS 1 to `devices/{id}/messages/devicebound/{property bag}`, each with up
/// to `plan.publish_window` PUBLISHes unacknowledged. A message counts as
/// sent when the broker's PUBACK arrives.
pub async fn run_c2d_broker(
    broker: &BrokerTarget,
    plan: &C2dPlan,
    observer: &dyn Observer,
) -> Result<C2dReport, BenchError> {
    plan.validate()?;
    if plan.ack == AckMode::Full {
        return Err(OptionsError::BrokerFeedback.into());
    }
    if plan.transport != Transport::Mqtt {
        return Err(OptionsError::BrokerTransport(plan.transport.as_str()).into());
    }
    let endpoint = broker.endpoint().await?;
    let connections = plan.devices.saturating_add(plan.senders);
    let sources = endpoint.sources(plan.source_addresses, connections)?;
    let ids = fleet::device_ids(plan.devices);
    observer.phase(&format!(
        "connecting {} devices to {} (persistent sessions, SUBSCRIBE QoS 1){}",
        ids.len(),
        broker.url,
        from_sources(&sources)
    ));
    let devices = fleet::connect_to_broker(&endpoint, &sources, &ids)
        .await?
        .into_iter()
        .map(BenchDevice::Mqtt)
        .collect();
    observer.phase(&format!(
        "connecting {} publishers (window {})",
        plan.senders, plan.publish_window
    ));
    let (endpoint, sources, devices_n) = (&endpoint, &sources, ids.len());
    let publishers: Vec<Publisher> = stream::iter(0..plan.senders)
        .map(|index| async move {
            let slot = usize::try_from(index)
                .unwrap_or(0)
                .saturating_add(devices_n);
            Publisher::connect(
                endpoint,
                fleet::source(sources, slot),
                &format!("{PREFIX}publisher-{index}"),
            )
            .await
            .map_err(|reason| BenchError::Publisher { index, reason })
        })
        .buffered(PUBLISHER_CONNECT_CONCURRENCY)
        .try_collect()
        .await?;
    let mut report = measure(
        plan,
        &ids,
        devices,
        Senders::Mqtt(publishers),
        broker.pid,
        observer,
    )
    .await?;
    report.max_queue_depth = None;
    report.amqp_connections = None;
    report.broker = Some(BrokerReport {
        url: broker.url.clone(),
        publish_window: plan.publish_window,
    });
    Ok(report)
}

/// " from 127.0.0.1…127.0.0.N" when connections are spread over addresses.
fn from_sources(sources: &[std::net::IpAddr]) -> String {
    match (sources.first(), sources.last()) {
        (Some(first), Some(last)) if sources.len() > 1 => format!(" from {first}…{last}"),
        _ => String::new(),
    }
}

/// What the hub's senders send through: one HTTPS client shared by all, or
/// `plan.amqp_connections` AMQP service clients (one connection each).
fn hub_senders(
    target: &BenchTarget,
    plan: &C2dPlan,
    service: &Service,
) -> Result<Vec<SendVia>, BenchError> {
    match plan.send_over {
        SendOver::Https => Ok(vec![SendVia::Https(service.clone())]),
        SendOver::Amqp => {
            let port = target.amqp_port.ok_or(BenchError::NoAmqpPort)?;
            let connection_string = target.service_connection_string();
            (0..plan.amqp_connections.min(plan.senders))
                .map(|_| {
                    let options = courier_client::ServiceOptions::new()
                        .transport(courier_client::ServiceTransport::Amqp)
                        .amqp_port(port)
                        .ca_certificate_pem(target.ca_pem.clone());
                    courier_client::ServiceClient::with_options(&connection_string, options)
                        .map(SendVia::Amqp)
                        .map_err(|e| BenchError::Client(e.to_string()))
                })
                .collect()
        }
    }
}

/// Who sends the run's messages.
enum Senders<'a> {
    /// `plan.senders` senders to the hub, taking turns over `via`; `service`
    /// also takes the feedback.
    Hub {
        service: &'a Service,
        via: Vec<SendVia>,
    },
    /// Connected publishers to a plain broker.
    Mqtt(Vec<Publisher>),
}

async fn measure(
    plan: &C2dPlan,
    ids: &[String],
    devices: Vec<BenchDevice>,
    senders: Senders<'_>,
    pid: Option<u32>,
    observer: &dyn Observer,
) -> Result<C2dReport, BenchError> {
    let counters = Arc::new(Counters::default());
    let errors = Arc::new(ErrorCounts::default());
    let (stop, stopped) = watch::channel(false);
    let epoch = Instant::now();
    let per_device = usize::try_from(plan.messages_per_device).unwrap_or(usize::MAX);
    let mut receivers = JoinSet::new();
    for device in devices {
        receivers.spawn(device.receive(epoch, per_device, counters.clone(), stopped.clone()));
    }

    let hub_before = pid.map(ProcessSample::read).transpose()?;
    let generator_before = ProcessSample::read_self().ok();
    let total = u64::from(plan.total_messages().unwrap_or(u32::MAX));
    observer.phase(&format!(
        "sending {total} messages from {} senders{}",
        plan.senders,
        plan.rate
            .map(|r| format!(" at {r} msg/s"))
            .unwrap_or_default()
    ));

    let feedback = Arc::new(AtomicU64::new(0));
    let feedback_done = Arc::new(AtomicBool::new(false));
    let mut feedback_tasks = JoinSet::new();
    if let (AckMode::Full, Senders::Hub { service, .. }) = (plan.ack, &senders) {
        for _ in 0..FEEDBACK_RECEIVERS {
            let service = Service::clone(service);
            let (feedback, done, errors) =
                (feedback.clone(), feedback_done.clone(), errors.clone());
            feedback_tasks.spawn(async move {
                while !done.load(Ordering::Relaxed) {
                    match service.take_feedback(Duration::from_secs(1), PREFIX).await {
                        Ok(n) => {
                            feedback.fetch_add(n, Ordering::Relaxed);
                        }
                        Err(e) => errors.add(e.kind, 1),
                    }
                }
            });
        }
    }

    let start = Instant::now();
    let shared_ids: Arc<[String]> = ids.into();
    let rate = plan.rate.map(|r| f64::from(r.get()));
    let body_bytes = usize::try_from(plan.body_bytes).unwrap_or(8);
    let job = SendJob {
        ids: shared_ids.clone(),
        next: Arc::new(AtomicU64::new(0)),
        total,
        rate,
        start,
        epoch,
        body_bytes,
        counters: counters.clone(),
        errors: errors.clone(),
    };
    let mut sending = JoinSet::new();
    match senders {
        Senders::Hub { via, .. } => {
            let senders = usize::try_from(plan.senders).unwrap_or(usize::MAX);
            for via in via.iter().cycle().take(senders) {
                let sender = Sender {
                    via: via.clone(),
                    ack: plan.ack,
                    job: job.clone(),
                };
                sending.spawn(sender.run());
            }
        }
        Senders::Mqtt(publishers) => {
            for publisher in publishers {
                sending.spawn(publisher.run(job.clone(), plan.publish_window));
            }
        }
    }

    let mut hub_peak_rss = 0_u64;
    let sample_hub = |peak: &mut u64| {
        if let Some(sample) = pid.and_then(|pid| ProcessSample::read(pid).ok()) {
            *peak = (*peak).max(sample.rss_bytes);
        }
    };
    let progress = |counters: &Counters, errors: &ErrorCounts| Progress {
        sent: counters.sent.load(Ordering::Relaxed),
        delivered: counters.delivered.load(Ordering::Relaxed),
        total,
        errors: errors.total(),
    };
    let mut ticker = tokio::time::interval(TICK);
    let mut last_send: Option<Instant> = None;
    while !sending.is_empty() {
        tokio::select! {
            done = sending.join_next() => {
                if let Some(Ok(Some(at))) = done {
                    last_send = Some(last_send.map_or(at, |l| l.max(at)));
                }
            }
            _ = ticker.tick() => {
                sample_hub(&mut hub_peak_rss);
                observer.progress(progress(&counters, &errors));
            }
        }
    }
    let sent = counters.sent.load(Ordering::Relaxed);

    // Every accepted message must reach its device; wait while deliveries move.
    let mut last_change = (Instant::now(), counters.delivered.load(Ordering::Relaxed));
    loop {
        let delivered = counters.delivered.load(Ordering::Relaxed);
        if delivered >= sent {
            break;
        }
        if delivered != last_change.1 {
            last_change = (Instant::now(), delivered);
        } else if last_change.0.elapsed() >= STALL_TIMEOUT {
            errors.add(
                format!(
                    "not delivered (nothing arrived for {} s)",
                    STALL_TIMEOUT.as_secs()
                ),
                sent - delivered,
            );
            break;
        }
        ticker.tick().await;
        sample_hub(&mut hub_peak_rss);
        observer.progress(progress(&counters, &errors));
    }

    if plan.ack == AckMode::Full {
        observer.phase("collecting feedback records");
        let mut last_change = (Instant::now(), feedback.load(Ordering::Relaxed));
        loop {
            let records = feedback.load(Ordering::Relaxed);
            if records >= sent {
                break;
            }
            if records != last_change.1 {
                last_change = (Instant::now(), records);
            } else if last_change.0.elapsed() >= STALL_TIMEOUT {
                errors.add("feedback: records missing", sent - records);
                break;
            }
            ticker.tick().await;
        }
        feedback_done.store(true, Ordering::Relaxed);
        while feedback_tasks.join_next().await.is_some() {}
    }

    let hub_after = pid.map(ProcessSample::read).transpose()?;
    let generator_after = ProcessSample::read_self().ok();
    sample_hub(&mut hub_peak_rss);
    observer.progress(progress(&counters, &errors));

    let _ = stop.send(true);
    let mut latencies = Latencies::new();
    let mut outcome = DeviceOutcome::default();
    while let Some(done) = receivers.join_next().await {
        let Ok(device) = done else {
            errors.add("device task failed", 1);
            continue;
        };
        latencies.add_all(&device.latencies);
        outcome.delivered += device.delivered;
        outcome.redelivered += device.redelivered;
        outcome.last_ack = outcome.last_ack.max(device.last_ack);
        if let Some(error) = device.error {
            errors.add(error, 1);
        }
    }

    let delivered = outcome.delivered;
    let seconds = outcome.last_ack.map_or(0.0, |t| (t - start).as_secs_f64());
    let send_seconds = last_send.map_or(0.0, |t| (t - start).as_secs_f64());
    let per_second = |n: u64, s: f64| if s > 0.0 { n as f64 / s } else { 0.0 };
    let per_message = |cpu: Duration| {
        if delivered > 0 {
            cpu.as_secs_f64() * 1e6 / delivered as f64
        } else {
            0.0
        }
    };
    let hub = match (pid, hub_before, hub_after) {
        (Some(pid), Some(before), Some(after)) => {
            let cpu = after.cpu.saturating_sub(before.cpu);
            Some(HubUsage {
                pid,
                cpu_seconds: cpu.as_secs_f64(),
                cpu_micros_per_message: per_message(cpu),
                peak_rss_bytes: hub_peak_rss.max(after.rss_bytes),
                high_water_rss_bytes: after.peak_rss_bytes,
            })
        }
        _ => None,
    };
    let generator_cpu = match (generator_before, generator_after) {
        (Some(before), Some(after)) => after.cpu.saturating_sub(before.cpu),
        _ => Duration::ZERO,
    };
    Ok(C2dReport {
        transport: plan.transport,
        devices: plan.devices,
        messages_per_device: plan.messages_per_device,
        senders: plan.senders,
        rate: plan.rate.map(|r| r.get()),
        http: plan.http,
        send_over: plan.send_over,
        amqp_connections: (plan.send_over == SendOver::Amqp)
            .then(|| plan.amqp_connections.min(plan.senders)),
        ack: plan.ack,
        body_bytes: plan.body_bytes,
        max_queue_depth: Some(plan.messages_per_device),
        broker: None,
        sent,
        delivered,
        redelivered: outcome.redelivered,
        feedback_records: (plan.ack == AckMode::Full).then(|| feedback.load(Ordering::Relaxed)),
        throughput: Throughput {
            seconds,
            delivered_per_second: per_second(delivered, seconds),
            send_seconds,
            sent_per_second: per_second(sent, send_seconds),
        },
        latency: latencies.report(),
        errors: errors
            .snapshot()
            .into_iter()
            .map(|(kind, count)| ErrorCount { kind, count })
            .collect(),
        hub,
        generator: GeneratorUsage {
            cpu_seconds: generator_cpu.as_secs_f64(),
            cpu_micros_per_message: per_message(generator_cpu),
        },
    })
}
