//! PLACEHOLDER: the mqtt device transport (being written).

use super::session::{Session, SessionEnd};
use crate::ClientError;

/// Serves one connection (see `Session` for the contract).
pub(crate) async fn run(session: Session<'_>, websocket: bool) -> SessionEnd {
    let _ = (session.connection, websocket);
    SessionEnd::Failed(ClientError::Protocol(
        "mqtt transport not written yet".into(),
    ))
}
