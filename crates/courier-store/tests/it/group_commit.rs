//! Many concurrent appenders share writes and syncs, yet each batch is acknowledged only
//! once durable, in an order that replay reproduces.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use courier_store::{Record, Store, SyncMode};

use crate::support::{numbered, open, options, replay};

const TASKS: u32 = 64;
const BATCHES_PER_TASK: u32 = 20;

#[test]
fn concurrent_appends_are_all_durable_in_position_order_with_fewer_syncs_than_batches() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path(), options(64 * 1024 * 1024, SyncMode::Data)));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_time()
        .build()
        .unwrap();

    // Each task appends its batches one after another; the tasks run concurrently.
    let positions: HashMap<(u32, u32), u64> = runtime.block_on(async {
        let mut tasks = Vec::new();
        for task in 0..TASKS {
            let store = Arc::clone(&store);
            tasks.push(tokio::spawn(async move {
                let mut positions = Vec::new();
                for batch in 0..BATCHES_PER_TASK {
                    let records = vec![numbered(task, batch), numbered(task, batch + 1000)];
                    let info = store.append(records).await.unwrap();
                    positions.push(((task, batch), info.position));
                }
                positions
            }));
        }
        let mut all = HashMap::new();
        for task in tasks {
            let done = tokio::time::timeout(Duration::from_secs(60), task).await;
            all.extend(done.unwrap().unwrap());
        }
        all
    });

    let total = u64::from(TASKS * BATCHES_PER_TASK);
    let stats = store.stats();
    assert_eq!(stats.batches, total);
    assert_eq!(stats.records, 2 * total);
    assert!(
        stats.syncs < stats.batches,
        "no group commit happened: {stats:?}"
    );
    assert_eq!(stats.syncs, stats.writes);
    for task in 0..TASKS {
        let mine: Vec<u64> = (0..BATCHES_PER_TASK)
            .map(|b| positions[&(task, b)])
            .collect();
        assert!(
            mine.windows(2).all(|w| w[0] < w[1]),
            "task {task}: {mine:?}"
        );
    }
    let mut distinct: Vec<u64> = positions.values().copied().collect();
    distinct.sort_unstable();
    distinct.dedup();
    assert_eq!(distinct.len() as u64, total);

    drop(runtime);
    Arc::into_inner(store).unwrap().close().unwrap();

    // Replay order is position order, and each batch's two records stay together.
    let store = open(dir.path(), options(64 * 1024 * 1024, SyncMode::Data));
    let (replayed, stats) = replay(&store).unwrap();
    assert_eq!(stats.records, 2 * total);
    let mut by_position: Vec<(u64, u32, u32)> = positions
        .iter()
        .map(|(&(task, batch), &p)| (p, task, batch))
        .collect();
    by_position.sort_unstable();
    let expected: Vec<Record> = by_position
        .into_iter()
        .flat_map(|(_, task, batch)| [numbered(task, batch), numbered(task, batch + 1000)])
        .collect();
    assert_eq!(replayed, expected);
}

#[test]
fn a_group_write_respects_max_batch_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(64 * 1024 * 1024, SyncMode::None);
    opts.max_batch_bytes = 1024;
    let store = open(dir.path(), opts);
    // About 130 bytes per frame, all queued at once: at most 8 fit in one write.
    let commits: Vec<_> = (0..200)
        .map(|n| {
            store.append(vec![Record {
                stream: "d/x".into(),
                payload: vec![n as u8; 100],
            }])
        })
        .collect();
    for commit in commits {
        crate::support::wait(commit).unwrap();
    }
    let stats = store.stats();
    assert_eq!(stats.batches, 200);
    assert!(stats.writes >= 200 / 8, "{stats:?}");
    // And a single batch larger than the cap is still written, alone.
    let big = vec![Record {
        stream: "d/x".into(),
        payload: vec![1; 5000],
    }];
    crate::support::wait(store.append(big)).unwrap();
}
