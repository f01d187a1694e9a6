//! C2D messages: what a sender submits, and what the hub keeps.

use serde::{Deserialize, Serialize};
use std::fmt;

use crate::time::Timestamp;

/// Which delivery outcomes produce a feedback record (`iothub-ack`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AckMode {
    /// No feedback (IoT Hub's default).
    #[default]
    None,
    /// Feedback on completion (`Success`).
    Positive,
    /// Feedback on dead-lettering (`Expired`, `DeliveryCountExceeded`, `Rejected`, `Purged`).
    Negative,
    /// Both.
    Full,
}

impl AckMode {
    /// The wire spelling: exactly `none|positive|negative|full` (the .NET SDK
    /// throws on anything else).
    pub fn as_str(self) -> &'static str {
        match self {
            AckMode::None => "none",
            AckMode::Positive => "positive",
            AckMode::Negative => "negative",
            AckMode::Full => "full",
        }
    }

    /// Parses the wire spelling, case-insensitively.
    pub fn parse(s: &str) -> Option<AckMode> {
        match s.to_ascii_lowercase().as_str() {
            "none" => Some(AckMode::None),
            "positive" => Some(AckMode::Positive),
            "negative" => Some(AckMode::Negative),
            "full" => Some(AckMode::Full),
            _ => None,
        }
    }

    /// Whether a completion produces a record.
    pub fn wants_positive(self) -> bool {
        matches!(self, AckMode::Positive | AckMode::Full)
    }

    /// Whether a dead-lettering produces a record.
    pub fn wants_negative(self) -> bool {
        matches!(self, AckMode::Negative | AckMode::Full)
    }
}

impl fmt::Display for AckMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The sender-settable properties of a C2D message.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageProperties {
    /// `messageId`.
    pub message_id: Option<String>,
    /// `correlationId`.
    pub correlation_id: Option<String>,
    /// `userId`.
    pub user_id: Option<String>,
    /// `contentType`.
    pub content_type: Option<String>,
    /// `contentEncoding`.
    pub content_encoding: Option<String>,
    /// Absolute expiry asked by the sender; the hub applies its default TTL when absent.
    pub expiry_time_utc: Option<Timestamp>,
    /// `ack`.
    pub ack: AckMode,
    /// Application properties, in the sender's order.
    pub application: Vec<(String, String)>,
}

impl MessageProperties {
    /// Bytes counted against the size limit besides the body: system property
    /// values and application property names and values, as IoT Hub counts.
    pub fn counted_size(&self) -> usize {
        let opt = |s: &Option<String>| s.as_ref().map_or(0, String::len);
        opt(&self.message_id)
            + opt(&self.correlation_id)
            + opt(&self.user_id)
            + opt(&self.content_type)
            + opt(&self.content_encoding)
            + self
                .application
                .iter()
                .map(|(k, v)| k.len() + v.len())
                .sum::<usize>()
    }
}

/// A C2D message as the hub stores it: properties and body. Hub-set facts
/// (sequence number, enqueued time, expiry, delivery count) live in the queue.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct C2dMessage {
    /// Sender-set properties.
    pub properties: MessageProperties,
    /// The body bytes.
    pub body: Vec<u8>,
}

impl C2dMessage {
    /// Size counted against the message size limit.
    pub fn counted_size(&self) -> usize {
        self.body.len() + self.properties.counted_size()
    }
}

/// The `to` address the hub sets on every C2D message.
pub fn devicebound_address(device_id: &str) -> String {
    format!("/devices/{device_id}/messages/devicebound")
}
