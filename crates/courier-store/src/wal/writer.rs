//! The writer thread: the only code that writes to the store's files after `open`.
//!
//! It takes the first queued request, drains whatever else is already queued (up to
//! `max_batch_bytes`), writes all of it with one `write`, makes it durable with one
//! `fdatasync`, and only then answers. Requests that arrive during the sync wait for the
//! next round, which is what groups them: the busier the store, the more batches share a
//! sync. Positions are assigned here, in channel order, so log order is call order.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};

use super::files::{
    create_segment, remove_superseded, sync_data, sync_dir, write_checkpoint, write_zeros,
};
use super::{Failure, FaultPoint, IoContext, IoFailure, Reply, Shared, SyncMode, WalOptions};
use crate::format::{encode_frame, frame_encoded_len, SegmentHeader, SEGMENT_HEADER_LEN};
use crate::{CommitInfo, Record};

/// An operation queued for the writer.
pub(super) enum Request {
    Append { records: Vec<Record>, reply: Reply },
    Checkpoint { snapshot: Vec<Record>, reply: Reply },
}

/// The segment appends go to.
pub(super) struct Tail {
    pub(super) file: File,
    pub(super) index: u64,
    pub(super) path: PathBuf,
    /// Bytes of header and frames: where the next frame goes.
    pub(super) len: u64,
    /// The file's length: `len` plus the zeros preallocated after it.
    pub(super) allocated: u64,
}

pub(super) struct Writer {
    dir: PathBuf,
    sync: SyncMode,
    segment_bytes: u64,
    max_batch_bytes: u64,
    preallocate_bytes: u64,
    shared: Arc<Shared>,
    tail: Tail,
    next_position: u64,
    /// The frames of the group being built; reused across groups.
    buf: Vec<u8>,
    /// Who to answer once the group is durable, with the position each batch took.
    group: Vec<(Reply, u64)>,
    group_records: u64,
    /// Set on the first failed write or sync; from then on every request is refused.
    failure: Option<Failure>,
}

impl Writer {
    pub(super) fn new(
        dir: PathBuf,
        options: &WalOptions,
        shared: Arc<Shared>,
        tail: Tail,
        next_position: u64,
    ) -> Self {
        Self {
            dir,
            sync: options.sync,
            segment_bytes: options.segment_bytes,
            max_batch_bytes: options.max_batch_bytes as u64,
            preallocate_bytes: options.preallocate_bytes,
            shared,
            tail,
            next_position,
            buf: Vec::new(),
            group: Vec::new(),
            group_records: 0,
            failure: None,
        }
    }

    /// Serves requests until every sender is gone and the queue is empty.
    pub(super) fn run(mut self, requests: mpsc::Receiver<Request>) {
        let mut carried = None;
        loop {
            let request = match carried.take() {
                Some(request) => request,
                None => match requests.recv() {
                    Ok(request) => request,
                    Err(mpsc::RecvError) => break,
                },
            };
            carried = match request {
                Request::Append { records, reply } => self.append_group(records, reply, &requests),
                Request::Checkpoint { snapshot, reply } => {
                    self.checkpoint(&snapshot, reply);
                    None
                }
            };
        }
    }

    /// Writes `records` and every append queued behind it as one group; returns a request
    /// it took off the queue but could not include (a checkpoint, or one that would
    /// overflow the group), which must be served next to keep call order.
    fn append_group(
        &mut self,
        records: Vec<Record>,
        reply: Reply,
        requests: &mpsc::Receiver<Request>,
    ) -> Option<Request> {
        if let Some(failure) = &self.failure {
            // The receiver may have given up; nothing to do then.
            let _ = reply.send(Err(failure.to_error()));
            return None;
        }
        self.buf.clear();
        self.push(&records, reply);
        let mut carried = None;
        while (self.buf.len() as u64) < self.max_batch_bytes {
            match requests.try_recv() {
                Ok(Request::Append { records, reply }) => {
                    if self.buf.len() as u64 + frame_encoded_len(&records) > self.max_batch_bytes {
                        carried = Some(Request::Append { records, reply });
                        break;
                    }
                    self.push(&records, reply);
                }
                Ok(checkpoint) => {
                    carried = Some(checkpoint);
                    break;
                }
                Err(_) => break,
            }
        }
        self.commit_group();
        // One oversized batch must not pin a huge buffer for the life of the process.
        if self.buf.capacity() as u64 > 2 * self.max_batch_bytes {
            self.buf = Vec::new();
        }
        carried
    }

