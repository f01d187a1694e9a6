//! IoT Hub's error codes and the hub's typed errors.
//!
//! The numbers are IoT Hub's, because shipped clients and scripts match on
//! them; a code once given a meaning here is never reused for another.

use crate::ids::DeviceId;

/// An IoT Hub error code: a six-digit number whose first three digits are the
/// HTTP status, and a name that the SDKs match on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// 400004: an argument is malformed.
    ArgumentInvalid,
    /// 401002: the caller is not authorized.
    IotHubUnauthorizedAccess,
    /// 403004: the device's C2D queue is full.
    DeviceMaximumQueueDepthExceeded,
    /// 403009: the message's expiry is in the past or beyond the maximum TTL.
    InvalidMessageExpiryTime,
    /// 404000: no such endpoint.
    NotFound,
    /// 404001: the device is not registered (or is disabled, for sends).
    DeviceNotFound,
    /// 409001: a device with that id exists.
    DeviceAlreadyExists,
    /// 412001: an `If-Match` etag did not match.
    PreconditionFailed,
    /// 412002: the lock token is unknown or its lock expired.
    DeviceMessageLockLost,
    /// 413001: the message exceeds the size limit.
    MessageTooLarge,
    /// 500001: the hub failed internally.
    ServerError,
    /// 503000: the hub is shutting down or overloaded.
    ServiceUnavailable,
}

impl ErrorCode {
    /// The six-digit IoT Hub number.
    pub fn number(self) -> u32 {
        match self {
            ErrorCode::ArgumentInvalid => 400004,
            ErrorCode::IotHubUnauthorizedAccess => 401002,
            ErrorCode::DeviceMaximumQueueDepthExceeded => 403004,
            ErrorCode::InvalidMessageExpiryTime => 403009,
            ErrorCode::NotFound => 404000,
            ErrorCode::DeviceNotFound => 404001,
            ErrorCode::DeviceAlreadyExists => 409001,
            ErrorCode::PreconditionFailed => 412001,
            ErrorCode::DeviceMessageLockLost => 412002,
            ErrorCode::MessageTooLarge => 413001,
            ErrorCode::ServerError => 500001,
            ErrorCode::ServiceUnavailable => 503000,
        }
    }

    /// The name SDKs match on (`iothub-errorcode`, `ErrorCode:{name}`).
    pub fn name(self) -> &'static str {
        match self {
            ErrorCode::ArgumentInvalid => "ArgumentInvalid",
            ErrorCode::IotHubUnauthorizedAccess => "IotHubUnauthorizedAccess",
            ErrorCode::DeviceMaximumQueueDepthExceeded => "DeviceMaximumQueueDepthExceeded",
            ErrorCode::InvalidMessageExpiryTime => "InvalidMessageExpiryTime",
            ErrorCode::NotFound => "NotFound",
            ErrorCode::DeviceNotFound => "DeviceNotFound",
            ErrorCode::DeviceAlreadyExists => "DeviceAlreadyExists",
            ErrorCode::PreconditionFailed => "PreconditionFailed",
            ErrorCode::DeviceMessageLockLost => "DeviceMessageLockLost",
            ErrorCode::MessageTooLarge => "MessageTooLarge",
            ErrorCode::ServerError => "ServerError",
            ErrorCode::ServiceUnavailable => "ServiceUnavailable",
        }
    }

    /// The HTTP status: the first three digits of the number.
    pub fn http_status(self) -> u16 {
        u16::try_from(self.number() / 1000).unwrap_or(500)
    }
}

/// Why the hub refused an operation. Every case carries its IoT Hub code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HubError {
    /// The device is not in the registry.
    #[error("device '{0}' is not registered")]
    DeviceNotFound(DeviceId),
    /// The device exists but is disabled.
    #[error("device '{0}' is disabled")]
    DeviceDisabled(DeviceId),
    /// The device's queue holds as many messages as its limit allows.
    #[error("the C2D queue of device '{device}' is full ({depth} messages); complete, reject or purge messages, or raise max queue depth")]
    QueueFull {
        /// The device.
        device: DeviceId,
        /// The depth limit reached.
        depth: u32,
    },
    /// The message is over the size limit.
    #[error("message is {size} bytes (body and properties), over the limit of {max} bytes")]
    MessageTooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: u32,
    },
    /// The requested expiry is not acceptable.
    #[error("invalid message expiry: {0}")]
    InvalidExpiry(String),
    /// The lock token names no lock held now.
    #[error("the lock token is unknown or its lock has expired; the message may have been redelivered or settled")]
    LockLost,
    /// Create refused: the id is taken.
    #[error("device '{0}' already exists")]
    DeviceAlreadyExists(DeviceId),
    /// The caller's etag is stale.
    #[error("etag mismatch for device '{device}': expected {expected}, current is {current}")]
    PreconditionFailed {
        /// The device.
        device: DeviceId,
        /// What the caller sent.
        expected: String,
        /// What the registry has.
        current: String,
    },
    /// An argument is malformed.
    #[error("{0}")]
    InvalidArgument(String),
}

impl HubError {
    /// The IoT Hub error code for this refusal.
    pub fn code(&self) -> ErrorCode {
        match self {
            // IoT Hub answers sends to a disabled device with 404001 too
            // ("not registered or is disabled"); the text says which.
            HubError::DeviceNotFound(_) | HubError::DeviceDisabled(_) => ErrorCode::DeviceNotFound,
            HubError::QueueFull { .. } => ErrorCode::DeviceMaximumQueueDepthExceeded,
            HubError::MessageTooLarge { .. } => ErrorCode::MessageTooLarge,
            HubError::InvalidExpiry(_) => ErrorCode::InvalidMessageExpiryTime,
            HubError::LockLost => ErrorCode::DeviceMessageLockLost,
            HubError::DeviceAlreadyExists(_) => ErrorCode::DeviceAlreadyExists,
            HubError::PreconditionFailed { .. } => ErrorCode::PreconditionFailed,
            HubError::InvalidArgument(_) => ErrorCode::ArgumentInvalid,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_status_is_the_first_three_digits() {
        assert_eq!(
            ErrorCode::DeviceMaximumQueueDepthExceeded.http_status(),
            403
        );
        assert_eq!(ErrorCode::DeviceMessageLockLost.http_status(), 412);
        assert_eq!(ErrorCode::MessageTooLarge.http_status(), 413);
        assert_eq!(ErrorCode::ServiceUnavailable.http_status(), 503);
    }
}
