//! Random sequences of appends, checkpoints and reopens against a reference model: a
//! `Vec<Record>` that an append extends and a checkpoint replaces. Operations are issued
//! in bursts without waiting, so group commit and call order are exercised too.

use courier_store::{Commit, Record, Store, SyncMode, WalOptions, WalStore};
use proptest::prelude::*;

use crate::support::{open, replay, wait};

#[derive(Clone, Debug)]
enum Op {
    Append(Vec<Record>),
    Checkpoint(Vec<Record>),
    /// Wait for everything issued so far.
    Settle,
    /// Close and reopen, then compare a full replay with the model.
    Reopen,
}

fn record() -> impl Strategy<Value = Record> {
    (
        "(registry|feedback|d/[a-c]{1,3})",
        proptest::collection::vec(any::<u8>(), 0..48),
    )
        .prop_map(|(stream, payload)| Record { stream, payload })
}

fn records(max: usize) -> impl Strategy<Value = Vec<Record>> {
    proptest::collection::vec(record(), 0..max)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => records(5).prop_map(Op::Append),
        1 => records(8).prop_map(Op::Checkpoint),
        2 => Just(Op::Settle),
        1 => Just(Op::Reopen),
    ]
}

fn wal_options() -> impl Strategy<Value = WalOptions> {
    (
        prop_oneof![Just(60u64), Just(300), Just(1 << 20)],
        prop_oneof![Just(64usize), Just(1 << 20)],
        prop_oneof![Just(0u64), Just(100), Just(1 << 16)],
    )
        .prop_map(
            |(segment_bytes, max_batch_bytes, preallocate_bytes)| WalOptions {
                segment_bytes,
                max_batch_bytes,
                preallocate_bytes,
                sync: SyncMode::None,
            },
        )
}

/// Waits for every pending commit and checks positions rise in call order.
fn settle(pending: &mut Vec<Commit>, last_position: &mut u64) -> Result<(), TestCaseError> {
    for commit in pending.drain(..) {
        let position = wait(commit).unwrap().position;
        prop_assert!(
            position > *last_position,
            "{position} after {last_position}"
        );
        *last_position = position;
    }
    Ok(())
}

fn check_replay(store: &WalStore, model: &[Record]) -> Result<(), TestCaseError> {
    let (replayed, stats) = replay(store).unwrap();
    prop_assert_eq!(stats.truncated_tail_bytes, 0);
    prop_assert_eq!(replayed, model.to_vec());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn replay_always_equals_the_model(
        options in wal_options(),
        ops in proptest::collection::vec(op(), 1..40),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut store = open(dir.path(), options.clone());
        check_replay(&store, &[])?;
        let mut model: Vec<Record> = Vec::new();
        let mut pending = Vec::new();
        let mut last_position = 0;
        for op in ops {
            match op {
                Op::Append(batch) => {
                    model.extend(batch.iter().cloned());
                    pending.push(store.append(batch));
                }
                Op::Checkpoint(snapshot) => {
                    model.clone_from(&snapshot);
                    pending.push(store.checkpoint(snapshot));
                }
                Op::Settle => settle(&mut pending, &mut last_position)?,
                Op::Reopen => {
                    settle(&mut pending, &mut last_position)?;
                    store.close().unwrap();
                    store = open(dir.path(), options.clone());
                    check_replay(&store, &model)?;
                }
            }
        }
        settle(&mut pending, &mut last_position)?;
        store.close().unwrap();
        check_replay(&open(dir.path(), options), &model)?;
    }
}
