//! The log rotates into new segment files at `segment_bytes` and replays across them.

use courier_store::{Store, SyncMode};

use crate::support::{append, numbered, open, options, reopen_and_replay, segments, wait};

#[test]
fn rotation_across_many_segments_replays_everything_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), options(300, SyncMode::Data));
    let mut expected = Vec::new();
    for batch in 0..200 {
        let records: Vec<_> = (0..(batch % 3)).map(|slot| numbered(batch, slot)).collect();
        expected.extend(records.iter().cloned());
        append(&store, records);
    }
    let stats = store.stats();
    let files = segments(dir.path());
    assert!(stats.rotations >= 20, "{stats:?}");
    assert_eq!(files.len() as u64, stats.rotations + 1);
    let log_bytes = store.log_bytes_since_checkpoint();
    store.close().unwrap();

    let store = open(dir.path(), options(300, SyncMode::Data));
    assert_eq!(store.log_bytes_since_checkpoint(), log_bytes);
    drop(store);
    assert_eq!(
        reopen_and_replay(dir.path(), options(300, SyncMode::Data)),
        expected
    );
}

#[test]
fn checkpoint_deletes_every_segment_it_supersedes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), options(200, SyncMode::None));
    for batch in 0..100 {
        append(&store, vec![numbered(batch, 0)]);
    }
    assert!(segments(dir.path()).len() > 10);
    wait(store.checkpoint(vec![numbered(1000, 0)])).unwrap();
    assert_eq!(segments(dir.path()).len(), 1);
    append(&store, vec![numbered(1001, 0)]);
    drop(store);
    assert_eq!(
        reopen_and_replay(dir.path(), options(200, SyncMode::None)),
        vec![numbered(1000, 0), numbered(1001, 0)]
    );
}
