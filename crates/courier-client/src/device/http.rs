//! PLACEHOLDER: the http device transport (being written).

use super::session::{Session, SessionEnd};
use crate::ClientError;

/// Serves one connection (see `Session` for the contract).
pub(crate) async fn run(session: Session<'_>) -> SessionEnd {
    let _ = session.connection;
    SessionEnd::Failed(ClientError::Protocol(
        "http transport not written yet".into(),
    ))
}
