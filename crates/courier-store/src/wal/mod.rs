//! [`WalStore`]: the embedded write-ahead log backend.
//!
//! One writer thread owns the files. Callers hand it requests over a channel and wait on
//! a [`Commit`]; the thread turns everything queued into one write and one sync (group
//! commit). Recovery (`recovery.rs`) runs in `open`, before the thread starts.

mod files;
mod recovery;
mod writer;

#[cfg(test)]
mod fault_tests;

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, OnceLock, PoisonError};
use std::thread::JoinHandle;

use tokio::sync::oneshot;

use crate::format::{frame_encoded_len, record_encoded_len, MAX_FRAME_RECORDS_BYTES};
use crate::{Commit, Record, ReplayError, ReplayStats, Store, StoreError};
use recovery::ReplayPlan;
use writer::{Request, Writer};

/// How the writer makes a write durable before acknowledging it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SyncMode {
    /// `fdatasync` after every group write, and fsync of files and the directory where
    /// the protocol needs it. The only mode that keeps acknowledged data across a crash.
    #[default]
    Data,
    /// No syncs at all: acknowledged data survives a process exit but not a power loss.
    /// For tests and benchmarks only.
    None,
}

/// Tuning of a [`WalStore`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalOptions {
    /// Size at which the writer starts a new segment file (a segment may overrun it by
    /// one group write).
    pub segment_bytes: u64,
    /// Cap on the bytes one group write collects; a single larger batch is written alone.
    pub max_batch_bytes: usize,
    /// Zeros kept written ahead of the next frame in the current segment (0: none), so
    /// that a group's `fdatasync` does not also have to make the file's growth durable.
    pub preallocate_bytes: u64,
    /// How writes are made durable.
    pub sync: SyncMode,
}

impl Default for WalOptions {
    fn default() -> Self {
        Self {
            segment_bytes: 64 * 1024 * 1024,
            max_batch_bytes: 4 * 1024 * 1024,
            preallocate_bytes: 1024 * 1024,
            sync: SyncMode::Data,
        }
    }
}

/// Counters of the writer's work since `open`, for tests, benchmarks and metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalStats {
    /// Append batches made durable.
    pub batches: u64,
    /// Records in those batches.
    pub records: u64,
    /// Group writes (each holds one or more batches).
    pub writes: u64,
    /// `fdatasync` calls that made group writes durable (zero with [`SyncMode::None`]).
    pub syncs: u64,
    /// Bytes of frames written to segments.
    pub bytes_written: u64,
    /// Checkpoints completed.
    pub checkpoints: u64,
    /// Segment files started because the previous one was full.
    pub rotations: u64,
    /// Top-ups of the zeros preallocated ahead of the next frame.
    pub preallocations: u64,
}

/// The embedded write-ahead log store; see `DESIGN.md` for its format and protocol.
///
/// Dropping it (or [`WalStore::close`]) blocks until the writer thread has answered every
/// queued request and exited, so do it off the async hot path.
pub struct WalStore {
    /// Held for the store's lifetime: an exclusive lock on `LOCK`, so that a
    /// second process cannot append to (or truncate) the same files.
    _lock: std::fs::File,
    /// `None` once closing started; dropping it tells the writer to drain and exit.
    requests: Option<mpsc::Sender<Request>>,
    writer: Option<JoinHandle<()>>,
    shared: Arc<Shared>,
    /// What recovery validated at `open`, consumed by the one `replay`.
    replay_plan: Mutex<Option<ReplayPlan>>,
}

/// Takes the exclusive lock on `dir/LOCK`, creating the directory if needed.
fn lock_dir(dir: &Path) -> Result<std::fs::File, StoreError> {
    let io = |op: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| StoreError::Io { op, path, source }
    };
    std::fs::create_dir_all(dir).map_err(io("create directory", dir))?;
    let path = dir.join("LOCK");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(io("open lock file", &path))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Locked { path }),
        Err(std::fs::TryLockError::Error(source)) => Err(StoreError::Io {
            op: "lock",
            path,
            source,
        }),
    }
}

