//! Injected I/O failures: the store must never acknowledge a batch that a failed write or
//! sync may have lost, must refuse everything after the failure (fail-stop), and must
//! recover every acknowledged batch when reopened.

use std::io;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use proptest::prelude::*;

use super::{FaultPoint, SyncMode, WalOptions, WalStore};
use crate::{Commit, CommitInfo, Record, Store, StoreError};

/// Which call of each fault point fails (1-based; 0 means none) and how many happened.
#[derive(Default)]
pub(crate) struct Faults {
    armed: [AtomicU64; 3],
    seen: [AtomicU64; 3],
}

impl Faults {
    /// Makes the `nth` call (counting from now) at `point` fail.
    pub(crate) fn fail_nth(&self, point: FaultPoint, nth: u64) {
        let i = point as usize;
        let seen = self.seen[i].load(Ordering::SeqCst);
        self.armed[i].store(seen + nth, Ordering::SeqCst);
    }

    pub(crate) fn hit(&self, point: FaultPoint) -> io::Result<()> {
        let i = point as usize;
        let seen = self.seen[i].fetch_add(1, Ordering::SeqCst) + 1;
        if self.armed[i].load(Ordering::SeqCst) == seen {
            return Err(io::Error::other(format!("injected {point:?} failure")));
        }
        Ok(())
    }
}

fn wait(commit: Commit) -> Result<CommitInfo, StoreError> {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(commit)
}

fn record(n: u32) -> Record {
    Record {
        stream: format!("d/{}", n % 3),
        payload: n.to_le_bytes().repeat(5),
    }
}

fn open(dir: &Path, sync: SyncMode) -> WalStore {
    let options = WalOptions {
        segment_bytes: 512,
        sync,
        ..WalOptions::default()
    };
    WalStore::open(dir, options).unwrap()
}

fn replay_all(store: &WalStore) -> Vec<Record> {
    let mut out = Vec::new();
    store
        .replay(&mut |r| {
            out.push(r);
            Ok(())
        })
        .unwrap();
    out
}

#[test]
fn failed_sync_fails_that_batch_and_every_later_one() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), SyncMode::Data);
    wait(store.append(vec![record(1)])).unwrap();
    store.shared.faults.fail_nth(FaultPoint::Sync, 1);
    let failed = wait(store.append(vec![record(2)]));
    assert!(
        matches!(
            failed,
            Err(StoreError::Failed {
                op: "fdatasync",
                ..
            })
        ),
        "{failed:?}"
    );
    assert!(matches!(
        wait(store.append(vec![record(3)])),
        Err(StoreError::Failed { .. })
    ));
    assert!(matches!(
        wait(store.checkpoint(vec![])),
        Err(StoreError::Failed { .. })
    ));
    assert!(matches!(store.close(), Err(StoreError::Failed { .. })));

    // The write reached the file before the sync failed, so the unacknowledged batch may
    // come back; the acknowledged one must.
    let store = open(dir.path(), SyncMode::Data);
    let replayed = replay_all(&store);
    assert_eq!(replayed[0], record(1));
    assert!([record(1), record(2)].starts_with(&replayed));
}

#[test]
fn batches_queued_behind_a_failed_sync_are_all_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), SyncMode::Data);
    store.shared.faults.fail_nth(FaultPoint::Sync, 1);
    let commits: Vec<Commit> = (0..50).map(|n| store.append(vec![record(n)])).collect();
    for commit in commits {
        assert!(matches!(wait(commit), Err(StoreError::Failed { .. })));
    }
    assert_eq!(store.stats().batches, 0);
}

#[test]
fn torn_write_is_cut_off_on_reopen_and_appends_continue() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), SyncMode::None);
    let first = wait(store.append(vec![record(1), record(2)])).unwrap();
    store.shared.faults.fail_nth(FaultPoint::Write, 1);
    assert!(wait(store.append(vec![record(3), record(4)])).is_err());
    drop(store);

    let store = open(dir.path(), SyncMode::None);
    let mut replayed = Vec::new();
    let stats = store
        .replay(&mut |r| {
            replayed.push(r);
            Ok(())
        })
        .unwrap();
    assert_eq!(replayed, vec![record(1), record(2)]);
    assert!(stats.truncated_tail_bytes > 0);
    let next = wait(store.append(vec![record(5)])).unwrap();
    assert_eq!(next.position, first.position + 1);
    drop(store);
    assert_eq!(
        replay_all(&open(dir.path(), SyncMode::None)),
        vec![record(1), record(2), record(5)]
    );
}

#[test]
fn failed_checkpoint_keeps_the_old_history_and_the_log_stays_usable() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), SyncMode::None);
    wait(store.append(vec![record(1)])).unwrap();
    let before = wait(store.append(vec![record(2)])).unwrap();
    store.shared.faults.fail_nth(FaultPoint::Checkpoint, 1);
    assert!(wait(store.checkpoint(vec![record(9)])).is_err());
    drop(store);

    let store = open(dir.path(), SyncMode::None);
    assert_eq!(replay_all(&store), vec![record(1), record(2)]);
    let after = wait(store.append(vec![record(3)])).unwrap();
    assert!(after.position > before.position);
    drop(store);
    assert_eq!(
        replay_all(&open(dir.path(), SyncMode::None)),
        vec![record(1), record(2), record(3)]
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Whatever step fails, every acknowledged batch is replayed, in order, and nothing
    /// that was never appended appears.
    #[test]
    fn acknowledged_batches_survive_any_single_failure(
        sizes in proptest::collection::vec(1usize..4, 1..25),
        point in prop_oneof![Just(FaultPoint::Write), Just(FaultPoint::Sync), Just(FaultPoint::Checkpoint)],
        nth in 1u64..12,
        checkpoint_every in 3usize..8,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path(), SyncMode::Data);
        store.shared.faults.fail_nth(point, nth);
        // The model: what a replay must return if every call so far had succeeded.
        let mut attempted: Vec<Record> = Vec::new();
        let mut acknowledged = 0;
        let mut n = 0;
        for (i, size) in sizes.iter().enumerate() {
            if i % checkpoint_every == checkpoint_every - 1 {
                let snapshot = attempted.clone();
                if wait(store.checkpoint(snapshot)).is_ok() {
                    acknowledged = attempted.len();
                }
                continue;
            }
            let batch: Vec<Record> = (0..*size).map(|_| { n += 1; record(n) }).collect();
            attempted.extend(batch.iter().cloned());
            if wait(store.append(batch)).is_ok() {
                acknowledged = attempted.len();
            }
        }
        drop(store);
        let replayed = replay_all(&open(dir.path(), SyncMode::Data));
        prop_assert!(replayed.len() >= acknowledged);
        prop_assert!(attempted.starts_with(&replayed));
    }
}
