//! AMQP failures as typed [`ClientError`]s: the hub's error conditions (wire
//! spec §3.7) with IoT Hub's `Name (code): text` descriptions, CBS status
//! codes, and fe2o3's connection, session and link errors.

use std::time::Duration;

use fe2o3_amqp::connection::{ConnectionStopReason, Error as ConnectionError, OpenError};
use fe2o3_amqp::link::{
    DetachError, LinkStateError, ReceiverAttachError, RecvError, SendError, SenderAttachError,
    SessionStopReason,
};
use fe2o3_amqp::session::BeginError;
use fe2o3_amqp::transport::Error as TransportError;
use fe2o3_amqp::types::definitions::{self, ErrorCondition};
use fe2o3_amqp::types::messaging::Outcome;
use fe2o3_amqp::types::primitives::Symbol;

use crate::{ClientError, HubError};

/// The condition's symbol, e.g. `amqp:not-found`.
pub(crate) fn condition_name(condition: &ErrorCondition) -> String {
    match condition {
        ErrorCondition::AmqpError(e) => Symbol::from(e).0,
        ErrorCondition::ConnectionError(e) => Symbol::from(e).0,
        ErrorCondition::SessionError(e) => Symbol::from(e).0,
        ErrorCondition::LinkError(e) => Symbol::from(e).0,
        ErrorCondition::Custom(s) => s.0.clone(),
        #[allow(unreachable_patterns)]
        other => format!("{other:?}"),
    }
}

/// IoT Hub's code and name for a condition, when the description has none
/// (the table in wire spec §3.7).
fn condition_code(condition: &str) -> Option<(u32, &'static str)> {
    Some(match condition {
        "amqp:not-found" => (404001, "DeviceNotFound"),
        "amqp:unauthorized-access" => (401002, "IotHubUnauthorizedAccess"),
        "amqp:resource-limit-exceeded" => (403004, "DeviceMaximumQueueDepthExceeded"),
        "amqp:link:message-size-exceeded" => (413001, "MessageTooLarge"),
        "com.microsoft:argument-error" | "com.microsoft:argument-out-of-range" => {
            (400004, "ArgumentInvalid")
        }
        "com.microsoft:device-container-throttled" => (429001, "ThrottlingException"),
        "com.microsoft:quota-exceeded" => (403002, "IotHubQuotaExceeded"),
        "com.microsoft:precondition-failed" => (412001, "PreconditionFailed"),
        "com.microsoft:message-lock-lost" => (412002, "DeviceMessageLockLost"),
        "com.microsoft:iot-hub-suspended" => (403001, "IotHubSuspended"),
        "com.microsoft:timeout" => (503000, "ServiceUnavailable"),
        "amqp:internal-error" => (500001, "ServerError"),
        "amqp:link:stolen" => (409002, "LinkCreationConflict"),
        _ => return None,
    })
}

/// Reads IoT Hub's `Name (123456): text` description.
fn parse_description(description: &str) -> Option<HubError> {
    let (head, text) = match description.split_once("): ") {
        Some((head, text)) => (head, text),
        None => (description.strip_suffix(')')?, ""),
    };
    let (name, code) = head.rsplit_once(" (")?;
    let code: u32 = code.parse().ok()?;
    let plausible = (100_000..1_000_000).contains(&code)
        && !name.is_empty()
        && name.chars().all(|c| c.is_ascii_alphanumeric());
    plausible.then(|| HubError::new(code, name, text))
}

/// An AMQP error (a rejected outcome, a detach, an end or a close) as the
/// typed error the hub meant: its own code when the description carries
/// one, else the condition's.
pub(crate) fn amqp_error(error: &definitions::Error) -> ClientError {
    let condition = condition_name(&error.condition);
    let description = error.description.clone().unwrap_or_default();
    if let Some(hub) = parse_description(&description) {
        return hub.into();
    }
    match condition_code(&condition) {
        Some((code, name)) => {
            let message = if description.is_empty() {
                condition.clone()
            } else {
                description
            };
            HubError::new(code, name, message).into()
        }
        None => ClientError::Protocol(if description.is_empty() {
            format!("the hub answered {condition}")
        } else {
            format!("the hub answered {condition}: {description}")
        }),
    }
}

