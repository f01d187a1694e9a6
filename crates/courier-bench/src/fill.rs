//! `courier bench fill`: queue M messages for each of N devices that never
//! connect, for the recovery bench (fill, `kill -9`, restart, time until the
//! hub serves again). The devices and their queues are left in place.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use crate::fleet::{self, PREFIX};
use crate::http::Service;
use crate::job::SendJob;
use crate::mqtt::Counters;
use crate::options::{AckMode, FillPlan};
use crate::process::ProcessSample;
use crate::report::{ErrorCount, FillReport, HubUsage};
use crate::sender::{SendVia, Sender};
use crate::stats::ErrorCounts;
use crate::target::{BenchTarget, Observer, Progress};
use crate::BenchError;

/// How often progress and the hub's RSS are sampled.
const TICK: Duration = Duration::from_millis(250);

/// Creates the devices with `c2dLimits.maxQueueDepth` = M, sends the M × N
/// messages from concurrent HTTPS senders, and reports; deletes nothing.
pub async fn run_fill(
    target: &BenchTarget,
    plan: &FillPlan,
    observer: &dyn Observer,
) -> Result<FillReport, BenchError> {
    plan.validate()?;
    let service = Service::new(target, plan.http)?;
    let ids = fleet::device_ids(plan.devices);
    let key = courier_auth::generate_key(&mut rand::thread_rng());
    observer.phase(&format!(
        "creating {} devices {PREFIX}0…{PREFIX}{} with c2dLimits.maxQueueDepth = {}",
        plan.devices,
        plan.devices - 1,
        plan.messages_per_device
    ));
    let created = Instant::now();
    fleet::create(&service, &ids, &key, plan.messages_per_device).await?;
    let create_seconds = created.elapsed().as_secs_f64();

    let total = u64::from(plan.total_messages());
    observer.phase(&format!(
        "queueing {total} messages from {} senders (no device connected)",
        plan.senders
    ));
    let counters = Arc::new(Counters::default());
    let errors = Arc::new(ErrorCounts::default());
    let before = target.hub_pid.map(ProcessSample::read).transpose()?;
    let start = Instant::now();
    let job = SendJob {
        ids: ids.into(),
        next: Arc::new(AtomicU64::new(0)),
        total,
        rate: None,
        start,
        epoch: start,
        body_bytes: usize::try_from(plan.body_bytes).unwrap_or(8),
        counters: counters.clone(),
        errors: errors.clone(),
    };
    let mut senders = JoinSet::new();
    for _ in 0..plan.senders {
        let sender = Sender {
            via: SendVia::Https(service.clone()),
            ack: AckMode::None,
            job: job.clone(),
        };
        senders.spawn(sender.run());
    }
    let mut peak_rss = 0_u64;
    let mut last_send: Option<Instant> = None;
    let mut ticker = tokio::time::interval(TICK);
    while !senders.is_empty() {
        tokio::select! {
            done = senders.join_next() => {
                if let Some(Ok(Some(at))) = done {
                    last_send = Some(last_send.map_or(at, |l| l.max(at)));
                }
            }
            _ = ticker.tick() => {
                if let Some(sample) = target.hub_pid.and_then(|pid| ProcessSample::read(pid).ok()) {
                    peak_rss = peak_rss.max(sample.rss_bytes);
                }
                observer.progress(Progress {
                    sent: counters.sent.load(Ordering::Relaxed),
                    delivered: 0,
                    total,
                    errors: errors.total(),
                });
            }
        }
    }
    let after = target.hub_pid.map(ProcessSample::read).transpose()?;
    let sent = counters.sent.load(Ordering::Relaxed);
    let send_seconds = last_send.map_or(0.0, |t| (t - start).as_secs_f64());
    let hub = match (target.hub_pid, before, after) {
        (Some(pid), Some(before), Some(after)) => {
            let cpu = after.cpu.saturating_sub(before.cpu);
            Some(HubUsage {
                pid,
                cpu_seconds: cpu.as_secs_f64(),
                cpu_micros_per_message: if sent > 0 {
                    cpu.as_secs_f64() * 1e6 / sent as f64
                } else {
                    0.0
                },
                peak_rss_bytes: peak_rss.max(after.rss_bytes),
                high_water_rss_bytes: after.peak_rss_bytes,
            })
        }
        _ => None,
    };
    Ok(FillReport {
        devices: plan.devices,
        messages_per_device: plan.messages_per_device,
        senders: plan.senders,
        http: plan.http,
        body_bytes: plan.body_bytes,
        create_seconds,
        sent,
        send_seconds,
        sent_per_second: if send_seconds > 0.0 {
            sent as f64 / send_seconds
        } else {
            0.0
        },
        errors: errors
            .snapshot()
            .into_iter()
            .map(|(kind, count)| ErrorCount { kind, count })
            .collect(),
        hub,
    })
}
