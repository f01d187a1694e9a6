//! Durable throughput of the engine: core decisions + event encoding + WAL
//! group commit, without any protocol head.
//!
//! `cargo bench -p courier-hub --bench engine` — 1,000 devices × 1,000
//! messages: every send acknowledged only after fdatasync; then the hub is
//! stopped and reopened with 1M messages queued (recovery time); then every
//! message is received and completed (also durable). Prints operations per
//! second and the process's CPU time per message (all threads, from /proc).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    missing_docs
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use courier_core::{
    C2dMessage, DeviceId, DeviceSpec, HubSettings, IfMatch, LimitOverrides, MessageProperties,
};
use courier_hub::{Hub, HubOptions, SystemClock};
use courier_store::{WalOptions, WalStore};

const DEVICES: usize = 1_000;
const PER_DEVICE: usize = 1_000;
const CONCURRENCY: usize = 256;

/// User + system CPU time of this process so far.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    // After the command name: state is field 0, utime 11, stime 12 (clock ticks).
    let ticks: u64 = fields.get(11).and_then(|f| f.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|f| f.parse().ok()).unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(run());
}

fn open(dir: &std::path::Path) -> (Hub, courier_hub::HubTask, courier_hub::OpenStats) {
    let store = WalStore::open(dir, WalOptions::default()).unwrap();
    Hub::open(
        Arc::new(store),
        HubSettings::default(),
        Arc::new(SystemClock),
        HubOptions::default(),
    )
    .unwrap()
}

async fn run() {
    let dir = tempfile::tempdir().unwrap();
    let (hub, task, _) = open(dir.path());
    let ids: Vec<DeviceId> = (0..DEVICES)
        .map(|i| DeviceId::new(format!("bench-{i}")).unwrap())
        .collect();
    let spec = DeviceSpec {
        limits: LimitOverrides {
            max_queue_depth: Some(PER_DEVICE as u32),
            ..Default::default()
        },
        ..Default::default()
    };
    for id in &ids {
        hub.put_device(id.clone(), spec.clone(), IfMatch::Absent)
            .await
            .unwrap();
    }
    let body = vec![0x5a; 256];
    let total = DEVICES * PER_DEVICE;

    let cpu0 = cpu_time();
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..CONCURRENCY {
        let (hub, ids, body) = (hub.clone(), ids.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = w;
            while n < total {
                let msg = C2dMessage {
                    properties: MessageProperties {
                        message_id: Some(n.to_string()),
                        ..Default::default()
                    },
                    body: body.clone(),
                };
                hub.send(&ids[n % DEVICES], msg).await.unwrap();
                n += CONCURRENCY;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let send_time = t0.elapsed();
    let send_cpu = cpu_time() - cpu0;

    // Restart with everything queued: how long until the hub serves again.
    hub.shutdown().await;
    task.await.unwrap();
    let restart = Instant::now();
    let (hub, task, opened) = open(dir.path());
    let recovery = restart.elapsed();
    assert_eq!(opened.queued_messages, total);

    let cpu1 = cpu_time();
    let t1 = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..CONCURRENCY {
        let (hub, ids) = (hub.clone(), ids.clone());
        tasks.push(tokio::spawn(async move {
            let mut d = w;
            while d < DEVICES {
                while let Some(got) = hub.receive(&ids[d]).await.unwrap() {
                    hub.complete(&ids[d], got.lock_token).await.unwrap();
                }
                d += CONCURRENCY;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let drain_time = t1.elapsed();
    let drain_cpu = cpu_time() - cpu1;
    assert_eq!(hub.stats().await.unwrap().queued_messages, 0);

    println!("engine bench: {DEVICES} devices x {PER_DEVICE} messages, 256-byte bodies, {CONCURRENCY} concurrent callers, fdatasync per group commit");
    println!(
        "  send (durable):             {:>9.0} msg/s  {:>6.1} us CPU/msg",
        total as f64 / send_time.as_secs_f64(),
        send_cpu.as_secs_f64() * 1e6 / total as f64
    );
    println!(
        "  restart with {} queued:  {:>9.2} s to serve again ({} events replayed)",
        total,
        recovery.as_secs_f64(),
        opened.events
    );
    println!(
        "  receive+complete (durable): {:>9.0} msg/s  {:>6.1} us CPU/msg",
        total as f64 / drain_time.as_secs_f64(),
        drain_cpu.as_secs_f64() * 1e6 / total as f64
    );
    hub.shutdown().await;
    task.await.unwrap();
}
