//! Appends come back from replay exactly, in call order, with positions that keep
//! increasing across restarts.

use courier_store::{ReplayError, Store, StoreError, SyncMode, WalOptions, WalStore};

use crate::support::{append, numbered, open, options, rec, reopen_and_replay, replay, wait};

const BIG: u64 = 64 * 1024 * 1024;

#[test]
fn appended_batches_replay_in_order_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), options(BIG, SyncMode::Data));
    let (before, _) = replay(&store).unwrap();
    assert!(before.is_empty());
    append(&store, vec![rec("registry", b"device a created")]);
    append(
        &store,
        vec![
            rec("d/a", b""),
            rec("", b"empty stream"),
            rec("d/a", &[0, 255, 7]),
        ],
    );
    append(&store, vec![]);
    append(&store, vec![rec("feedback", &vec![42; 100_000])]);
    store.close().unwrap();

    assert_eq!(
        reopen_and_replay(dir.path(), options(BIG, SyncMode::Data)),
        vec![
            rec("registry", b"device a created"),
            rec("d/a", b""),
            rec("", b"empty stream"),
            rec("d/a", &[0, 255, 7]),
            rec("feedback", &vec![42; 100_000]),
        ]
    );
}

#[test]
fn positions_increase_by_call_and_continue_after_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), options(BIG, SyncMode::None));
    // Issued back to back without waiting, so they can share a group write.
    let commits: Vec<_> = (0..10)
        .map(|n| store.append(vec![numbered(n, 0)]))
        .collect();
    let positions: Vec<u64> = commits
        .into_iter()
        .map(|c| wait(c).unwrap().position)
        .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    drop(store);

    let store = open(dir.path(), options(BIG, SyncMode::None));
    replay(&store).unwrap();
    let after = append(&store, vec![numbered(10, 0)]);
    assert!(after.position > positions[9]);
}

#[test]
fn replay_runs_once_per_open() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), options(BIG, SyncMode::None));
    replay(&store).unwrap();
    assert!(matches!(replay(&store), Err(StoreError::AlreadyReplayed)));
}

#[test]
fn replay_stops_at_the_visitors_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), options(BIG, SyncMode::None));
    append(&store, (0..5).map(|n| numbered(0, n)).collect());
    drop(store);

    let store = open(dir.path(), options(BIG, SyncMode::None));
    let mut seen = 0;
    let result = store.replay(&mut |_| {
        seen += 1;
        if seen == 3 {
            return Err(ReplayError("engine rejected record 3".to_owned()));
        }
        Ok(())
    });
    assert_eq!(seen, 3);
    assert!(
        matches!(result, Err(StoreError::Replay(ReplayError(message))) if message.contains("record 3"))
    );
}

#[test]
fn log_bytes_count_appends_survive_reopen_and_reset_on_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), options(BIG, SyncMode::None));
    assert_eq!(store.log_bytes_since_checkpoint(), 0);
    append(&store, vec![rec("d/a", &[1; 100])]);
    let one = store.log_bytes_since_checkpoint();
    // A frame header, two length fields, the stream and the payload.
    assert_eq!(one, 16 + 8 + 3 + 100);
    append(&store, vec![rec("d/a", &[1; 100])]);
    assert_eq!(store.log_bytes_since_checkpoint(), 2 * one);
    assert_eq!(store.stats().bytes_written, 2 * one);
    drop(store);

    let store = open(dir.path(), options(BIG, SyncMode::None));
    assert_eq!(store.log_bytes_since_checkpoint(), 2 * one);
    replay(&store).unwrap();
    wait(store.checkpoint(vec![rec("d/a", &[1; 100])])).unwrap();
    assert_eq!(store.log_bytes_since_checkpoint(), 0);
}

#[test]
fn dropping_the_store_drains_queued_appends() {
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(open(dir.path(), options(BIG, SyncMode::None)));
    let commit = store.append(vec![rec("d/a", b"queued before drop")]);
    // The last handle goes: drop drains the queue, so the queued append still lands.
    drop(store);
    assert!(wait(commit).is_ok());
    assert_eq!(
        reopen_and_replay(dir.path(), options(BIG, SyncMode::None)),
        vec![rec("d/a", b"queued before drop")]
    );
}

#[test]
fn invalid_options_are_rejected() {
    let dir = tempfile::tempdir().unwrap();
    let mut bad = options(BIG, SyncMode::None);
    bad.max_batch_bytes = 0;
    assert!(matches!(
        courier_store::WalStore::open(dir.path(), bad),
        Err(StoreError::InvalidOptions(_))
    ));
}

#[test]
fn a_second_open_of_the_same_directory_is_refused_until_the_first_closes() {
    let dir = tempfile::tempdir().unwrap();
    let first = WalStore::open(dir.path(), WalOptions::default()).unwrap();
    match WalStore::open(dir.path(), WalOptions::default()) {
        Err(StoreError::Locked { path }) => assert_eq!(path, dir.path().join("LOCK")),
        other => panic!("expected Locked, got {:?}", other.map(|_| ())),
    }
    first.close().unwrap();
    let again = WalStore::open(dir.path(), WalOptions::default()).unwrap();
    again.close().unwrap();
}
