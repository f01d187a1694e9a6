//! The system clock, injected into the core as its source of "now".

use courier_core::{Clock, Timestamp};
use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock time from the operating system.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let ms = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        Timestamp(ms)
    }
}
