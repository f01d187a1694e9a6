//! What every sender of a run shares, whether it is a service sender of the
//! hub (`bench c2d`, `bench fill`) or a broker-mode publisher: the messages,
//! who takes the next one, when each is due, and where results go.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::mqtt::Counters;
use crate::stats::ErrorCounts;

/// The messages of one run and the state its senders share. Message `n`
/// goes to device `ids[n % len]`; senders take numbers from one counter.
#[derive(Clone)]
pub(crate) struct SendJob {
    /// Device ids.
    pub(crate) ids: Arc<[String]>,
    /// The next message number to take.
    pub(crate) next: Arc<AtomicU64>,
    /// Messages in the run.
    pub(crate) total: u64,
    /// Messages per second, or flat out.
    pub(crate) rate: Option<f64>,
    /// Message `n` is due at `start + n / rate`.
    pub(crate) start: Instant,
    /// Body timestamps count from here.
    pub(crate) epoch: Instant,
    /// Body size, at least the 8-byte timestamp.
    pub(crate) body_bytes: usize,
    /// Sent, received and completed counts.
    pub(crate) counters: Arc<Counters>,
    /// Errors by kind.
    pub(crate) errors: Arc<ErrorCounts>,
}

impl SendJob {
    /// Takes the next message number, or `None` once every message is taken.
    pub(crate) fn take(&self) -> Option<u64> {
        let number = self.next.fetch_add(1, Ordering::Relaxed);
        (number < self.total).then_some(number)
    }

    /// The device message `number` goes to.
    pub(crate) fn device(&self, number: u64) -> Option<&str> {
        let devices = u64::try_from(self.ids.len()).ok().filter(|&d| d > 0)?;
        let index = usize::try_from(number % devices).ok()?;
        self.ids.get(index).map(String::as_str)
    }

    /// When message `number` is due in rate mode; `None` flat out.
    pub(crate) fn due(&self, number: u64) -> Option<Instant> {
        self.rate
            .map(|rate| self.start + Duration::from_secs_f64(number as f64 / rate))
    }

    /// The timestamp a body carries now: nanoseconds since `epoch`.
    pub(crate) fn stamp(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }
}
