//! Checkpoints replace the history before them, keep the records after them, and a crash
//! at any step of writing one leaves either the old history or the new one, whole.

use std::fs;
use std::path::Path;

use courier_store::{Store, SyncMode};

use crate::support::{
    append, copy_dir, files, numbered, open, options, rec, reopen_and_replay, replay, segments,
    trim_preallocated, wait,
};

const BIG: u64 = 64 * 1024 * 1024;

fn checkpoint_files(dir: &Path) -> Vec<String> {
    files(dir)
        .into_iter()
        .filter(|name| name.starts_with("checkpoint-"))
        .collect()
}

#[test]
fn checkpoint_then_appends_replays_the_snapshot_then_the_later_records() {
    let dir = tempfile::tempdir().unwrap();
    let opts = options(BIG, SyncMode::Data);
    let store = open(dir.path(), opts.clone());
    append(&store, vec![rec("d/a", b"m1"), rec("d/a", b"m2")]);
    append(&store, vec![rec("d/a", b"m1 completed")]);
    let snapshot = vec![rec("registry", b"device a"), rec("d/a", b"m2")];
    let taken = wait(store.checkpoint(snapshot.clone())).unwrap();
    let later = append(&store, vec![rec("d/a", b"m3")]);
    assert!(later.position > taken.position);
    assert_eq!(checkpoint_files(dir.path()).len(), 1);
    assert_eq!(
        segments(dir.path()).len(),
        1,
        "superseded segments are deleted"
    );
    store.close().unwrap();

    let store = open(dir.path(), opts);
    let (replayed, stats) = replay(&store).unwrap();
    let mut expected = snapshot;
    expected.push(rec("d/a", b"m3"));
    assert_eq!(replayed, expected);
    assert_eq!(stats.checkpoint_records, 2);
    assert_eq!(stats.records, 3);
}

#[test]
fn appends_queued_around_a_checkpoint_keep_call_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), options(BIG, SyncMode::None));
    let before = store.append(vec![numbered(0, 0)]);
    let checkpoint = store.checkpoint(vec![numbered(1, 0)]);
    let after = store.append(vec![numbered(2, 0)]);
    let positions = [
        wait(before).unwrap(),
        wait(checkpoint).unwrap(),
        wait(after).unwrap(),
    ];
    assert!(positions.windows(2).all(|w| w[0].position < w[1].position));
    drop(store);
    assert_eq!(
        reopen_and_replay(dir.path(), options(BIG, SyncMode::None)),
        vec![numbered(1, 0), numbered(2, 0)]
    );
}

#[test]
fn repeated_and_empty_checkpoints_keep_only_the_newest() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path(), options(BIG, SyncMode::None));
    for round in 0..5 {
        append(&store, vec![numbered(round, 0)]);
        wait(store.checkpoint(vec![numbered(round, 1)])).unwrap();
    }
    wait(store.checkpoint(vec![])).unwrap();
    append(&store, vec![numbered(9, 9)]);
    assert_eq!(checkpoint_files(dir.path()).len(), 1);
    assert_eq!(store.stats().checkpoints, 6);
    drop(store);
    assert_eq!(
        reopen_and_replay(dir.path(), options(BIG, SyncMode::None)),
        vec![numbered(9, 9)]
    );
}

#[test]
fn a_large_snapshot_spans_many_frames() {
    let dir = tempfile::tempdir().unwrap();
    let mut opts = options(BIG, SyncMode::Data);
    opts.max_batch_bytes = 1024;
    let store = open(dir.path(), opts.clone());
    let snapshot: Vec<_> = (0..2000).map(|n| numbered(n, n)).collect();
    wait(store.checkpoint(snapshot.clone())).unwrap();
    drop(store);

    let store = open(dir.path(), opts.clone());
    let (replayed, stats) = replay(&store).unwrap();
    assert_eq!(replayed, snapshot);
    assert_eq!(stats.checkpoint_records, 2000);
    // One record bigger than a chunk still fits, in a frame of its own.
    append(&store, vec![rec("d/big", &[5; 4000])]);
    wait(store.checkpoint(vec![rec("d/big", &[5; 4000]), numbered(1, 1)])).unwrap();
    drop(store);
    assert_eq!(
        reopen_and_replay(dir.path(), opts),
        vec![rec("d/big", &[5; 4000]), numbered(1, 1)]
    );
}