/// A send's outcome: `Ok` when accepted, else why the hub did not queue it.
pub(crate) fn outcome_result(outcome: Outcome) -> Result<(), ClientError> {
    match outcome {
        Outcome::Accepted(_) => Ok(()),
        Outcome::Rejected(rejected) => Err(match rejected.error {
            Some(error) => amqp_error(&error),
            None => ClientError::Hub(HubError::new(
                400000,
                "Rejected",
                "the hub rejected the message without saying why",
            )),
        }),
        // .NET reports a released send as cancelled; the message was not
        // queued, and trying again may succeed.
        Outcome::Released(_) | Outcome::Modified(_) => Err(ClientError::Hub(HubError::new(
            503000,
            "ServiceUnavailable",
            "the hub released the message without queuing it",
        ))),
        #[allow(unreachable_patterns)]
        other => Err(ClientError::Protocol(format!(
            "unexpected outcome {other:?}"
        ))),
    }
}

/// A CBS put-token answer's status as an error (`None` for 200 and 202).
pub(crate) fn cbs_status(status: i32, description: &str) -> Option<ClientError> {
    let text = if description.is_empty() {
        format!("CBS put-token answered {status}")
    } else {
        description.to_owned()
    };
    if let Some(hub) = parse_description(description) {
        if !(200..300).contains(&status) {
            return Some(hub.into());
        }
    }
    let (code, name) = match status {
        200 | 202 => return None,
        400 => (400004, "ArgumentInvalid"),
        401 => (401002, "IotHubUnauthorizedAccess"),
        // A CBS 403 is a token without the right, not a quota.
        403 => (403000, "IotHubUnauthorized"),
        404 => (404001, "DeviceNotFound"),
        429 => (429001, "ThrottlingException"),
        s => match u32::try_from(s) {
            Ok(s @ 100..=999) => (s * 1000, "CbsError"),
            _ => (500000, "CbsError"),
        },
    };
    Some(HubError::new(code, name, text).into())
}

/// Why a session stopped, as a connection-level error.
pub(crate) fn session_stopped(reason: &SessionStopReason) -> ClientError {
    match reason {
        SessionStopReason::EndedWithError(e) | SessionStopReason::RemoteEndedWithError(e) => {
            amqp_error(e)
        }
        SessionStopReason::ConnectionStopped(reason) => connection_stopped(reason),
        SessionStopReason::Ended | SessionStopReason::RemoteEnded => {
            ClientError::Network("the AMQP session ended".into())
        }
    }
}

/// Why a connection stopped. A broken socket shows as a local close here;
/// the connection's own outcome (see [`connection_error`]) says more.
pub(crate) fn connection_stopped(reason: &ConnectionStopReason) -> ClientError {
    match reason {
        ConnectionStopReason::ClosedWithError(e)
        | ConnectionStopReason::RemoteClosedWithError(e) => amqp_error(e),
        ConnectionStopReason::RemoteClosed => {
            ClientError::Network("the hub closed the AMQP connection".into())
        }
        ConnectionStopReason::Closed => ClientError::Network("the AMQP connection closed".into()),
    }
}

/// A connection's outcome as an error; `idle_timeout` is the connection's
/// own, for the error of a hub that went silent.
pub(crate) fn connection_error(error: &ConnectionError, idle_timeout: Duration) -> ClientError {
    match error {
        ConnectionError::TransportError(e) => transport_error(e, idle_timeout),
        ConnectionError::RemoteClosedWithError(e) => amqp_error(e),
        ConnectionError::RemoteClosed => {
            ClientError::Network("the hub closed the AMQP connection".into())
        }
        other => ClientError::Network(format!("the AMQP connection failed: {other}")),
    }
}

fn transport_error(error: &TransportError, idle_timeout: Duration) -> ClientError {
    match error {
        TransportError::IdleTimeoutElapsed => ClientError::Timeout {
            operation: "waiting for any frame from the hub (AMQP idle timeout)",
            after: idle_timeout,
        },
        TransportError::Io(e) => ClientError::Network(format!("AMQP connection: {e}")),
        other => ClientError::Protocol(format!("AMQP framing: {other}")),
    }
}

/// Opening the connection failed.
pub(crate) fn open_error(error: OpenError) -> ClientError {
    match error {
        OpenError::Io(e) => ClientError::Network(format!("AMQP open: {e}")),
        OpenError::TransportError(e) => transport_error(&e, Duration::ZERO),
        OpenError::SaslError { code, .. } => ClientError::Unauthorized(HubError::new(
            401002,
            "IotHubUnauthorizedAccess",
            format!("SASL refused ({code:?})"),
        )),
        OpenError::RemoteClosedWithError(e) => amqp_error(&e),
        OpenError::RemoteClosed => {
            ClientError::Network("the hub closed the AMQP connection while opening".into())
        }
        other => ClientError::Protocol(format!("AMQP open: {other}")),
    }
}