impl WalStore {
    /// Opens (or creates) the store in `dir`: recovers the files, cuts a torn tail off the
    /// last segment and starts the writer thread.
    pub fn open(dir: &Path, options: WalOptions) -> Result<Self, StoreError> {
        if options.max_batch_bytes == 0 {
            return Err(StoreError::InvalidOptions(
                "max_batch_bytes must be above zero",
            ));
        }
        if options.segment_bytes == 0 {
            return Err(StoreError::InvalidOptions(
                "segment_bytes must be above zero",
            ));
        }
        let lock = lock_dir(dir)?;
        let recovered = recovery::recover(dir, options.sync)?;
        let shared = Arc::new(Shared::new(recovered.log_bytes));
        let writer = Writer::new(
            dir.to_path_buf(),
            &options,
            Arc::clone(&shared),
            recovered.tail,
            recovered.next_position,
        );
        // Unbounded on purpose: `append` must never block the engine's async task. The
        // engine bounds what is in flight by awaiting its Commits.
        let (requests, inbox) = mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("courier-wal-writer".to_owned())
            .spawn(move || writer.run(inbox))
            .map_err(|source| StoreError::Io {
                op: "spawn writer thread for",
                path: dir.to_path_buf(),
                source,
            })?;
        Ok(Self {
            _lock: lock,
            requests: Some(requests),
            writer: Some(handle),
            shared,
            replay_plan: Mutex::new(Some(recovered.plan)),
        })
    }

    /// Lets the writer finish everything queued, joins it, and reports whether the store
    /// had stopped on an I/O failure.
    pub fn close(mut self) -> Result<(), StoreError> {
        self.shutdown()
    }

    /// A snapshot of the writer's counters.
    pub fn stats(&self) -> WalStats {
        let counters = &self.shared.counters;
        let get = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        WalStats {
            batches: get(&counters.batches),
            records: get(&counters.records),
            writes: get(&counters.writes),
            syncs: get(&counters.syncs),
            bytes_written: get(&counters.bytes_written),
            checkpoints: get(&counters.checkpoints),
            rotations: get(&counters.rotations),
            preallocations: get(&counters.preallocations),
        }
    }

    fn shutdown(&mut self) -> Result<(), StoreError> {
        // Dropping the sender ends the writer's loop after it has answered every request
        // already queued: mpsc delivers queued messages before reporting disconnection.
        self.requests = None;
        if let Some(handle) = self.writer.take() {
            if handle.join().is_err() {
                return Err(StoreError::Closed);
            }
        }
        match self.shared.failure.get() {
            Some(failure) => Err(failure.to_error()),
            None => Ok(()),
        }
    }

    fn submit(&self, request: impl FnOnce(Reply) -> Request) -> Commit {
        // Fast refusal after a failure; the writer refuses anything that races past this.
        if let Some(failure) = self.shared.failure.get() {
            return Commit::ready(Err(failure.to_error()));
        }
        let (reply, receiver) = oneshot::channel();
        match &self.requests {
            // If the writer is gone the request (and its reply sender) is dropped, which
            // resolves the Commit with `Closed`.
            Some(requests) => drop(requests.send(request(reply))),
            None => return Commit::ready(Err(StoreError::Closed)),
        }
        Commit::pending(receiver)
    }
}

impl Store for WalStore {
    fn append(&self, records: Vec<Record>) -> Commit {
        let bytes = frame_encoded_len(&records);
        if bytes > MAX_FRAME_RECORDS_BYTES {
            return Commit::ready(Err(StoreError::BatchTooLarge {
                bytes,
                limit: MAX_FRAME_RECORDS_BYTES,
            }));
        }
        self.submit(|reply| Request::Append { records, reply })
    }

    fn checkpoint(&self, snapshot: Vec<Record>) -> Commit {
        // The snapshot is split over many frames, but each record must fit in one.
        let largest = snapshot.iter().map(record_encoded_len).max().unwrap_or(0);
        if largest > MAX_FRAME_RECORDS_BYTES {
            return Commit::ready(Err(StoreError::BatchTooLarge {
                bytes: largest,
                limit: MAX_FRAME_RECORDS_BYTES,
            }));
        }
        self.submit(|reply| Request::Checkpoint { snapshot, reply })
    }

