//! Delivery feedback: batches of records, one per message outcome, in IoT
//! Hub's JSON (the same body over AMQP and HTTPS).

use serde::{Deserialize, Serialize};

use crate::ClientError;

/// A locked batch of feedback records. Complete it (or abandon it) on the
/// [`FeedbackReceiver`](crate::FeedbackReceiver) that returned it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct FeedbackBatch {
    /// The batch's lock token, when the transport has one.
    pub lock_token: Option<String>,
    /// When the batch was queued (RFC 3339), when the transport says.
    pub enqueued_time_utc: Option<String>,
    /// Earlier deliveries of this batch, when the transport says.
    pub delivery_count: Option<u32>,
    /// The records.
    pub records: Vec<FeedbackRecord>,
    /// Which delivery to settle: transport-specific, private.
    #[serde(skip)]
    pub(crate) delivery: FeedbackDelivery,
}

impl FeedbackBatch {
    /// A batch from its records and delivery handle.
    pub(crate) fn new(records: Vec<FeedbackRecord>, delivery: FeedbackDelivery) -> Self {
        Self {
            lock_token: None,
            enqueued_time_utc: None,
            delivery_count: None,
            records,
            delivery,
        }
    }
}

/// Which delivery a feedback batch came in.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) enum FeedbackDelivery {
    /// Not settleable (a batch built by hand).
    #[default]
    None,
    /// AMQP: the delivery id on the feedback receiver link of one connection.
    Amqp {
        /// The receiving connection's number.
        connection: u64,
        /// The AMQP delivery id.
        delivery_id: u32,
    },
    /// HTTPS: the batch's lock token.
    Http {
        /// The lock token (unquoted ETag).
        lock_token: String,
    },
}

/// One message's outcome.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct FeedbackRecord {
    /// The message id it reports on (empty when the message had none).
    #[serde(default)]
    pub original_message_id: String,
    /// The device.
    #[serde(default)]
    pub device_id: String,
    /// The device's generation id.
    #[serde(default)]
    pub device_generation_id: String,
    /// When the outcome happened (RFC 3339).
    #[serde(default)]
    pub enqueued_time_utc: String,
    /// The outcome.
    pub status_code: FeedbackStatus,
    /// Free text.
    #[serde(default)]
    pub description: String,
}

/// A feedback outcome; unknown codes are kept rather than refused.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(from = "String", into = "String")]
pub enum FeedbackStatus {
    /// The device completed the message.
    Success,
    /// Its TTL passed first.
    Expired,
    /// It was delivered too often.
    DeliveryCountExceeded,
    /// The device rejected it.
    Rejected,
    /// A purge removed it.
    Purged,
    /// A code this client does not know.
    Other(String),
}

impl FeedbackStatus {
    /// The wire spelling.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Success => "Success",
            Self::Expired => "Expired",
            Self::DeliveryCountExceeded => "DeliveryCountExceeded",
            Self::Rejected => "Rejected",
            Self::Purged => "Purged",
            Self::Other(code) => code,
        }
    }
}

impl From<String> for FeedbackStatus {
    fn from(code: String) -> Self {
        match code.as_str() {
            "Success" => Self::Success,
            "Expired" => Self::Expired,
            "DeliveryCountExceeded" => Self::DeliveryCountExceeded,
            "Rejected" => Self::Rejected,
            "Purged" => Self::Purged,
            _ => Self::Other(code),
        }
    }
}

impl From<FeedbackStatus> for String {
    fn from(status: FeedbackStatus) -> Self {
        status.as_str().to_owned()
    }
}

/// Reads a feedback body: a JSON array of records.
pub(crate) fn parse_records(body: &[u8]) -> Result<Vec<FeedbackRecord>, ClientError> {
    serde_json::from_slice(body).map_err(|e| {
        ClientError::Protocol(format!("feedback body is not IoT Hub's feedback JSON: {e}"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn feedback_records_parse_known_and_unknown_status_codes() {
        let json = br#"[
          {"originalMessageId":"m1","deviceGenerationId":"g","deviceId":"d","enqueuedTimeUtc":"2026-11-23T06:06:56.889Z","statusCode":"Rejected","description":"Message rejected"},
          {"originalMessageId":"m2","deviceGenerationId":"g","deviceId":"d","enqueuedTimeUtc":"2026-11-23T06:06:56.889Z","statusCode":"Mystery","description":"?"}
        ]"#;
        let records = parse_records(json).unwrap();
        assert_eq!(records[0].status_code, FeedbackStatus::Rejected);
        assert_eq!(
            records[1].status_code,
            FeedbackStatus::Other("Mystery".into())
        );
        let back = serde_json::to_value(&records[0]).unwrap();
        assert_eq!(back["statusCode"], "Rejected");
        assert!(parse_records(b"{}").is_err());
    }
}
