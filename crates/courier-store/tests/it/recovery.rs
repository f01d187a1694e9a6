//! Recovery after a crash: a torn tail is cut off the last segment and appends continue;
//! damage anywhere else is reported, never skipped, because those bytes were acknowledged.

use std::fs::{self, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

use courier_store::{Record, StoreError, SyncMode, WalOptions, WalStore};

use crate::support::{
    append, copy_dir, numbered, open, options, rec, reopen_and_replay, replay, segments,
};

const BIG: u64 = 64 * 1024 * 1024;

fn file_len(path: &Path) -> u64 {
    fs::metadata(path).unwrap().len()
}

fn cut(path: &Path, len: u64) {
    OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(len)
        .unwrap();
}

/// Offsets where each frame of a segment ends, read straight from the length fields,
/// up to the end of the file or the first zero length (preallocated space).
fn frame_ends(bytes: &[u8]) -> Vec<u64> {
    let mut ends = Vec::new();
    let mut offset = 40;
    while offset < bytes.len() {
        let len = u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        offset += 8 + len;
        ends.push(offset as u64);
    }
    ends
}

#[test]
fn torn_tail_at_every_byte_of_the_last_frames_replays_exactly_the_complete_prefix() {
    let source = tempfile::tempdir().unwrap();
    // No preallocation, so the file ends where its last frame does.
    let opts = WalOptions {
        preallocate_bytes: 0,
        ..options(BIG, SyncMode::None)
    };
    let store = open(source.path(), opts.clone());
    let durable = vec![rec("registry", b"a"), rec("d/a", b"b")];
    append(&store, durable.clone());
    let segment = segments(source.path())[0].clone();
    let durable_end = file_len(&segment);
    // The batches a crash may tear, and where each one ends in the file.
    let tail_batches = vec![
        vec![numbered(1, 0), numbered(1, 1), numbered(1, 2)],
        vec![],
        vec![rec("d/b", &[9; 40])],
    ];
    let mut ends = Vec::new();
    for batch in &tail_batches {
        append(&store, batch.clone());
        ends.push(file_len(&segment));
    }
    drop(store);
    let name = segment.file_name().unwrap();

    for cut_at in durable_end..*ends.last().unwrap() {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(source.path(), dir.path());
        cut(&dir.path().join(name), cut_at);

        let mut expected = durable.clone();
        let mut valid_end = durable_end;
        for (batch, end) in tail_batches.iter().zip(&ends) {
            if *end <= cut_at {
                expected.extend(batch.iter().cloned());
                valid_end = *end;
            }
        }
        let store = open(dir.path(), opts.clone());
        let (replayed, stats) = replay(&store).unwrap();
        assert_eq!(replayed, expected, "cut at {cut_at}");
        assert_eq!(
            stats.truncated_tail_bytes,
            cut_at - valid_end,
            "cut at {cut_at}"
        );

        append(&store, vec![rec("d/c", b"after recovery")]);
        drop(store);
        expected.push(rec("d/c", b"after recovery"));
        assert_eq!(
            reopen_and_replay(dir.path(), opts.clone()),
            expected,
            "cut at {cut_at}"
        );
    }
}

#[test]
fn garbage_after_the_last_frame_is_cut_off_and_zeros_are_not_counted_as_torn() {
    let patterns: Vec<Vec<u8>> = vec![
        vec![0; 1],
        vec![0; 15],
        vec![0; 4096],
        vec![0xff; 64],
        (0..200u8).map(|b| b.wrapping_mul(31)).collect(),
    ];
    // Garbage at the end of an exact-length file, and written over preallocated zeros.
    for preallocate_bytes in [0, 64 * 1024] {
        for garbage in &patterns {
            let dir = tempfile::tempdir().unwrap();
            let opts = WalOptions {
                preallocate_bytes,
                ..options(BIG, SyncMode::None)
            };
            let store = open(dir.path(), opts.clone());
            append(&store, vec![numbered(0, 0)]);
            append(&store, vec![numbered(1, 0)]);
            drop(store);
            let segment = segments(dir.path())[0].clone();
            let file_end = file_len(&segment);
            let frames_end = *frame_ends(&fs::read(&segment).unwrap()).get(1).unwrap();
            OpenOptions::new()
                .write(true)
                .open(&segment)
                .unwrap()
                .write_all_at(garbage, frames_end)
                .unwrap();
            let cut = file_len(&segment) - frames_end;
            assert_eq!(
                file_len(&segment),
                file_end.max(frames_end + garbage.len() as u64)
            );

            let store = open(dir.path(), opts.clone());
            let (replayed, stats) = replay(&store).unwrap();
            assert_eq!(replayed, vec![numbered(0, 0), numbered(1, 0)]);
            let torn = garbage.iter().any(|&byte| byte != 0);
            assert_eq!(stats.truncated_tail_bytes, if torn { cut } else { 0 });
            append(&store, vec![numbered(2, 0)]);
            drop(store);
            assert_eq!(
                reopen_and_replay(dir.path(), opts),
                vec![numbered(0, 0), numbered(1, 0), numbered(2, 0)]
            );
        }
    }
}

/// A store with several segments, for damaging the ones before the last.
fn multi_segment_store(dir: &Path) -> Vec<Record> {
    let store = open(dir, options(250, SyncMode::None));
    let mut all = Vec::new();
    for batch in 0..30 {
        let records = vec![numbered(batch, 0), numbered(batch, 1)];
        all.extend(records.iter().cloned());
        append(&store, records);
    }
    drop(store);
    assert!(segments(dir).len() >= 4);
    all
}

fn assert_corrupt(dir: &Path, what: &str) {
    match WalStore::open(dir, options(250, SyncMode::None)) {
        Err(StoreError::Corrupt { .. }) => {}
        Err(other) => panic!("{what}: open failed with {other}"),
        Ok(store) => match replay(&store) {
            Err(StoreError::Corrupt { .. }) => {}
            other => panic!("{what}: replay gave {other:?}"),
        },
    }
}

#[test]
fn every_flipped_byte_in_a_non_last_segment_is_reported_as_corrupt() {
    let source = tempfile::tempdir().unwrap();
    multi_segment_store(source.path());
    let first = segments(source.path())[0].clone();
    let name = first.file_name().unwrap();
    let clean = fs::read(&first).unwrap();
    for offset in 0..clean.len() {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(source.path(), dir.path());
        let mut bytes = clean.clone();
        bytes[offset] ^= 0x10;
        fs::write(dir.path().join(name), &bytes).unwrap();
        assert_corrupt(dir.path(), &format!("byte {offset} flipped"));
    }
}

#[test]
fn a_non_last_segment_missing_frames_is_reported_as_corrupt() {
    let source = tempfile::tempdir().unwrap();
    let all = multi_segment_store(source.path());
    assert_eq!(
        reopen_and_replay(source.path(), options(250, SyncMode::None)),
        all
    );
    let second = segments(source.path())[1].clone();
    let name = second.file_name().unwrap();
    let ends = frame_ends(&fs::read(&second).unwrap());
    assert!(ends.len() >= 2);

    // Cut cleanly at a frame boundary (a lost frame) and mid-frame (a torn one).
    let boundary = ends[ends.len() - 2];
    for cut_at in [boundary, boundary + 5, 40] {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(source.path(), dir.path());
        cut(&dir.path().join(name), cut_at);
        assert_corrupt(dir.path(), &format!("second segment cut at {cut_at}"));
    }
}

#[test]
fn a_missing_segment_is_reported_as_corrupt() {
    let source = tempfile::tempdir().unwrap();
    multi_segment_store(source.path());
    for victim in [0, 1] {
        let dir = tempfile::tempdir().unwrap();
        copy_dir(source.path(), dir.path());
        fs::remove_file(&segments(dir.path())[victim]).unwrap();
        assert_corrupt(dir.path(), &format!("segment {victim} deleted"));
    }
}

#[test]
fn files_the_store_does_not_own_are_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join("README"), b"operator notes").unwrap();
    let store = open(dir.path(), options(BIG, SyncMode::None));
    append(&store, vec![numbered(0, 0)]);
    drop(store);
    assert_eq!(
        reopen_and_replay(dir.path(), options(BIG, SyncMode::None)),
        vec![numbered(0, 0)]
    );
    assert_eq!(
        fs::read(dir.path().join("README")).unwrap(),
        b"operator notes"
    );
}
