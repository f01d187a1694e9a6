//! The log rotates into new segment files at `segment_bytes` and replays across them.

use std::fs;

use courier_store::{Store, SyncMode, WalOptions};

use crate::support::{
    append, numbered, open, options, reopen_and_replay, replay, segments, trim_preallocated, wait,
};

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

#[test]
fn preallocated_zeros_stay_in_the_last_segment_only_and_are_not_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    let opts = WalOptions {
        preallocate_bytes: 256,
        ..options(1000, SyncMode::Data)
    };
    let store = open(dir.path(), opts.clone());
    let mut expected = Vec::new();
    for batch in 0..60 {
        let records = vec![numbered(batch, 0)];
        expected.extend(records.iter().cloned());
        append(&store, records);
    }
    let stats = store.stats();
    // Closing cuts nothing: the last segment is left as a crash would leave it.
    store.close().unwrap();
    assert!(stats.rotations >= 2, "{stats:?}");
    assert!(stats.preallocations > stats.rotations, "{stats:?}");
    let files = segments(dir.path());
    let (last, earlier) = files.split_last().unwrap();
    for segment in earlier {
        let len = fs::metadata(segment).unwrap().len();
        assert_eq!(
            trim_preallocated(segment),
            len,
            "{segment:?} ends at its last frame"
        );
    }
    let last_len = fs::metadata(last).unwrap().len();
    let frames_end = {
        let copy = tempfile::tempdir().unwrap();
        let path = copy.path().join("segment");
        fs::copy(last, &path).unwrap();
        trim_preallocated(&path)
    };
    assert!(last_len > frames_end, "{last_len} > {frames_end}");

    let store = open(dir.path(), opts.clone());
    let (replayed, stats) = replay(&store).unwrap();
    assert_eq!(replayed, expected);
    assert_eq!(stats.truncated_tail_bytes, 0);
    append(&store, vec![numbered(60, 0)]);
    drop(store);
    expected.push(numbered(60, 0));
    assert_eq!(reopen_and_replay(dir.path(), opts), expected);
}