/// Beginning the session failed.
pub(crate) fn begin_error(error: BeginError) -> ClientError {
    match error {
        BeginError::RemoteEndedWithError(e) => amqp_error(&e),
        BeginError::ConnectionStopped(reason) => connection_stopped(&reason),
        other => ClientError::Network(format!("AMQP begin: {other}")),
    }
}

/// Attaching a sender failed.
pub(crate) fn sender_attach_error(error: SenderAttachError) -> ClientError {
    match error {
        SenderAttachError::RemoteClosedWithError(e) => amqp_error(&e),
        SenderAttachError::SessionStopped(reason) => session_stopped(&reason),
        other => ClientError::Protocol(format!("AMQP attach: {other}")),
    }
}

/// Attaching a receiver failed.
pub(crate) fn receiver_attach_error(error: ReceiverAttachError) -> ClientError {
    match error {
        ReceiverAttachError::RemoteClosedWithError(e) => amqp_error(&e),
        ReceiverAttachError::SessionStopped(reason) => session_stopped(&reason),
        other => ClientError::Protocol(format!("AMQP attach: {other}")),
    }
}

/// The link's state made an operation fail (detached, closed, session gone).
pub(crate) fn link_state_error(error: &LinkStateError) -> ClientError {
    match error {
        LinkStateError::RemoteDetachedWithError(e) | LinkStateError::RemoteClosedWithError(e) => {
            amqp_error(e)
        }
        LinkStateError::SessionStopped(reason) => session_stopped(reason),
        LinkStateError::RemoteDetached | LinkStateError::RemoteClosed => {
            ClientError::Network("the hub detached the link".into())
        }
        other => ClientError::Network(format!("AMQP link: {other}")),
    }
}

fn detach_error(error: &DetachError) -> ClientError {
    match error {
        DetachError::RemoteDetachedWithError(e) | DetachError::RemoteClosedWithError(e) => {
            amqp_error(e)
        }
        DetachError::SessionStopped(reason) => session_stopped(reason),
        other => ClientError::Network(format!("the hub detached the link: {other}")),
    }
}

/// A receive failed.
pub(crate) fn recv_error(error: &RecvError) -> ClientError {
    match error {
        RecvError::LinkStateError(e) => link_state_error(e),
        other => ClientError::Protocol(format!("AMQP receive: {other}")),
    }
}

