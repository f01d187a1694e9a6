//! Delivery feedback: the records the back end receives about its messages.

use serde::{Deserialize, Serialize};

use crate::ids::DeviceId;
use crate::queue::Outcome;
use crate::time::Timestamp;

/// One feedback record, as IoT Hub's feedback JSON carries it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedbackRecord {
    /// The message's `messageId`; empty on the wire when the sender set none.
    pub original_message_id: Option<String>,
    /// The device the message was for.
    pub device_id: DeviceId,
    /// The device's generation when the outcome happened.
    pub device_generation_id: String,
    /// When the outcome happened (IoT Hub's `enqueuedTimeUtc` of the record).
    pub enqueued_time_utc: Timestamp,
    /// The outcome (`statusCode`, and `description` equal to its name).
    pub status: Outcome,
}

/// A batch of records: one message on the feedback queue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedbackBatch {
    /// The records, oldest first; never empty (the C SDK refuses empty batches).
    pub records: Vec<FeedbackRecord>,
}