/// The directory just before a checkpoint and the files the checkpoint created, so a test
/// can rebuild what a crash at each step of the checkpoint leaves on disk.
struct CheckpointSteps {
    before: tempfile::TempDir,
    after: tempfile::TempDir,
    new_segment: String,
    checkpoint: String,
}

fn checkpoint_steps() -> CheckpointSteps {
    let after = tempfile::tempdir().unwrap();
    let store = open(after.path(), options(200, SyncMode::None));
    for batch in 0..10 {
        append(&store, vec![numbered(batch, 0)]);
    }
    let before = tempfile::tempdir().unwrap();
    copy_dir(after.path(), before.path());
    // Starting the checkpoint's segment first cuts the last one to its frames.
    trim_preallocated(segments(before.path()).last().unwrap());
    let old_files = files(before.path());
    assert!(old_files.len() > 2, "the history spans several segments");
    wait(store.checkpoint(vec![rec("registry", b"snapshot")])).unwrap();
    drop(store);
    let mut new_files: Vec<String> = files(after.path())
        .into_iter()
        .filter(|name| !old_files.contains(name))
        .collect();
    new_files.sort();
    // checkpoint-… sorts before wal-…
    assert_eq!(new_files.len(), 2, "{new_files:?}");
    CheckpointSteps {
        before,
        checkpoint: new_files[0].clone(),
        new_segment: new_files[1].clone(),
        after,
    }
}

fn history() -> Vec<courier_store::Record> {
    (0..10).map(|batch| numbered(batch, 0)).collect()
}

#[test]
fn crash_while_writing_the_checkpoint_keeps_the_old_history() {
    let steps = checkpoint_steps();
    let dir = steps.before.path();
    // The new segment is durable, the checkpoint only exists half-written as .tmp.
    fs::copy(
        steps.after.path().join(&steps.new_segment),
        dir.join(&steps.new_segment),
    )
    .unwrap();
    let whole = fs::read(steps.after.path().join(&steps.checkpoint)).unwrap();
    fs::write(
        dir.join(format!("{}.tmp", steps.checkpoint)),
        &whole[..whole.len() / 2],
    )
    .unwrap();

    let opts = options(200, SyncMode::None);
    let store = open(dir, opts.clone());
    assert!(
        files(dir).iter().all(|name| !name.ends_with(".tmp")),
        "leftover .tmp is removed"
    );
    assert_eq!(replay(&store).unwrap().0, history());
    append(&store, vec![numbered(10, 0)]);
    drop(store);
    let mut expected = history();
    expected.push(numbered(10, 0));
    assert_eq!(reopen_and_replay(dir, opts), expected);
}

#[test]
fn crash_after_the_checkpoint_rename_but_before_deletion_uses_the_checkpoint() {
    let steps = checkpoint_steps();
    let dir = steps.before.path();
    for name in [&steps.new_segment, &steps.checkpoint] {
        fs::copy(steps.after.path().join(name), dir.join(name)).unwrap();
    }
    let opts = options(200, SyncMode::None);
    let store = open(dir, opts.clone());
    assert_eq!(
        segments(dir).len(),
        1,
        "superseded segments are deleted on open"
    );
    assert_eq!(
        replay(&store).unwrap().0,
        vec![rec("registry", b"snapshot")]
    );
    append(&store, vec![numbered(10, 0)]);
    drop(store);
    assert_eq!(
        reopen_and_replay(dir, opts),
        vec![rec("registry", b"snapshot"), numbered(10, 0)]
    );
}

#[test]
fn a_damaged_checkpoint_is_reported_as_corrupt() {
    let steps = checkpoint_steps();
    let path = steps.after.path().join(&steps.checkpoint);
    let mut bytes = fs::read(&path).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    fs::write(&path, &bytes).unwrap();
    let store = open(steps.after.path(), options(200, SyncMode::None));
    assert!(matches!(
        replay(&store),
        Err(courier_store::StoreError::Corrupt { .. })
    ));
}