    fn push(&mut self, records: &[Record], reply: Reply) {
        let position = self.next_position;
        self.next_position += 1;
        encode_frame(&mut self.buf, position, records);
        self.group.push((reply, position));
        self.group_records += records.len() as u64;
    }

    fn commit_group(&mut self) {
        let batches = self.group.len() as u64;
        let records = std::mem::take(&mut self.group_records);
        match self.write_group() {
            Ok(()) => {
                let bytes = self.buf.len() as u64;
                self.tail.len += bytes;
                let counters = &self.shared.counters;
                counters.batches.fetch_add(batches, Ordering::Relaxed);
                counters.records.fetch_add(records, Ordering::Relaxed);
                counters.writes.fetch_add(1, Ordering::Relaxed);
                counters.bytes_written.fetch_add(bytes, Ordering::Relaxed);
                self.shared.log_bytes.fetch_add(bytes, Ordering::Relaxed);
                for (reply, position) in self.group.drain(..) {
                    let _ = reply.send(Ok(CommitInfo { position }));
                }
                // After answering, so the syncs of a rotation or a preallocation delay
                // the next group only.
                if self.tail.len >= self.segment_bytes {
                    match self.rotate(self.next_position, 0) {
                        Ok(()) => {
                            self.shared
                                .counters
                                .rotations
                                .fetch_add(1, Ordering::Relaxed);
                        }
                        Err(failure) => self.fail(failure),
                    }
                } else if let Err(failure) = self.preallocate() {
                    self.fail(failure);
                }
            }
            Err(failure) => {
                self.fail(failure);
                let group = std::mem::take(&mut self.group);
                for (reply, _) in group {
                    let _ = reply.send(Err(self.failure_error()));
                }
            }
        }
    }