    fn replay(
        &self,
        visit: &mut dyn FnMut(Record) -> Result<(), ReplayError>,
    ) -> Result<ReplayStats, StoreError> {
        let plan = self
            .replay_plan
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .ok_or(StoreError::AlreadyReplayed)?;
        recovery::replay(&plan, visit)
    }

    fn log_bytes_since_checkpoint(&self) -> u64 {
        self.shared.log_bytes.load(Ordering::Relaxed)
    }
}

impl Drop for WalStore {
    fn drop(&mut self) {
        if let Err(error) = self.shutdown() {
            tracing::error!(%error, "write-ahead log closed after a failure");
        }
    }
}

impl std::fmt::Debug for WalStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WalStore")
            .field("stats", &self.stats())
            .field("failed", &self.shared.failure.get().is_some())
            .finish_non_exhaustive()
    }
}

/// Where the writer sends an operation's outcome.
pub(crate) type Reply = oneshot::Sender<Result<crate::CommitInfo, StoreError>>;

/// State the writer thread publishes to the handles.
pub(crate) struct Shared {
    /// Set once, by the writer, on the first failed write or sync.
    failure: OnceLock<Failure>,
    log_bytes: AtomicU64,
    counters: Counters,
    #[cfg(test)]
    faults: fault_tests::Faults,
}

impl Shared {
    fn new(log_bytes: u64) -> Self {
        Self {
            failure: OnceLock::new(),
            log_bytes: AtomicU64::new(log_bytes),
            counters: Counters::default(),
            #[cfg(test)]
            faults: fault_tests::Faults::default(),
        }
    }

    /// In tests, fails the given step when a test armed it; otherwise does nothing.
    #[cfg(not(test))]
    #[inline(always)]
    fn inject(&self, _point: FaultPoint) -> io::Result<()> {
        Ok(())
    }

    #[cfg(test)]
    fn inject(&self, point: FaultPoint) -> io::Result<()> {
        self.faults.hit(point)
    }
}

/// Steps of the writer a test can make fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum FaultPoint {
    /// A group write (half the bytes are written first, like a torn write).
    Write = 0,
    /// The `fdatasync` after a group write.
    Sync = 1,
    /// Writing a checkpoint file.
    Checkpoint = 2,
}

#[derive(Default)]
struct Counters {
    batches: AtomicU64,
    records: AtomicU64,
    writes: AtomicU64,
    syncs: AtomicU64,
    bytes_written: AtomicU64,
    checkpoints: AtomicU64,
    rotations: AtomicU64,
    preallocations: AtomicU64,
}

/// The I/O failure that stopped the store.
#[derive(Clone, Debug)]
pub(crate) struct Failure {
    op: &'static str,
    path: PathBuf,
    source: Arc<io::Error>,
}

impl Failure {
    fn to_error(&self) -> StoreError {
        StoreError::Failed {
            op: self.op,
            path: self.path.clone(),
            source: Arc::clone(&self.source),
        }
    }
}

/// A failed file operation with what it acted on.
#[derive(Debug)]
pub(crate) struct IoFailure {
    op: &'static str,
    path: PathBuf,
    source: io::Error,
}

impl IoFailure {
    fn into_failure(self) -> Failure {
        Failure {
            op: self.op,
            path: self.path,
            source: Arc::new(self.source),
        }
    }
}

impl From<IoFailure> for StoreError {
    fn from(failure: IoFailure) -> Self {
        StoreError::Io {
            op: failure.op,
            path: failure.path,
            source: failure.source,
        }
    }
}

/// Attaches the operation and path to an `io::Result`.
trait IoContext<T> {
    fn context(self, op: &'static str, path: &Path) -> Result<T, IoFailure>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn context(self, op: &'static str, path: &Path) -> Result<T, IoFailure> {
        self.map_err(|source| IoFailure {
            op,
            path: path.to_path_buf(),
            source,
        })
    }
}
