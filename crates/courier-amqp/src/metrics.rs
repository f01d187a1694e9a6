//! Counters of the AMQP head.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of the AMQP head's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AmqpMetrics {
    /// Connections open now.
    pub connections_open: u64,
    /// Connections accepted since start.
    pub connections_total: u64,
    /// CBS put-token requests answered 200.
    pub cbs_tokens_accepted: u64,
    /// C2D messages queued from service send links.
    pub c2d_sent: u64,
    /// C2D transfers to devices (redeliveries included).
    pub c2d_delivered: u64,
    /// C2D messages completed by an Accepted disposition.
    pub c2d_completed: u64,
    /// Feedback batches transferred.
    pub feedback_delivered: u64,
    /// D2C telemetry transfers accepted.
    pub d2c_accepted: u64,
    /// Connections refused or closed for a protocol violation.
    pub protocol_errors: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) connections_open: AtomicU64,
    pub(crate) connections_total: AtomicU64,
    pub(crate) cbs_tokens_accepted: AtomicU64,
    pub(crate) c2d_sent: AtomicU64,
    pub(crate) c2d_delivered: AtomicU64,
    pub(crate) c2d_completed: AtomicU64,
    pub(crate) feedback_delivered: AtomicU64,
    pub(crate) d2c_accepted: AtomicU64,
    pub(crate) protocol_errors: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn add_n(counter: &AtomicU64, n: usize) {
        counter.fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    pub(crate) fn sub(counter: &AtomicU64) {
        counter.fetch_sub(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> AmqpMetrics {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        AmqpMetrics {
            connections_open: get(&self.connections_open),
            connections_total: get(&self.connections_total),
            cbs_tokens_accepted: get(&self.cbs_tokens_accepted),
            c2d_sent: get(&self.c2d_sent),
            c2d_delivered: get(&self.c2d_delivered),
            c2d_completed: get(&self.c2d_completed),
            feedback_delivered: get(&self.feedback_delivered),
            d2c_accepted: get(&self.d2c_accepted),
            protocol_errors: get(&self.protocol_errors),
        }
    }
}
