//! Limits and settings: hub-wide defaults with per-device overrides.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How the delivery count grows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeliveryCountMode {
    /// Every delivery that ends without settlement counts: abandon and lock
    /// expiry (IoT Hub's 2018 rule, Courier's default: a device that crashes on
    /// a poison message must not loop on it).
    #[default]
    EveryDelivery,
    /// Only an explicit abandon counts; lock expiry redelivers until TTL
    /// (IoT Hub's current documented rule).
    AbandonOnly,
}

/// The limits that govern one device's C2D queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueLimits {
    /// Messages held at most (Enqueued + Invisible). IoT Hub: 50.
    pub max_queue_depth: u32,
    /// Largest message in bytes, body and properties. IoT Hub: 64 KiB.
    pub max_message_size: u32,
    /// TTL when the sender sets no expiry. IoT Hub: 1 h.
    pub default_ttl: Duration,
    /// Largest TTL a sender may ask for. IoT Hub: 48 h.
    pub max_ttl: Duration,
    /// Deliveries before dead-lettering, 1–100. IoT Hub: 10.
    pub max_delivery_count: u32,
    /// How long a received message stays locked. IoT Hub: 60 s.
    pub lock_timeout: Duration,
}

impl Default for QueueLimits {
    fn default() -> Self {
        QueueLimits {
            max_queue_depth: 50,
            max_message_size: 64 * 1024,
            default_ttl: Duration::from_secs(3600),
            max_ttl: Duration::from_secs(48 * 3600),
            max_delivery_count: 10,
            lock_timeout: Duration::from_secs(60),
        }
    }
}

/// Per-device overrides of the hub-wide limits; `None` keeps the hub's value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LimitOverrides {
    /// Overrides `max_queue_depth`.
    pub max_queue_depth: Option<u32>,
    /// Overrides `max_message_size`.
    pub max_message_size: Option<u32>,
    /// Overrides `default_ttl`.
    pub default_ttl: Option<Duration>,
    /// Overrides `max_ttl`.
    pub max_ttl: Option<Duration>,
    /// Overrides `max_delivery_count`.
    pub max_delivery_count: Option<u32>,
    /// Overrides `lock_timeout`.
    pub lock_timeout: Option<Duration>,
}

impl LimitOverrides {
    /// Whether nothing is overridden.
    pub fn is_empty(&self) -> bool {
        *self == LimitOverrides::default()
    }

    /// The hub's limits with these overrides applied.
    pub fn apply_to(&self, hub: &QueueLimits) -> QueueLimits {
        QueueLimits {
            max_queue_depth: self.max_queue_depth.unwrap_or(hub.max_queue_depth),
            max_message_size: self.max_message_size.unwrap_or(hub.max_message_size),
            default_ttl: self.default_ttl.unwrap_or(hub.default_ttl),
            max_ttl: self.max_ttl.unwrap_or(hub.max_ttl),
            max_delivery_count: self.max_delivery_count.unwrap_or(hub.max_delivery_count),
            lock_timeout: self.lock_timeout.unwrap_or(hub.lock_timeout),
        }
    }

    /// Checks ranges: delivery count 1–100, positive sizes and durations,
    /// default TTL not above the device's maximum.
    pub fn validate(&self, hub: &QueueLimits) -> Result<(), String> {
        if let Some(n) = self.max_delivery_count {
            if !(1..=100).contains(&n) {
                return Err(format!("maxDeliveryCount must be 1 to 100, got {n}"));
            }
        }
        if self.max_queue_depth == Some(0) {
            return Err("maxQueueDepth must be at least 1".into());
        }
        if self.max_message_size == Some(0) {
            return Err("maxMessageSizeBytes must be at least 1".into());
        }
        for (name, d) in [
            ("defaultTtl", self.default_ttl),
            ("maxTtl", self.max_ttl),
            ("lockTimeout", self.lock_timeout),
        ] {
            if d == Some(Duration::ZERO) {
                return Err(format!("{name} must be positive"));
            }
        }
        let effective = self.apply_to(hub);
        if effective.default_ttl > effective.max_ttl {
            return Err("default TTL exceeds the maximum TTL".into());
        }
        Ok(())
    }
}

/// Settings of the hub-wide feedback queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedbackSettings {
    /// How long a feedback batch waits to be received. IoT Hub: 1 h.
    pub ttl: Duration,
    /// Deliveries of a batch before it is dropped. IoT Hub: 10.
    pub max_delivery_count: u32,
    /// How long a received batch stays locked. IoT Hub: 60 s.
    pub lock_timeout: Duration,
    /// How long the first pending record waits for others before a batch is
    /// closed. IoT Hub: 15 s; Courier: well under a second.
    pub batch_window: Duration,
    /// Records per batch at most. IoT Hub: 64.
    pub max_batch_records: usize,
}

impl Default for FeedbackSettings {
    fn default() -> Self {
        FeedbackSettings {
            ttl: Duration::from_secs(3600),
            max_delivery_count: 10,
            lock_timeout: Duration::from_secs(60),
            batch_window: Duration::from_millis(500),
            max_batch_records: 64,
        }
    }
}

/// Everything hub-wide that the state machine consults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HubSettings {
    /// The hub name (first label of the host name): the `userId` of feedback.
    pub hub_name: String,
    /// Default limits of every device queue.
    pub limits: QueueLimits,
    /// How delivery counts grow.
    pub delivery_count_mode: DeliveryCountMode,
    /// The feedback queue's settings.
    pub feedback: FeedbackSettings,
}

impl Default for HubSettings {
    fn default() -> Self {
        HubSettings {
            hub_name: "localhost".into(),
            limits: QueueLimits::default(),
            delivery_count_mode: DeliveryCountMode::default(),
            feedback: FeedbackSettings::default(),
        }
    }
}
