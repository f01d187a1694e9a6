//! Errors of the store boundary.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file operation failed while opening or replaying; nothing was acknowledged by it.
    #[error("{op} {path}: {source}")]
    Io {
        /// The operation, e.g. "open" or "read".
        op: &'static str,
        /// The file or directory it acted on.
        path: PathBuf,
        /// What the OS said.
        #[source]
        source: io::Error,
    },
    /// Stored bytes that were acknowledged as durable do not read back; the store refuses
    /// to guess rather than silently dropping them.
    #[error("corrupt store file {path} at byte {offset}: {reason}")]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// Byte offset in that file where the damage starts.
        offset: u64,
        /// What did not check out.
        reason: String,
    },
    /// A write or sync failed earlier, so the store stopped accepting operations
    /// (fail-stop); this operation is not durable. Reopen the store to recover.
    #[error("store stopped after {op} failed on {path}: {source}")]
    Failed {
        /// The operation that failed, e.g. "fdatasync".
        op: &'static str,
        /// The file it acted on.
        path: PathBuf,
        /// What the OS said; shared by every operation the failure refused.
        #[source]
        source: Arc<io::Error>,
    },
    /// Another process holds the store's directory lock.
    #[error("the store in {path} is in use by another process (a second `courier serve` on the same data directory?)")]
    Locked {
        /// The lock file.
        path: PathBuf,
    },
    /// The store was closed, or its writer thread is gone.
    #[error("store is closed")]
    Closed,
    /// A batch (or one checkpoint record) is too large for one frame.
    #[error("batch of {bytes} bytes exceeds the {limit}-byte frame limit")]
    BatchTooLarge {
        /// Encoded size of the batch.
        bytes: u64,
        /// Largest encodable batch.
        limit: u64,
    },
    /// `replay` ran already; it reads the log as it was at `open` and only once.
    #[error("replay already ran on this store")]
    AlreadyReplayed,
    /// The options passed to `open` cannot work.
    #[error("invalid store options: {0}")]
    InvalidOptions(&'static str),
    /// The replay visitor returned an error and replay stopped.
    #[error(transparent)]
    Replay(#[from] ReplayError),
}

/// An error returned by a replay visitor to stop the replay.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("replay visitor failed: {0}")]
pub struct ReplayError(pub String);
