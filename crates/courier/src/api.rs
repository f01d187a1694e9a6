//! Courier's own hub-level API types (`GET /courier/hub`), which IoT Hub
//! does not have and so the SDK (`courier-client`) does not model.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// What `GET /courier/hub` reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct HubInfo {
    /// The hub's host name.
    pub(crate) host_name: String,
    /// Courier version.
    pub(crate) version: String,
    /// Registered devices.
    pub(crate) device_count: u64,
    /// Messages queued across devices.
    pub(crate) queued_messages: u64,
    /// Feedback records not yet delivered.
    pub(crate) pending_feedback_records: u64,
    /// Hub-wide limits as the hub names them.
    #[serde(default)]
    pub(crate) limits: Map<String, Value>,
}
