//! Recovery at `open` and the one `replay` after it.
//!
//! `open` reads only what it needs to resume appending: the newest checkpoint's header,
//! every segment header, and the frames of the last segment, where it cuts off a torn
//! tail. `replay` then reads everything and checks every frame: damage outside the last
//! segment's tail is an error, because those bytes were acknowledged as durable.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::files::{create_segment, remove_superseded, sync_data, sync_dir};
use super::writer::Tail;
use super::{IoContext, SyncMode};
use crate::format::{
    classify, segment_path, CheckpointHeader, FileKind, FrameRead, FrameReader, RecordIter,
    SegmentHeader, CHECKPOINT_HEADER_LEN, SEGMENT_HEADER_LEN,
};
use crate::{Record, ReplayError, ReplayStats, StoreError};

/// Large reads keep replay at disk speed; frames are mostly far smaller than this.
const READ_BUFFER_BYTES: usize = 1 << 20;

/// What `open` found, for the writer and for `replay`.
pub(super) struct Recovered {
    pub(super) plan: ReplayPlan,
    pub(super) tail: Tail,
    pub(super) next_position: u64,
    pub(super) log_bytes: u64,
}

/// The files `replay` reads, as validated by `open`.
pub(super) struct ReplayPlan {
    checkpoint: Option<(PathBuf, CheckpointHeader)>,
    segments: Vec<SegmentPlan>,
    truncated_tail_bytes: u64,
}

struct SegmentPlan {
    path: PathBuf,
    header: SegmentHeader,
    /// Replay reads up to here: the file's length at `open` (after any truncation), so
    /// appends made since are not mistaken for recovered history.
    end: u64,
}

fn corrupt(path: &Path, offset: u64, reason: impl Into<String>) -> StoreError {
    StoreError::Corrupt {
        path: path.to_path_buf(),
        offset,
        reason: reason.into(),
    }
}

/// Recovers the store in `dir` (creating it if needed) so appends can resume.
pub(super) fn recover(dir: &Path, mode: SyncMode) -> Result<Recovered, StoreError> {
    fs::create_dir_all(dir).context("create directory", dir)?;
    let mut segments = BTreeMap::new();
    let mut checkpoints = BTreeMap::new();
    let mut has_stale = false;
    for entry in fs::read_dir(dir).context("list", dir)? {
        let entry = entry.context("list", dir)?;
        match entry.file_name().to_str().and_then(classify) {
            Some(FileKind::Segment(index)) => drop(segments.insert(index, entry.path())),
            Some(FileKind::Checkpoint(index)) => drop(checkpoints.insert(index, entry.path())),
            Some(FileKind::Tmp) => has_stale = true,
            None => {}
        }
    }

    let checkpoint = match checkpoints.pop_last() {
        Some((index, path)) => {
            let header = read_checkpoint_header(&path)?;
            if header.index != index {
                return Err(corrupt(
                    &path,
                    0,
                    format!("header says index {}", header.index),
                ));
            }
            Some((path, header))
        }
        None => None,
    };
    let first_index = checkpoint.as_ref().map_or(0, |(_, header)| header.index);
    has_stale |= !checkpoints.is_empty() || segments.range(..first_index).next().is_some();

    // Validate before deleting anything, so a damaged directory is left as it was found.
    let expected = checkpoint
        .as_ref()
        .map_or(1, |(_, header)| header.position + 1);
    let mut plans = Vec::new();
    for (slot, (index, path)) in segments.range(first_index..).enumerate() {
        let wanted = first_index + slot as u64;
        if *index != wanted {
            return Err(corrupt(
                path,
                0,
                format!("segment {wanted:016x} is missing"),
            ));
        }
        let header = read_segment_header(path)?;
        if header.index != *index {
            return Err(corrupt(
                path,
                0,
                format!("header says index {}", header.index),
            ));
        }
        // Only the first segment can be checked here; the others' predecessors end at
        // positions `replay` learns by reading them.
        if slot == 0 && !header.continues(expected) {
            return Err(corrupt(
                path,
                0,
                format!(
                    "segment starts at position {}, expected {expected}",
                    header.first_position
                ),
            ));
        }
        let end = fs::metadata(path).context("stat", path)?.len();
        plans.push(SegmentPlan {
            path: path.clone(),
            header,
            end,
        });
    }
    if plans.is_empty() {
        if let Some((path, _)) = &checkpoint {
            // The checkpoint's own segment is created before the checkpoint file.
            return Err(corrupt(path, 0, "no log segment follows the checkpoint"));
        }
    }

    if has_stale {
        if let Some((path, _)) = &checkpoint {
            // After a kill -9 the checkpoint's rename may still be only in the page cache;
            // make it durable before deleting the history it replaces.
            let file = File::open(path).context("open", path)?;
            sync_data(&file, mode, path)?;
            sync_dir(dir, mode)?;
        }
        let removed = remove_superseded(dir, first_index)?;
        sync_dir(dir, mode)?;
        tracing::info!(removed, "deleted superseded and temporary store files");
    }

    if plans.is_empty() {
        // A fresh store.
        let header = SegmentHeader {
            index: 0,
            first_position: 1,
            checkpoint_position: 0,
        };
        create_segment(dir, header, SEGMENT_HEADER_LEN, mode)?;
        plans.push(SegmentPlan {
            path: segment_path(dir, 0),
            header,
            end: SEGMENT_HEADER_LEN,
        });
    }

    // There is at least one segment now.
    let last = plans.len() - 1;
    let (valid_end, next_position) = scan_tail(&plans[last])?;
    let tail_plan = &mut plans[last];
    let file = OpenOptions::new()
        .write(true)
        .open(&tail_plan.path)
        .context("open", &tail_plan.path)?;
    let mut truncated_tail_bytes = 0;
    if tail_plan.end > valid_end {
        // Zeros are the space the writer preallocates; anything else is a torn write.
        if all_zero(&tail_plan.path, valid_end, tail_plan.end)? {
            tracing::debug!(
                bytes = tail_plan.end - valid_end,
                "dropping preallocated zeros after the last frame"
            );
        } else {
            truncated_tail_bytes = tail_plan.end - valid_end;
            tracing::warn!(
                path = %tail_plan.path.display(),
                offset = valid_end,
                bytes = truncated_tail_bytes,
                "cutting a torn tail off the last log segment"
            );
        }
        file.set_len(valid_end)
            .context("truncate", &tail_plan.path)?;
        tail_plan.end = valid_end;
    }
    // Frames written but never synced before a kill -9 are still in the page cache and
    // replay will return them: make them durable first so the engine never acts on
    // records a later power loss could take back.
    if mode == SyncMode::Data {
        file.sync_all().context("fsync", &tail_plan.path)?;
    }
    let tail = Tail {
        file,
        index: tail_plan.header.index,
        path: tail_plan.path.clone(),
        len: tail_plan.end,
        allocated: tail_plan.end,
    };
    let log_bytes = plans.iter().map(|plan| plan.end - SEGMENT_HEADER_LEN).sum();
    tracing::info!(
        dir = %dir.display(),
        segments = plans.len(),
        checkpoint = checkpoint.is_some(),
        next_position,
        "write-ahead log recovered"
    );
    Ok(Recovered {
        plan: ReplayPlan {
            checkpoint,
            segments: plans,
            truncated_tail_bytes,
        },
        tail,
        next_position,
        log_bytes,
    })
}

