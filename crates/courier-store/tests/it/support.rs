//! Helpers shared by every test: one place that opens, replays and waits.

use std::fs;
use std::path::{Path, PathBuf};

use courier_store::{
    Commit, CommitInfo, Record, ReplayStats, Store, StoreError, SyncMode, WalOptions, WalStore,
};

thread_local! {
    static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
}

/// Waits for a commit from synchronous test code.
pub(crate) fn wait(commit: Commit) -> Result<CommitInfo, StoreError> {
    RUNTIME.with(|runtime| runtime.block_on(commit))
}

pub(crate) fn rec(stream: &str, payload: &[u8]) -> Record {
    Record {
        stream: stream.to_owned(),
        payload: payload.to_vec(),
    }
}

/// A record whose content says which batch and slot it came from.
pub(crate) fn numbered(batch: u32, slot: u32) -> Record {
    Record {
        stream: format!("d/device-{}", batch % 7),
        payload: format!("batch {batch} slot {slot}").into_bytes(),
    }
}

pub(crate) fn options(segment_bytes: u64, sync: SyncMode) -> WalOptions {
    WalOptions {
        segment_bytes,
        sync,
        ..WalOptions::default()
    }
}

pub(crate) fn open(dir: &Path, options: WalOptions) -> WalStore {
    WalStore::open(dir, options).unwrap()
}

pub(crate) fn replay(store: &WalStore) -> Result<(Vec<Record>, ReplayStats), StoreError> {
    let mut records = Vec::new();
    let stats = store.replay(&mut |record| {
        records.push(record);
        Ok(())
    })?;
    Ok((records, stats))
}

/// Opens `dir` and returns everything it replays.
pub(crate) fn reopen_and_replay(dir: &Path, options: WalOptions) -> Vec<Record> {
    let store = open(dir, options);
    replay(&store).unwrap().0
}

/// Appends one batch and waits for it to be durable.
pub(crate) fn append(store: &WalStore, records: Vec<Record>) -> CommitInfo {
    wait(store.append(records)).unwrap()
}

/// The store's files, sorted by name.
pub(crate) fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

pub(crate) fn segments(dir: &Path) -> Vec<PathBuf> {
    files(dir)
        .into_iter()
        .filter(|name| name.starts_with("wal-") && name.ends_with(".log"))
        .map(|name| dir.join(name))
        .collect()
}

pub(crate) fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for name in files(from) {
        fs::copy(from.join(&name), to.join(&name)).unwrap();
    }
}

/// Cuts the zeros the writer preallocated after the last frame of the segment at `path`,
/// as the writer does before it starts the next segment; returns the new length.
pub(crate) fn trim_preallocated(path: &Path) -> u64 {
    let bytes = fs::read(path).unwrap();
    let mut end = 40;
    while end + 4 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[end..end + 4].try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        end += 8 + len;
    }
    let end = end.min(bytes.len()) as u64;
    fs::OpenOptions::new()
        .write(true)
        .open(path)
        .unwrap()
        .set_len(end)
        .unwrap();
    end
}
