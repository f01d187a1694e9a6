//! Counters of the MQTT head.

use std::sync::atomic::{AtomicU64, Ordering};

/// A snapshot of the MQTT head's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MqttMetrics {
    /// Connections open now (authenticated or not).
    pub connections_open: u64,
    /// Connections accepted since start.
    pub connections_total: u64,
    /// C2D PUBLISHes written (redeliveries included).
    pub c2d_published: u64,
    /// C2D messages completed by PUBACK (or written at QoS 0).
    pub c2d_completed: u64,
    /// D2C PUBLISHes accepted.
    pub d2c_accepted: u64,
    /// Connections closed for a protocol violation (malformed, oversized, forbidden).
    pub protocol_errors: u64,
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) connections_open: AtomicU64,
    pub(crate) connections_total: AtomicU64,
    pub(crate) c2d_published: AtomicU64,
    pub(crate) c2d_completed: AtomicU64,
    pub(crate) d2c_accepted: AtomicU64,
    pub(crate) protocol_errors: AtomicU64,
}

impl Counters {
    pub(crate) fn add(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> MqttMetrics {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        MqttMetrics {
            connections_open: get(&self.connections_open),
            connections_total: get(&self.connections_total),
            c2d_published: get(&self.c2d_published),
            c2d_completed: get(&self.c2d_completed),
            d2c_accepted: get(&self.d2c_accepted),
            protocol_errors: get(&self.protocol_errors),
        }
    }
}