/// Whether bytes `from..to` of the file at `path` are all zero.
fn all_zero(path: &Path, from: u64, to: u64) -> Result<bool, StoreError> {
    let mut file = File::open(path).context("open", path)?;
    file.seek(SeekFrom::Start(from)).context("seek", path)?;
    let mut file = file.take(to - from);
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        let n = file.read(&mut chunk).context("read", path)?;
        if n == 0 {
            return Ok(true);
        }
        if chunk[..n].iter().any(|&byte| byte != 0) {
            return Ok(false);
        }
    }
}

/// Reads the last segment's frames; returns where the valid ones end and the position the
/// next frame takes. A frame that does not read back is a torn write and ends the scan.
fn scan_tail(plan: &SegmentPlan) -> Result<(u64, u64), StoreError> {
    let file = open_at_body(&plan.path, SEGMENT_HEADER_LEN)?;
    let mut frames = FrameReader::new(file, SEGMENT_HEADER_LEN, plan.end);
    let mut next = plan.header.first_position;
    loop {
        let offset = frames.offset();
        match frames.next_frame().context("read", &plan.path)? {
            FrameRead::End => return Ok((offset, next)),
            FrameRead::Bad { reason } => {
                tracing::debug!(reason, offset, "torn frame at the log tail");
                return Ok((offset, next));
            }
            FrameRead::Frame { position, records } => {
                if position != next {
                    return Err(corrupt(
                        &plan.path,
                        offset,
                        format!("frame has position {position}, expected {next}"),
                    ));
                }
                for record in RecordIter::new(records) {
                    record
                        .and_then(|(stream, _)| {
                            std::str::from_utf8(stream).map_err(|_| "stream is not UTF-8")
                        })
                        .map_err(|reason| corrupt(&plan.path, offset, reason))?;
                }
                next += 1;
            }
        }
    }
}

