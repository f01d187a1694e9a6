//! The engine's errors: the core's refusals plus what the engine itself adds.

use courier_core::{ErrorCode, HubError};
use courier_store::StoreError;

/// Why an operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The core refused it (IoT Hub semantics).
    #[error(transparent)]
    Hub(#[from] HubError),
    /// The store could not make it durable; the hub stops accepting changes.
    #[error("storage failed: {0}")]
    Storage(String),
    /// The engine is stopping or stopped.
    #[error("the hub is shutting down")]
    ShuttingDown,
}

impl Error {
    /// The IoT Hub error code.
    pub fn code(&self) -> ErrorCode {
        match self {
            Error::Hub(e) => e.code(),
            Error::Storage(_) => ErrorCode::ServerError,
            Error::ShuttingDown => ErrorCode::ServiceUnavailable,
        }
    }
}

/// Why the hub could not start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The store failed while replaying.
    #[error("could not read the store: {0}")]
    Store(#[from] StoreError),
}