    fn write_group(&mut self) -> Result<(), IoFailure> {
        let path = &self.tail.path;
        let at = self.tail.len;
        if let Err(error) = self.shared.inject(FaultPoint::Write) {
            // Simulates a write that got half-way, leaving a torn frame behind.
            let half = self.buf.len() / 2;
            self.tail
                .file
                .write_all_at(&self.buf[..half], at)
                .context("write", path)?;
            return Err(error).context("write", path);
        }
        self.tail
            .file
            .write_all_at(&self.buf, at)
            .context("write", path)?;
        self.tail.allocated = self.tail.allocated.max(at + self.buf.len() as u64);
        if self.sync == SyncMode::Data {
            self.shared
                .inject(FaultPoint::Sync)
                .context("fdatasync", path)?;
            sync_data(&self.tail.file, self.sync, path)?;
            self.shared.counters.syncs.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Keeps zeros written ahead of the next frame, so that a group's `fdatasync` flushes
    /// data only and never the file's growth. Tops the zeros up to `preallocate_bytes`
    /// (within the segment's size) once fewer than half that are left; the sync that
    /// makes the new length durable is paid here, once per top-up, off a caller's wait.
    fn preallocate(&mut self) -> Result<(), IoFailure> {
        let tail = &mut self.tail;
        let target = (tail.len + self.preallocate_bytes).min(self.segment_bytes);
        if self.preallocate_bytes == 0
            || tail.allocated >= target
            || tail.allocated - tail.len >= self.preallocate_bytes / 2
        {
            return Ok(());
        }
        write_zeros(&tail.file, tail.allocated, target, &tail.path)?;
        sync_data(&tail.file, self.sync, &tail.path)?;
        tail.allocated = target;
        self.shared
            .counters
            .preallocations
            .fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Starts the next segment, whose first frame will take `first_position`.
    ///
    /// The current segment is first cut to its frames, durably, so that only the last
    /// segment can ever end in preallocated zeros; replay reads every other one to its
    /// end and calls anything that is not a frame damage.
    fn rotate(&mut self, first_position: u64, checkpoint_position: u64) -> Result<(), IoFailure> {
        let old = &self.tail;
        if old.allocated > old.len {
            old.file.set_len(old.len).context("truncate", &old.path)?;
            if self.sync == SyncMode::Data {
                old.file.sync_all().context("fsync", &old.path)?;
            }
        }
        let header = SegmentHeader {
            index: self.tail.index + 1,
            first_position,
            checkpoint_position,
        };
        let allocated = SEGMENT_HEADER_LEN
            + self
                .preallocate_bytes
                .min(self.segment_bytes.saturating_sub(SEGMENT_HEADER_LEN));
        let file = create_segment(&self.dir, header, allocated, self.sync)?;
        self.tail = Tail {
            file,
            index: header.index,
            path: crate::format::segment_path(&self.dir, header.index),
            len: SEGMENT_HEADER_LEN,
            allocated,
        };
        Ok(())
    }

    /// Replaces the history before this point with `snapshot`.
    ///
    /// Every earlier append is already durable (they were answered before this request
    /// was taken). Steps, each durable before the next: start segment C, write
    /// checkpoint-C, delete what C supersedes. A crash before the checkpoint's rename
    /// leaves the old history plus an empty segment C, which recovery accepts.
    fn checkpoint(&mut self, snapshot: &[Record], reply: Reply) {
        if self.failure.is_some() {
            let _ = reply.send(Err(self.failure_error()));
            return;
        }
        let position = self.next_position;
        self.next_position += 1;
        let written = self.rotate(position + 1, position).and_then(|()| {
            let index = self.tail.index;
            self.shared
                .inject(FaultPoint::Checkpoint)
                .context("write checkpoint", &self.dir)?;
            write_checkpoint(
                &self.dir,
                index,
                position,
                snapshot,
                self.max_batch_bytes,
                self.sync,
            )
        });
        if let Err(failure) = written {
            self.fail(failure);
            let _ = reply.send(Err(self.failure_error()));
            return;
        }
        // The checkpoint is durable, so failing to delete superseded files loses nothing:
        // recovery ignores them and the next open or checkpoint deletes them.
        match remove_superseded(&self.dir, self.tail.index)
            .and_then(|removed| sync_dir(&self.dir, self.sync).map(|()| removed))
        {
            Ok(removed) => tracing::debug!(removed, position, "checkpoint complete"),
            Err(error) => tracing::warn!(?error, "could not delete files a checkpoint superseded"),
        }
        self.shared.log_bytes.store(0, Ordering::Relaxed);
        self.shared
            .counters
            .checkpoints
            .fetch_add(1, Ordering::Relaxed);
        let _ = reply.send(Ok(CommitInfo { position }));
    }

    /// Stops the store for good.
    ///
    /// Fail-stop, never retry: after a failed fsync Linux may mark the dirty pages clean
    /// and drop the error, so a retried fsync can succeed while the data is lost
    /// ("fsyncgate", PostgreSQL 2018). Nothing written since the last good sync can be
    /// trusted, so nothing after it is acknowledged; reopening recovers from what is
    /// actually on disk.
    fn fail(&mut self, failure: IoFailure) {
        let failure = failure.into_failure();
        tracing::error!(
            op = failure.op,
            path = %failure.path.display(),
            error = %failure.source,
            "write-ahead log stopped; reopen the store to recover"
        );
        // Only this thread sets it, once, so `set` cannot find it already set.
        let _ = self.shared.failure.set(failure.clone());
        self.failure = Some(failure);
    }

    fn failure_error(&self) -> crate::StoreError {
        match &self.failure {
            Some(failure) => failure.to_error(),
            None => crate::StoreError::Closed,
        }
    }
}