/// Reads the checkpoint and the log after it, in order, into `visit`.
pub(super) fn replay(
    plan: &ReplayPlan,
    visit: &mut dyn FnMut(Record) -> Result<(), ReplayError>,
) -> Result<ReplayStats, StoreError> {
    let started = Instant::now();
    let mut stats = ReplayStats {
        truncated_tail_bytes: plan.truncated_tail_bytes,
        ..ReplayStats::default()
    };
    let mut expected = 1;
    if let Some((path, header)) = &plan.checkpoint {
        let end = fs::metadata(path).context("stat", path)?.len();
        let file = open_at_body(path, CHECKPOINT_HEADER_LEN)?;
        let mut frames = FrameReader::new(file, CHECKPOINT_HEADER_LEN, end);
        loop {
            let offset = frames.offset();
            match frames.next_frame().context("read", path)? {
                FrameRead::End => break,
                // The file was complete before its rename, so any bad frame is damage.
                FrameRead::Bad { reason } => return Err(corrupt(path, offset, reason)),
                FrameRead::Frame { position, records } => {
                    if position != header.position {
                        return Err(corrupt(
                            path,
                            offset,
                            format!("frame has position {position}"),
                        ));
                    }
                    stats.checkpoint_records += visit_records(records, path, offset, visit)?;
                }
            }
        }
        if stats.checkpoint_records != header.record_count {
            return Err(corrupt(
                path,
                end,
                format!(
                    "checkpoint holds {} records, header says {}",
                    stats.checkpoint_records, header.record_count
                ),
            ));
        }
        stats.bytes += end;
        stats.records = stats.checkpoint_records;
        expected = header.position + 1;
    }
    for segment in &plan.segments {
        let path = &segment.path;
        if !segment.header.continues(expected) {
            return Err(corrupt(
                path,
                0,
                format!(
                    "segment starts at position {}, expected {expected}",
                    segment.header.first_position
                ),
            ));
        }
        expected = segment.header.first_position;
        let file = open_at_body(path, SEGMENT_HEADER_LEN)?;
        let mut frames = FrameReader::new(file, SEGMENT_HEADER_LEN, segment.end);
        loop {
            let offset = frames.offset();
            match frames.next_frame().context("read", path)? {
                FrameRead::End => break,
                // `open` already cut the last segment where its valid frames end, so a bad
                // frame here is damage to acknowledged data.
                FrameRead::Bad { reason } => return Err(corrupt(path, offset, reason)),
                FrameRead::Frame { position, records } => {
                    if position != expected {
                        return Err(corrupt(
                            path,
                            offset,
                            format!("frame has position {position}, expected {expected}"),
                        ));
                    }
                    stats.records += visit_records(records, path, offset, visit)?;
                    expected += 1;
                }
            }
        }
        stats.bytes += segment.end;
    }
    stats.elapsed = started.elapsed();
    Ok(stats)
}

fn visit_records(
    records: &[u8],
    path: &Path,
    offset: u64,
    visit: &mut dyn FnMut(Record) -> Result<(), ReplayError>,
) -> Result<u64, StoreError> {
    let mut count = 0;
    for record in RecordIter::new(records) {
        let (stream, payload) = record.map_err(|reason| corrupt(path, offset, reason))?;
        let stream = String::from_utf8(stream.to_vec())
            .map_err(|_| corrupt(path, offset, "stream is not UTF-8"))?;
        visit(Record {
            stream,
            payload: payload.to_vec(),
        })?;
        count += 1;
    }
    Ok(count)
}

/// Opens `path` for reading, positioned just after a header of `header_len` bytes.
fn open_at_body(path: &Path, header_len: u64) -> Result<BufReader<File>, StoreError> {
    let file = File::open(path).context("open", path)?;
    let mut reader = BufReader::with_capacity(READ_BUFFER_BYTES, file);
    let mut header = vec![0u8; header_len as usize];
    reader
        .read_exact(&mut header)
        .context("read header of", path)?;
    Ok(reader)
}

fn read_header<const N: usize>(path: &Path) -> Result<[u8; N], StoreError> {
    let mut header = [0u8; N];
    let mut file = File::open(path).context("open", path)?;
    let len = file.metadata().context("stat", path)?.len();
    // Files get their final name only once complete, so a short header is damage.
    if len < N as u64 {
        return Err(corrupt(
            path,
            0,
            format!("file of {len} bytes is shorter than its header"),
        ));
    }
    file.read_exact(&mut header)
        .context("read header of", path)?;
    Ok(header)
}

fn read_segment_header(path: &Path) -> Result<SegmentHeader, StoreError> {
    let bytes = read_header::<{ SEGMENT_HEADER_LEN as usize }>(path)?;
    SegmentHeader::decode(&bytes).map_err(|reason| corrupt(path, 0, reason))
}

fn read_checkpoint_header(path: &Path) -> Result<CheckpointHeader, StoreError> {
    let bytes = read_header::<{ CHECKPOINT_HEADER_LEN as usize }>(path)?;
    CheckpointHeader::decode(&bytes).map_err(|reason| corrupt(path, 0, reason))
}
