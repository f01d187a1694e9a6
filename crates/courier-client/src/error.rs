//! The SDK's one error type: every failure a caller can act on differently
//! has its own variant (throttled, unauthorized, not found, queue full,
//! network fault, …), and hub refusals keep IoT Hub's code and name.

use std::time::Duration;

/// An error the hub answered with, in IoT Hub's vocabulary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name} ({code}): {message}")]
pub struct HubError {
    /// IoT Hub's numeric error code, e.g. 404001.
    pub code: u32,
    /// IoT Hub's error name, e.g. `DeviceNotFound`.
    pub name: String,
    /// The hub's explanation.
    pub message: String,
}

impl HubError {
    /// A hub error from its parts.
    pub fn new(code: u32, name: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code,
            name: name.into(),
            message: message.into(),
        }
    }

    /// The HTTP status class of the code (404001 → 404).
    pub fn status(&self) -> u32 {
        self.code / 1000
    }
}

/// Why an SDK call failed.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The connection string could not be used.
    #[error("invalid connection string: {0}")]
    ConnectionString(String),
    /// An argument or option is not acceptable (bad id, property, certificate, …).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The credentials were refused or lack the right (401/403 auth failures).
    #[error("unauthorized: {0}")]
    Unauthorized(HubError),
    /// The device (or other named resource) does not exist or is disabled (404).
    #[error("not found: {0}")]
    NotFound(HubError),
    /// The hub asks the caller to slow down (429, or IoT Hub's 503 busy).
    #[error("throttled: {error}")]
    Throttled {
        /// The hub's answer.
        error: HubError,
        /// How long the hub asked to wait, when it said.
        retry_after: Option<Duration>,
    },
    /// The device's queue is full (403004 DeviceMaximumQueueDepthExceeded).
    #[error("queue full: {0}")]
    QueueFull(HubError),
    /// The message is larger than the hub accepts (413001).
    #[error("message too large: {0}")]
    MessageTooLarge(HubError),
    /// The message's lock was lost: it expired, the connection that received it
    /// closed, or it was already settled (412002). The hub delivers it again.
    #[error("lock lost: {0}")]
    LockLost(HubError),
    /// A device with this id already exists (409001).
    #[error("already exists: {0}")]
    AlreadyExists(HubError),
    /// An If-Match precondition failed (412001).
    #[error("precondition failed: {0}")]
    PreconditionFailed(HubError),
    /// Any other refusal by the hub.
    #[error("hub error: {0}")]
    Hub(HubError),
    /// The hub could not be reached or the connection broke.
    #[error("network error: {0}")]
    Network(String),
    /// The TLS handshake or configuration failed.
    #[error("TLS error: {0}")]
    Tls(String),
    /// The operation did not finish within its timeout.
    #[error("{operation} timed out after {after:?}")]
    Timeout {
        /// What was being done.
        operation: &'static str,
        /// The timeout that passed.
        after: Duration,
    },
    /// The transport cannot do this (e.g. reject or abandon over MQTT).
    #[error("{operation} is not supported over {transport}: {why}")]
    NotSupported {
        /// What was asked.
        operation: &'static str,
        /// The transport in use.
        transport: &'static str,
        /// What to do instead.
        why: &'static str,
    },
    /// The peer broke the protocol or answered something unreadable.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A message handler is set, so `receive` cannot be used (or the reverse).
    #[error("a message handler is set; messages go to it, not to receive()")]
    HandlerSet,
    /// The operation was cancelled by the caller's token.
    #[error("cancelled")]
    Cancelled,
    /// The client was closed, or gave up reconnecting (see its last status).
    #[error("client closed: {0}")]
    Closed(String),
}

impl ClientError {
    /// True when retrying the same operation later may succeed (network
    /// faults, timeouts, throttling, server errors).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Network(_) | Self::Timeout { .. } | Self::Throttled { .. } => true,
            Self::Hub(e) => e.status() >= 500,
            _ => false,
        }
    }

    /// IoT Hub's numeric error code, when the hub gave one.
    pub fn code(&self) -> Option<u32> {
        self.hub_error().map(|e| e.code)
    }

    /// The hub's answer, when the hub refused the operation.
    pub fn hub_error(&self) -> Option<&HubError> {
        match self {
            Self::Unauthorized(e)
            | Self::NotFound(e)
            | Self::QueueFull(e)
            | Self::MessageTooLarge(e)
            | Self::LockLost(e)
            | Self::AlreadyExists(e)
            | Self::PreconditionFailed(e)
            | Self::Hub(e) => Some(e),
            Self::Throttled { error, .. } => Some(error),
            _ => None,
        }
    }

    /// A lock-lost error raised by the client itself (the delivering
    /// connection is gone), not by the hub.
    pub(crate) fn lock_lost_locally(why: &str) -> Self {
        Self::LockLost(HubError::new(412002, "DeviceMessageLockLost", why))
    }
}

impl From<HubError> for ClientError {
    /// Classifies a hub refusal by IoT Hub's code.
    fn from(e: HubError) -> Self {
        match e.code {
            401000..=401999 => Self::Unauthorized(e),
            403004 => Self::QueueFull(e),
            403002 | 429000..=429999 | 503003 => Self::Throttled {
                error: e,
                retry_after: None,
            },
            403000..=403999 if e.name.contains("Unauthorized") => Self::Unauthorized(e),
            404000..=404999 => Self::NotFound(e),
            409001 => Self::AlreadyExists(e),
            412001 => Self::PreconditionFailed(e),
            412002 => Self::LockLost(e),
            413000..=413999 => Self::MessageTooLarge(e),
            _ => Self::Hub(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hub_codes_map_to_the_variants_callers_match_on() {
        let kind = |code: u32, name: &str| ClientError::from(HubError::new(code, name, "x"));
        assert!(matches!(
            kind(401002, "IotHubUnauthorizedAccess"),
            ClientError::Unauthorized(_)
        ));
        assert!(matches!(
            kind(403004, "DeviceMaximumQueueDepthExceeded"),
            ClientError::QueueFull(_)
        ));
        assert!(matches!(
            kind(429001, "ThrottlingException"),
            ClientError::Throttled { .. }
        ));
        assert!(matches!(
            kind(404001, "DeviceNotFound"),
            ClientError::NotFound(_)
        ));
        assert!(matches!(
            kind(412002, "DeviceMessageLockLost"),
            ClientError::LockLost(_)
        ));
        assert!(matches!(
            kind(409001, "DeviceAlreadyExists"),
            ClientError::AlreadyExists(_)
        ));
        assert!(matches!(
            kind(413001, "MessageTooLarge"),
            ClientError::MessageTooLarge(_)
        ));
        assert!(matches!(kind(500001, "ServerError"), ClientError::Hub(_)));
        assert!(kind(500001, "ServerError").is_transient());
        assert!(kind(429001, "ThrottlingException").is_transient());
        assert!(!kind(401002, "IotHubUnauthorizedAccess").is_transient());
        assert_eq!(kind(404001, "DeviceNotFound").code(), Some(404001));
    }
}
