//! Courier's durable store: the [`Store`] trait the hub engine writes its events through,
//! and [`WalStore`], the default backend, an embedded write-ahead log with group commit.
//!
//! The hub engine is event-sourced: every state change is an opaque [`Record`] appended
//! here, and at startup the engine rebuilds its memory by [`Store::replay`]. The store
//! persists and never interprets: it must not parse payloads, know about devices or
//! messages, or decide anything about them. It also keeps no records in memory; the
//! engine owns the live state and hands it back as a checkpoint snapshot to compact.
//!
//! The on-disk layout, the commit protocol and why each step is crash-safe are in
//! `DESIGN.md` next to this crate's `Cargo.toml`.

mod commit;
mod error;
mod format;
mod wal;

use std::time::Duration;

pub use commit::Commit;
pub use error::{ReplayError, StoreError};
pub use wal::{SyncMode, WalOptions, WalStats, WalStore};

/// One opaque record; the store never interprets either field.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Record {
    /// The partition the record belongs to ("registry", "feedback", "d/{deviceId}", …);
    /// a JetStream backend maps it to a subject.
    pub stream: String,
    /// The engine's encoded event.
    pub payload: Vec<u8>,
}

/// What a durable append or checkpoint was given.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CommitInfo {
    /// Log position of the batch: strictly increasing, one per append or checkpoint call,
    /// and continuing across restarts.
    pub position: u64,
}

/// What a replay read.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReplayStats {
    /// Records visited, checkpoint records included.
    pub records: u64,
    /// Bytes of checkpoint and log files read.
    pub bytes: u64,
    /// Records that came from the checkpoint.
    pub checkpoint_records: u64,
    /// Bytes of a torn tail cut off the last segment when the store was opened (not
    /// counted when they were all zeros: the writer's preallocated space).
    pub truncated_tail_bytes: u64,
    /// Time the replay took, visitor included.
    pub elapsed: Duration,
}

/// A durable, ordered log of opaque record batches with snapshot compaction.
///
/// Every method's contract below is what an implementation must guarantee; the hub engine
/// relies on nothing else.
pub trait Store: Send + Sync + 'static {
    /// Queues `records` as one atomic batch and returns a [`Commit`] that resolves once it
    /// is durable.
    ///
    /// The batch is all or nothing after a crash. It is ordered after every earlier
    /// `append` or `checkpoint` call. The call never blocks on I/O. Implementations are
    /// expected to share one write and one sync among many concurrent batches (group
    /// commit); a batch's Commit resolves only after the sync that covers it.
    fn append(&self, records: Vec<Record>) -> Commit;

    /// Replaces all history appended before this call with `snapshot`, the caller's full
    /// live state as records.
    ///
    /// Ordered like `append`: records appended after this call stay in the log after the
    /// snapshot. The Commit resolves when the snapshot is durable and the history it
    /// replaces is no longer needed for recovery.
    fn checkpoint(&self, snapshot: Vec<Record>) -> Commit;

    /// Visits every durable record in order: the latest complete checkpoint, then the log
    /// after it.
    ///
    /// Called once at startup before any append. Stops and returns the visitor's error if
    /// `visit` fails. Damage to acknowledged data is an error, never a silent skip.
    fn replay(
        &self,
        visit: &mut dyn FnMut(Record) -> Result<(), ReplayError>,
    ) -> Result<ReplayStats, StoreError>;

    /// Log bytes appended since the last checkpoint, so the engine can decide when to
    /// compact.
    fn log_bytes_since_checkpoint(&self) -> u64;
}
