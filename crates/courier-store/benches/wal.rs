//! Durable append throughput of `WalStore` with 1, 16 and 128 concurrent writers of
//! 256-byte records (one record per append, as the hub engine's busiest path does), then
//! recovery time of a log of 1M such records.
//!
//! Run: `cargo bench -p courier-store --bench wal`. Environment: `COURIER_BENCH_SECS`
//! (seconds per writer count, default 3), `COURIER_BENCH_DIR` (where the log goes, default
//! the system temp dir: it must be on the disk you mean to measure, not a tmpfs),
//! `COURIER_BENCH_RECOVERY_RECORDS` (default 1000000, 0 skips the recovery run),
//! `COURIER_BENCH_PREALLOCATE_BYTES` (the store's `preallocate_bytes`, default its default).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use courier_store::{Record, Store, SyncMode, WalOptions, WalStore};

const RECORD_BYTES: usize = 256;
const DEVICES: u64 = 1000;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn bench_dir() -> tempfile::TempDir {
    match std::env::var_os("COURIER_BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(PathBuf::from(dir)),
        None => tempfile::tempdir(),
    }
    .expect("create benchmark directory")
}

/// CPU seconds (user + system) this process has used, from /proc; 0 where unavailable.
fn cpu_seconds() -> f64 {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0.0;
    };
    // Fields after the parenthesised command name; utime and stime are 14 and 15.
    let Some(rest) = stat.rsplit(')').next() else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // Fields here start at the state (field 3), so utime is index 11 and stime 12.
    (ticks(11) + ticks(12)) / 100.0
}

fn record(n: u64) -> Record {
    Record {
        stream: format!("d/device-{}", n % DEVICES),
        payload: vec![(n % 251) as u8; RECORD_BYTES],
    }
}

fn throughput(writers: u64, seconds: u64) {
    let dir = bench_dir();
    let options = WalOptions {
        preallocate_bytes: env_u64(
            "COURIER_BENCH_PREALLOCATE_BYTES",
            WalOptions::default().preallocate_bytes,
        ),
        ..WalOptions::default()
    };
    let store = Arc::new(WalStore::open(dir.path(), options).expect("open store"));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .expect("runtime");
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let cpu_before = cpu_seconds();
    let started = Instant::now();
    runtime.block_on(async {
        let mut tasks = Vec::new();
        for writer in 0..writers {
            let (store, stop, done) = (Arc::clone(&store), Arc::clone(&stop), Arc::clone(&done));
            tasks.push(tokio::spawn(async move {
                let mut n = writer;
                while !stop.load(Ordering::Relaxed) {
                    store.append(vec![record(n)]).await.expect("durable append");
                    done.fetch_add(1, Ordering::Relaxed);
                    n += writers;
                }
            }));
        }
        tokio::task::spawn_blocking(move || std::thread::sleep(Duration::from_secs(seconds)))
            .await
            .expect("timer");
        stop.store(true, Ordering::Relaxed);
        for task in tasks {
            task.await.expect("writer task");
        }
    });
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu_before;
    let ops = done.load(Ordering::Relaxed) as f64;
    let stats = store.stats();
    println!(
        "writers {writers:>4}: {:>9.0} appends/s  {:>7.0} syncs/s  {:>6.1} appends/sync  {:>5.2} µs CPU/append (process, incl. record building)",
        ops / elapsed,
        stats.syncs as f64 / elapsed,
        stats.batches as f64 / stats.syncs.max(1) as f64,
        cpu * 1e6 / ops.max(1.0),
    );
}

fn recovery(records: u64) {
    let dir = bench_dir();
    // Filling the log is not what is measured; skip the syncs to keep it quick.
    let fill = WalOptions {
        sync: SyncMode::None,
        ..WalOptions::default()
    };
    let store = WalStore::open(dir.path(), fill).expect("open store");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut n = 0;
    while n < records {
        let batch: Vec<Record> = (n..(n + 128).min(records)).map(record).collect();
        n += batch.len() as u64;
        runtime.block_on(store.append(batch)).expect("append");
    }
    store.close().expect("close");

    let started = Instant::now();
    let store = WalStore::open(dir.path(), WalOptions::default()).expect("reopen store");
    let open_time = started.elapsed();
    let mut payload_bytes = 0u64;
    let stats = store
        .replay(&mut |record| {
            payload_bytes += record.payload.len() as u64;
            Ok(())
        })
        .expect("replay");
    println!(
        "recovery of {} records ({:.0} MiB of log): open {:.3} s, replay {:.3} s, total {:.3} s (page cache warm)",
        stats.records,
        stats.bytes as f64 / (1024.0 * 1024.0),
        open_time.as_secs_f64(),
        stats.elapsed.as_secs_f64(),
        started.elapsed().as_secs_f64(),
    );
    assert_eq!(payload_bytes, records * RECORD_BYTES as u64);
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not and only wants a
    // quick check that the benchmark still runs.
    let quick = !std::env::args().any(|arg| arg == "--bench");
    let seconds = if quick {
        0
    } else {
        env_u64("COURIER_BENCH_SECS", 3)
    };
    for writers in [1, 16, 128] {
        throughput(writers, seconds);
    }
    let records = if quick {
        1000
    } else {
        env_u64("COURIER_BENCH_RECOVERY_RECORDS", 1_000_000)
    };
    if records > 0 {
        recovery(records);
    }
}
