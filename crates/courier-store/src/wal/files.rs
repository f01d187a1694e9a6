//! File-level steps of the protocol: creating a segment, writing a checkpoint, deleting
//! what a checkpoint superseded. Each new file is written under a `.tmp` name, synced,
//! renamed and made durable by syncing the directory, so a file with its final name is
//! always complete.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::{IoContext, IoFailure, SyncMode};
use crate::format::{
    checkpoint_path, classify, encode_frame, record_encoded_len, segment_path, tmp_path,
    CheckpointHeader, FileKind, SegmentHeader,
};
use crate::Record;

/// `fdatasync` of `file` unless syncing is off.
pub(super) fn sync_data(file: &File, mode: SyncMode, path: &Path) -> Result<(), IoFailure> {
    match mode {
        SyncMode::Data => file.sync_data().context("fdatasync", path),
        SyncMode::None => Ok(()),
    }
}

/// Makes creations, renames and deletions in `dir` durable.
pub(super) fn sync_dir(dir: &Path, mode: SyncMode) -> Result<(), IoFailure> {
    match mode {
        SyncMode::Data => File::open(dir)
            .and_then(|handle| handle.sync_all())
            .context("fsync directory", dir),
        SyncMode::None => Ok(()),
    }
}

/// Zeros written at a time when preallocating.
static ZEROS: [u8; 64 * 1024] = [0; 64 * 1024];

/// Writes zeros over `from..to` of `file` (not synced). Written zeros, not `fallocate`:
/// a later overwrite of written blocks changes no metadata, so its `fdatasync` flushes
/// data only, while a write into unwritten extents or past the end must also commit
/// the filesystem journal.
pub(super) fn write_zeros(file: &File, from: u64, to: u64, path: &Path) -> Result<(), IoFailure> {
    let mut at = from;
    while at < to {
        let n = (to - at).min(ZEROS.len() as u64) as usize;
        file.write_all_at(&ZEROS[..n], at)
            .context("preallocate", path)?;
        at += n as u64;
    }
    Ok(())
}

/// Writes `bytes` to a new file at `path` via its `.tmp` name, followed by zeros up to
/// `file_len` bytes in all, and returns the file.
fn create_complete(
    dir: &Path,
    path: &Path,
    bytes: &[u8],
    file_len: u64,
    mode: SyncMode,
) -> Result<File, IoFailure> {
    let tmp = tmp_path(path);
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .context("create", &tmp)?;
    file.write_all(bytes).context("write", &tmp)?;
    write_zeros(&file, bytes.len() as u64, file_len, &tmp)?;
    sync_data(&file, mode, &tmp)?;
    fs::rename(&tmp, path).context("rename", &tmp)?;
    sync_dir(dir, mode)?;
    Ok(file)
}

/// Creates segment `header.index`, durable (header, name and directory entry) before any
/// frame goes in, so recovery never sees a segment without a complete header. The file is
/// `file_len` bytes long (at least the header), zeros after the header.
pub(super) fn create_segment(
    dir: &Path,
    header: SegmentHeader,
    file_len: u64,
    mode: SyncMode,
) -> Result<File, IoFailure> {
    create_complete(
        dir,
        &segment_path(dir, header.index),
        &header.encode(),
        file_len,
        mode,
    )
}

/// Writes `snapshot` as checkpoint `index`, at log position `position`, split into frames
/// of about `chunk_bytes`. Durable and complete under its final name when this returns.
pub(super) fn write_checkpoint(
    dir: &Path,
    index: u64,
    position: u64,
    snapshot: &[Record],
    chunk_bytes: u64,
    mode: SyncMode,
) -> Result<(), IoFailure> {
    let path = checkpoint_path(dir, index);
    let tmp = tmp_path(&path);
    let header = CheckpointHeader {
        index,
        position,
        record_count: snapshot.len() as u64,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&tmp)
        .context("create", &tmp)?;
    file.write_all(&header.encode()).context("write", &tmp)?;
    let mut buf = Vec::new();
    let mut rest = snapshot;
    while !rest.is_empty() {
        // At least one record per frame, however large; the caller checked each fits.
        let mut take = 0;
        let mut bytes = 0;
        while take < rest.len()
            && (take == 0 || bytes + record_encoded_len(&rest[take]) <= chunk_bytes)
        {
            bytes += record_encoded_len(&rest[take]);
            take += 1;
        }
        let (chunk, after) = rest.split_at(take);
        buf.clear();
        encode_frame(&mut buf, position, chunk);
        file.write_all(&buf).context("write", &tmp)?;
        rest = after;
    }
    sync_data(&file, mode, &tmp)?;
    drop(file);
    fs::rename(&tmp, &path).context("rename", &tmp)?;
    sync_dir(dir, mode)
}

/// Deletes segments and checkpoints below `index` and leftover `.tmp` files; returns how
/// many files went. The caller syncs the directory if any did.
pub(super) fn remove_superseded(dir: &Path, index: u64) -> Result<usize, IoFailure> {
    let mut removed = 0;
    for entry in fs::read_dir(dir).context("list", dir)? {
        let entry = entry.context("list", dir)?;
        let name = entry.file_name();
        let Some(kind) = name.to_str().and_then(classify) else {
            continue;
        };
        let stale = match kind {
            FileKind::Segment(i) | FileKind::Checkpoint(i) => i < index,
            FileKind::Tmp => true,
        };
        if stale {
            let path = entry.path();
            fs::remove_file(&path).context("delete", &path)?;
            removed += 1;
        }
    }
    Ok(removed)
}
