//! Connection status as the device SDKs report it: a status, the reason it
//! changed, and the error behind it.

use std::sync::Arc;

use crate::ClientError;

/// Whether a device client is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConnectionStatus {
    /// Connected and receiving.
    Connected,
    /// The connection was lost or is being renewed; the client is reconnecting.
    DisconnectedRetrying,
    /// Not connected and not trying: closed, refused, or out of retries.
    Disconnected,
}

/// Why the status changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StatusReason {
    /// The connection is up.
    ConnectionOk,
    /// The SAS token is about to expire (renewed by reconnecting) or has
    /// expired and cannot be renewed (a fixed token in the connection string).
    ExpiredSasToken,
    /// The hub refused the credentials, or the device is unknown or disabled.
    BadCredential,
    /// The retry policy gave up.
    RetryExpired,
    /// The hub could not be reached.
    NoNetwork,
    /// The connection broke or the hub broke the protocol.
    CommunicationError,
    /// The application closed the client.
    ClientClose,
}

/// One status change, as passed to the status handler.
#[derive(Debug, Clone)]
pub struct StatusChange {
    /// The new status.
    pub status: ConnectionStatus,
    /// Why it changed.
    pub reason: StatusReason,
    /// The error behind a disconnection, when there was one.
    pub error: Option<Arc<ClientError>>,
}

impl StatusChange {
    /// A change to `status` for `reason`, with no error.
    pub(crate) fn new(status: ConnectionStatus, reason: StatusReason) -> Self {
        Self {
            status,
            reason,
            error: None,
        }
    }

    /// Attaches the error behind the change.
    pub(crate) fn because(mut self, error: ClientError) -> Self {
        self.error = Some(Arc::new(error));
        self
    }
}

impl StatusReason {
    /// The reason a session that failed with `error` ended.
    pub(crate) fn for_error(error: &ClientError) -> Self {
        match error {
            ClientError::Unauthorized(_) | ClientError::NotFound(_) => Self::BadCredential,
            ClientError::Network(_) | ClientError::Tls(_) => Self::NoNetwork,
            _ => Self::CommunicationError,
        }
    }
}