/// A send failed before an outcome arrived.
pub(crate) fn send_error(error: &SendError) -> ClientError {
    match error {
        SendError::LinkStateError(e) => link_state_error(e),
        SendError::Detached(e) => detach_error(e),
        SendError::MessageSizeExceeded(e) => ClientError::MessageTooLarge(HubError::new(
            413001,
            "MessageTooLarge",
            format!(
                "{} bytes is more than the link's limit of {}",
                e.size, e.max_size
            ),
        )),
        other => ClientError::Protocol(format!("AMQP send: {other}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fe2o3_amqp::types::definitions::{AmqpError, LinkError};
    use fe2o3_amqp::types::messaging::{Accepted, Rejected, Released};

    fn err(condition: impl Into<ErrorCondition>, description: &str) -> definitions::Error {
        definitions::Error::new(condition.into(), description.to_owned(), None)
    }

    #[test]
    fn the_hubs_rejections_keep_their_codes() {
        let e = amqp_error(&err(
            AmqpError::NotFound,
            "DeviceNotFound (404001): device 'nobody' is not registered",
        ));
        let ClientError::NotFound(hub) = e else {
            panic!("{e:?}")
        };
        assert_eq!(hub.code, 404001);
        assert_eq!(hub.name, "DeviceNotFound");
        assert_eq!(hub.message, "device 'nobody' is not registered");
        assert!(matches!(
            amqp_error(&err(
                AmqpError::ResourceLimitExceeded,
                "DeviceMaximumQueueDepthExceeded (403004): 50 messages"
            )),
            ClientError::QueueFull(_)
        ));
        assert!(matches!(
            amqp_error(&err(
                LinkError::MessageSizeExceeded,
                "MessageTooLarge (413001): too big"
            )),
            ClientError::MessageTooLarge(_)
        ));
        assert!(matches!(
            amqp_error(&err(
                AmqpError::UnauthorizedAccess,
                "IotHubUnauthorizedAccess (401002): the token that authorized this link expired"
            )),
            ClientError::Unauthorized(_)
        ));
        let lock = amqp_error(&err(
            ErrorCondition::Custom(Symbol::from("com.microsoft:message-lock-lost")),
            "DeviceMessageLockLost (412002): gone",
        ));
        assert!(matches!(lock, ClientError::LockLost(_)));
        // The 404006 of an unknown address is still a not-found.
        assert_eq!(
            amqp_error(&err(
                AmqpError::NotFound,
                "AmqpAddressNotFound (404006): Courier serves no node at '/x'"
            ))
            .code(),
            Some(404006)
        );
    }

    #[test]
    fn conditions_without_codes_map_by_the_sdk_table() {
        let kind = |c: ErrorCondition| amqp_error(&err(c, "free text"));
        assert!(matches!(
            kind(AmqpError::NotFound.into()),
            ClientError::NotFound(_)
        ));
        assert!(matches!(
            kind(AmqpError::UnauthorizedAccess.into()),
            ClientError::Unauthorized(_)
        ));
        assert!(matches!(
            kind(AmqpError::ResourceLimitExceeded.into()),
            ClientError::QueueFull(_)
        ));
        assert!(matches!(
            kind(LinkError::MessageSizeExceeded.into()),
            ClientError::MessageTooLarge(_)
        ));
        assert!(matches!(
            kind(ErrorCondition::Custom(Symbol::from(
                "com.microsoft:device-container-throttled"
            ))),
            ClientError::Throttled { .. }
        ));
        let timeout = kind(ErrorCondition::Custom(Symbol::from(
            "com.microsoft:timeout",
        )));
        assert!(timeout.is_transient(), "{timeout:?}");
        let internal = kind(AmqpError::InternalError.into());
        assert!(internal.is_transient(), "{internal:?}");
        assert_eq!(
            internal.hub_error().map(|h| h.message.as_str()),
            Some("free text")
        );
        assert!(matches!(
            kind(AmqpError::NotAllowed.into()),
            ClientError::Protocol(_)
        ));
        // No description: the condition stands in for the text.
        let bare = amqp_error(&definitions::Error::new(AmqpError::NotFound, None, None));
        assert_eq!(
            bare.hub_error().map(|h| h.message.as_str()),
            Some("amqp:not-found")
        );
    }

    #[test]
    fn descriptions_that_only_look_like_codes_are_not_trusted() {
        assert_eq!(
            parse_description("DeviceNotFound (404001): x").map(|h| h.code),
            Some(404001)
        );
        assert_eq!(
            parse_description("Throttled (429001)").map(|h| h.code),
            Some(429001)
        );
        assert!(parse_description("device (d1): is gone").is_none());
        assert!(parse_description("Two Words (404001): x").is_none());
        assert!(parse_description("Short (404): x").is_none());
        assert!(parse_description("").is_none());
    }

    #[test]
    fn send_outcomes() {
        assert!(outcome_result(Outcome::Accepted(Accepted {})).is_ok());
        let rejected = Outcome::Rejected(Rejected {
            error: Some(err(AmqpError::NotFound, "DeviceNotFound (404001): x")),
        });
        assert!(matches!(
            outcome_result(rejected),
            Err(ClientError::NotFound(_))
        ));
        let released = outcome_result(Outcome::Released(Released {})).unwrap_err();
        assert!(released.is_transient());
        assert!(outcome_result(Outcome::Rejected(Rejected { error: None })).is_err());
    }

    #[test]
    fn cbs_statuses() {
        assert!(cbs_status(200, "OK").is_none());
        assert!(cbs_status(202, "").is_none());
        assert!(matches!(
            cbs_status(401, "the signature does not match"),
            Some(ClientError::Unauthorized(_))
        ));
        assert!(matches!(
            cbs_status(403, "no ServiceConnect"),
            Some(ClientError::Unauthorized(_))
        ));
        assert!(matches!(
            cbs_status(404, "no such device"),
            Some(ClientError::NotFound(_))
        ));
        assert!(matches!(
            cbs_status(429, ""),
            Some(ClientError::Throttled { .. })
        ));
        let server = cbs_status(500, "").unwrap();
        assert!(server.is_transient());
        assert!(matches!(cbs_status(400, "bad"), Some(ClientError::Hub(_))));
    }

    #[test]
    fn connection_failures_are_network_faults() {
        let closed = connection_stopped(&ConnectionStopReason::RemoteClosed);
        assert!(matches!(closed, ClientError::Network(_)));
        assert!(closed.is_transient());
        let idle = connection_error(
            &ConnectionError::TransportError(TransportError::IdleTimeoutElapsed),
            Duration::from_secs(120),
        );
        assert!(matches!(
            idle,
            ClientError::Timeout { after, .. } if after == Duration::from_secs(120)
        ));
        let refused = link_state_error(&LinkStateError::RemoteClosedWithError(err(
            AmqpError::UnauthorizedAccess,
            "IotHubUnauthorizedAccess (401002): no token",
        )));
        assert!(matches!(refused, ClientError::Unauthorized(_)));
    }
}
