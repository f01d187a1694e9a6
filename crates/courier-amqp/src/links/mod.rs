//! One task per attached link. Each ends when its link or connection ends,
//! when the server shuts down, or when the token that authorized it lapses
//! without renewal (then the link is detached with `amqp:unauthorized-access`).

use std::sync::Arc;
use std::time::Duration;

use courier_core::{Clock as _, ErrorCode, Timestamp};
use courier_hub::SystemClock;
use fe2o3_amqp::acceptor::LinkEndpoint;
use fe2o3_amqp::types::definitions::{self, AmqpError, ErrorCondition, LinkError};
use fe2o3_amqp::types::primitives::Symbol;
use tokio::sync::watch;

use crate::connection::{Conn, Lease, Route};

mod cbs;
mod device;
mod feedback;
mod service;
mod telemetry;

pub(crate) fn spawn(
    conn: Arc<Conn>,
    route: Route,
    link: LinkEndpoint,
    stop: watch::Receiver<bool>,
) {
    match (route, link) {
        (Route::CbsRequests, LinkEndpoint::Receiver(r)) => {
            tokio::spawn(cbs::requests(conn, r, stop));
        }
        (Route::CbsReplies, LinkEndpoint::Sender(s)) => {
            tokio::spawn(cbs::replies(conn, s, stop));
        }
        (Route::ServiceSend(lease), LinkEndpoint::Receiver(r)) => {
            tokio::spawn(service::run(conn, r, lease, stop));
        }
        (Route::Feedback(lease), LinkEndpoint::Sender(s)) => {
            tokio::spawn(feedback::run(conn, s, lease, stop));
        }
        (Route::DeviceBound(id, lease), LinkEndpoint::Sender(s)) => {
            tokio::spawn(device::run(conn, s, id, lease, stop));
        }
        (Route::DeviceEvents(id, lease), LinkEndpoint::Receiver(r)) => {
            tokio::spawn(telemetry::run(conn, r, id, lease, stop));
        }
        // The route follows the peer's role, and fe2o3 answers it with the
        // opposite endpoint, so no other pairing can occur.
        _ => debug_assert!(false, "link endpoint does not match its route"),
    }
}

/// Resolves when the lease's need has no valid grant left; a renewal on
/// `$cbs` before then extends it.
pub(crate) async fn lapsed(conn: &Conn, mut lease: Lease) {
    loop {
        let left = lease.until.as_millis() - SystemClock.now().as_millis();
        let left = u64::try_from(left).unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(left)).await;
        match conn.identities.valid_until(&lease.need, SystemClock.now()) {
            Some(until) => lease.until = until,
            None => return,
        }
    }
}

/// The detach error for a lapsed token.
pub(crate) fn token_lapsed() -> definitions::Error {
    definitions::Error::new(
        AmqpError::UnauthorizedAccess,
        "IotHubUnauthorizedAccess (401002): the token that authorized this link expired; put a new one on $cbs before it lapses".to_owned(),
        None,
    )
}

/// Resolves once the server is shutting down.
pub(crate) async fn stopping(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// IoT Hub's refusal as an AMQP error: the condition the SDKs map (wire
/// spec §3.7) and `Name (code): text` as description.
pub(crate) fn hub_error(code: ErrorCode, text: &str) -> definitions::Error {
    let custom = |s: &str| ErrorCondition::Custom(Symbol::from(s));
    let condition = match code {
        ErrorCode::DeviceNotFound | ErrorCode::NotFound => AmqpError::NotFound.into(),
        ErrorCode::DeviceMaximumQueueDepthExceeded => AmqpError::ResourceLimitExceeded.into(),
        ErrorCode::MessageTooLarge => LinkError::MessageSizeExceeded.into(),
        ErrorCode::IotHubUnauthorizedAccess => AmqpError::UnauthorizedAccess.into(),
        ErrorCode::ArgumentInvalid | ErrorCode::InvalidMessageExpiryTime => {
            custom("com.microsoft:argument-error")
        }
        ErrorCode::PreconditionFailed => custom("com.microsoft:precondition-failed"),
        ErrorCode::DeviceMessageLockLost => custom("com.microsoft:message-lock-lost"),
        ErrorCode::ServiceUnavailable => custom("com.microsoft:timeout"),
        ErrorCode::DeviceAlreadyExists | ErrorCode::ServerError => AmqpError::InternalError.into(),
    };
    definitions::Error::new(
        condition,
        format!("{} ({}): {text}", code.name(), code.number()),
        None,
    )
}

/// Millisecond clock reading as a tokio deadline.
pub(crate) fn deadline(at: Timestamp) -> tokio::time::Instant {
    let left = at.as_millis() - SystemClock.now().as_millis();
    tokio::time::Instant::now() + Duration::from_millis(u64::try_from(left).unwrap_or(0))
}
