//! The device's AMQP transport, over TLS (5671) or a WebSocket (443,
//! `AMQPWSB10`): SASL ANONYMOUS, the device's SAS token on `$cbs` (renewed
//! in place before it lapses), and one receiver link on
//! `/devices/{id}/messages/devicebound` whose credit is the prefetch.
//! Settlements are dispositions on that link: complete → accepted,
//! reject → rejected, abandon → released (what every IoT Hub SDK sends).
//!
//! X.509 devices open no SASL layer and put no token: the TLS client
//! certificate is the identity (wire spec §1.6). Courier's AMQP head does
//! not read client certificates: it accepts such a device's link and then
//! detaches it as unauthorized, so the link is watched briefly after its
//! attach and the connect fails with an error that says to use MQTT.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use fe2o3_amqp::link::delivery::DeliveryInfo;
use fe2o3_amqp::link::{CreditMode, LinkStateError, RecvError};
use fe2o3_amqp::types::definitions::{self, AmqpError, ReceiverSettleMode};
use fe2o3_amqp::types::messaging::Body;
use fe2o3_amqp::types::primitives::Value;
use fe2o3_amqp::Receiver;
use tokio::sync::mpsc::Permit;

use super::session::{DeviceConfig, Session, SessionEnd, Settle};
use crate::amqp::{self, Cbs, OpenOptions, Opened};
use crate::message::Delivery;
use crate::net::within;
use crate::{ClientError, Outcome, ReceivedMessage};

/// Longest wait for the hub's answers while closing.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a failed link waits for its connection's own outcome, which
/// tells a broken socket from a clean close.
const OUTCOME_GRACE: Duration = Duration::from_secs(1);
/// A deadline that never comes, for a disabled branch.
const NEVER: Duration = Duration::from_secs(365 * 24 * 3600);
/// How long a certificate-authenticated link is watched after its attach:
/// a hub that does not take the certificate accepts the attach and detaches
/// at once, and the refusal should fail the connect, not follow it.
const REFUSAL_GRACE: Duration = Duration::from_millis(500);

/// One receive's result.
type Received = Result<fe2o3_amqp::Delivery<Body<Value>>, RecvError>;

/// One connection's AMQP state.
struct Link {
    opened: Opened,
    /// `None` for certificate authentication.
    cbs: Option<Cbs>,
    receiver: Receiver,
    /// When to put the next token; `None` when it cannot be renewed.
    renew_at: Option<SystemTime>,
    /// A receive made while watching for a refusal, not yet handed out.
    early: Option<Received>,
}

impl Link {
    /// Detaches the links and closes the connection, politely.
    async fn close(self, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, self.receiver.close()).await;
        if let Some(cbs) = self.cbs {
            cbs.close(timeout).await;
        }
        self.opened.close(timeout).await;
    }
}

/// Serves one connection (see `Session` for the contract).
pub(crate) async fn run(mut session: Session<'_>, websocket: bool) -> SessionEnd {
    let config = session.config;
    let closing = session.closing;
    let connected = tokio::select! {
        link = connect(config, websocket) => link,
        () = closing.cancelled() => return SessionEnd::Closed,
    };
    let mut link = match connected {
        Ok(link) => link,
        Err(error) => return SessionEnd::Failed(certificate_refusal(config, error)),
    };
    session.connected();
    let end = serve(&mut session, &mut link).await;
    match &end {
        SessionEnd::Closed => {
            Box::pin(link.close(config.options.operation_timeout.min(CLOSE_TIMEOUT))).await;
        }
        // The hub (or the network) ended it; dropping the handles closes
        // whatever is left without waiting on a peer that may be gone.
        SessionEnd::Failed(_) | SessionEnd::RenewToken => drop(link),
    }
    end
}

/// Opens the connection, authenticates and attaches the receiver link,
/// within the operation timeout.
async fn connect(config: &DeviceConfig, websocket: bool) -> Result<Link, ClientError> {
    let options = &config.options;
    let timeout = options.operation_timeout;
    let minted = SystemTime::now();
    let token = config.credentials.token(minted)?;
    let open = OpenOptions {
        endpoint: &config.endpoint,
        websocket,
        hub_host: &config.hub_host,
        container_id: &config.device_id,
        sasl_anonymous: token.is_some(),
        idle_timeout: idle_timeout(config),
        timeout,
    };
    // Boxed: the handshake's state is large, and the supervisor's task
    // would otherwise carry it for the whole connection.
    within(
        timeout,
        "AMQP connect",
        Box::pin(async {
            let mut opened = amqp::open(&open).await?;
            let mut cbs = None;
            let mut renew_at = None;
            if let Some(token) = &token {
                let mut links = Cbs::attach(&mut opened.session, timeout).await?;
                links
                    .put_token(config.credentials.resource(), &token.value, timeout)
                    .await?;
                renew_at = amqp::renewal_time(token, minted);
                cbs = Some(links);
            }
            let mut receiver = Box::pin(
                Receiver::builder()
                    .name(amqp::link_name("receiver-link"))
                    .source(amqp::devicebound_address(&config.device_id))
                    .receiver_settle_mode(ReceiverSettleMode::First)
                    .credit_mode(CreditMode::Auto(u32::from(options.prefetch.max(1))))
                    .auto_accept(false)
                    .attach(&mut opened.session),
            )
            .await
            .map_err(amqp::receiver_attach_error)?;
            let mut early = None;
            if token.is_none() {
                match tokio::time::timeout(REFUSAL_GRACE, receiver.recv::<Body<Value>>()).await {
                    Err(_) => {}
                    Ok(Err(e)) if !matches!(e, RecvError::MessageDecode(_)) => {
                        return Err(amqp::recv_error(&e));
                    }
                    Ok(received) => early = Some(received),
                }
            }
            Ok(Link {
                opened,
                cbs,
                receiver,
                renew_at,
                early,
            })
        }),
    )
    .await
}

/// Serves an open link until it ends or the client closes.
async fn serve(session: &mut Session<'_>, link: &mut Link) -> SessionEnd {
    let config = session.config;
    let connection = session.connection;
    let inbox = session.inbox;
    let closing = session.closing;
    let settlements = &mut *session.settlements;
    let timeout = config.options.operation_timeout;
    // Delivery info of every message handed out and not yet settled.
    let mut unsettled: HashMap<u32, DeliveryInfo> = HashMap::new();
    // Room in the inbox: the link is read only while there is some, so a
    // full inbox stops reading (the link's credit then stops the hub).
    let mut room = None;
    loop {
        if room.is_some() {
            if let Some(received) = link.early.take() {
                if let Err(end) = deliver(
                    config,
                    link,
                    connection,
                    received,
                    &mut room,
                    &mut unsettled,
                )
                .await
                {
                    return end;
                }
                continue;
            }
        }
        let renewal = link
            .renew_at
            .map_or_else(|| tokio::time::Instant::now() + NEVER, amqp::deadline);
        tokio::select! {
            () = closing.cancelled() => return SessionEnd::Closed,
            reserved = inbox.reserve(), if room.is_none() => match reserved {
                Ok(permit) => room = Some(permit),
                // The client is gone: nobody takes or settles messages.
                Err(_) => return SessionEnd::Closed,
            },
            received = link.receiver.recv::<Body<Value>>(), if room.is_some() => {
                if let Err(end) = deliver(config, link, connection, received, &mut room, &mut unsettled).await {
                    return end;
                }
            }
            request = settlements.recv() => match request {
                Some(request) => settle(&link.receiver, &mut unsettled, connection, request, timeout).await,
                None => return SessionEnd::Closed,
            },
            () = tokio::time::sleep_until(renewal), if link.renew_at.is_some() => {
                // Boxed, like the other rare large steps, to keep the task small.
                match Box::pin(renew(config, link, timeout)).await {
                    Ok(next) => link.renew_at = next,
                    Err(e) => return SessionEnd::Failed(e),
                }
            }
            outcome = link.opened.connection.on_close() => {
                return SessionEnd::Failed(match outcome {
                    Ok(()) => ClientError::Network("the hub closed the AMQP connection".into()),
                    Err(e) => amqp::connection_error(&e, idle_timeout(config)),
                });
            }
        }
    }
}

/// Hands one received message to the inbox (using the reserved `room`),
/// or rejects it if no application could read it; a failed receive ends
/// the connection.
async fn deliver(
    config: &DeviceConfig,
    link: &mut Link,
    connection: u64,
    received: Received,
    room: &mut Option<Permit<'_, ReceivedMessage>>,
    unsettled: &mut HashMap<u32, DeliveryInfo>,
) -> Result<(), SessionEnd> {
    let delivery = match received {
        Ok(delivery) => delivery,
        Err(RecvError::MessageDecode(e)) => {
            tracing::warn!(device = %config.device_id, error = %e.source, "rejecting a C2D message that is not AMQP");
            let _ = link
                .receiver
                .reject(e.info, decode_error("the message cannot be decoded"))
                .await;
            return Ok(());
        }
        Err(e) => return Err(SessionEnd::Failed(link_failure(config, link, &e).await)),
    };
    let (info, message) = delivery.into_parts();
    let delivery_id = info.delivery_id();
    let handle = Delivery::Amqp {
        connection,
        delivery_id,
    };
    match amqp::received_message(message, handle) {
        Ok(received) => {
            unsettled.insert(delivery_id, info);
            if let Some(permit) = room.take() {
                permit.send(received);
            }
        }
        Err(e) => {
            // As the C SDK does: a body no application can read is rejected.
            tracing::warn!(device = %config.device_id, error = %e, "rejecting an unreadable C2D message");
            let _ = link
                .receiver
                .reject(info, decode_error(&e.to_string()))
                .await;
        }
    }
    Ok(())
}

/// Puts a fresh token on the same connection; returns when to renew next.
async fn renew(
    config: &DeviceConfig,
    link: &mut Link,
    timeout: Duration,
) -> Result<Option<SystemTime>, ClientError> {
    let minted = SystemTime::now();
    let (Some(token), Some(cbs)) = (config.credentials.token(minted)?, link.cbs.as_mut()) else {
        return Ok(None);
    };
    cbs.put_token(config.credentials.resource(), &token.value, timeout)
        .await?;
    tracing::debug!(device = %config.device_id, "SAS token renewed on $cbs");
    Ok(amqp::renewal_time(&token, minted))
}

/// Answers one settlement request with a disposition on the link.
async fn settle(
    receiver: &Receiver,
    unsettled: &mut HashMap<u32, DeliveryInfo>,
    connection: u64,
    request: Settle,
    timeout: Duration,
) {
    let result = match request.message.delivery {
        Delivery::Amqp {
            connection: from,
            delivery_id,
        } if from == connection => match unsettled.remove(&delivery_id) {
            Some(info) => dispose(receiver, info, request.outcome, timeout).await,
            None => Err(ClientError::lock_lost_locally(
                "the message was already settled",
            )),
        },
        _ => Err(ClientError::lock_lost_locally(
            "the message was received on an earlier connection, whose locks the hub has released; it will be delivered again",
        )),
    };
    let _ = request.reply.send(result);
}

/// Sends the disposition for `outcome`.
async fn dispose(
    receiver: &Receiver,
    info: DeliveryInfo,
    outcome: Outcome,
    timeout: Duration,
) -> Result<(), ClientError> {
    let sent = within(timeout, "settle", async {
        let result = match outcome {
            Outcome::Complete => receiver.accept(info).await,
            Outcome::Reject => receiver.reject(info, None).await,
            // Released: what the hub (and every SDK) treats as abandon.
            Outcome::Abandon => receiver.release(info).await,
        };
        result.map_err(|e| {
            ClientError::lock_lost_locally(&format!(
                "the link closed before the settlement was sent: {e}"
            ))
        })
    });
    sent.await
}

/// The error a failed receive ends the connection with: a broken socket
/// is told apart from a clean close by the connection's own outcome.
async fn link_failure(config: &DeviceConfig, link: &mut Link, error: &RecvError) -> ClientError {
    let mut failure = amqp::recv_error(error);
    if matches!(
        error,
        RecvError::LinkStateError(LinkStateError::SessionStopped(_))
    ) {
        if let Ok(Err(outcome)) =
            tokio::time::timeout(OUTCOME_GRACE, link.opened.connection.on_close()).await
        {
            failure = amqp::connection_error(&outcome, idle_timeout(config));
        }
    }
    certificate_refusal(config, failure)
}

/// Says why a certificate-authenticated device was refused.
fn certificate_refusal(config: &DeviceConfig, error: ClientError) -> ClientError {
    match error {
        ClientError::Unauthorized(mut hub) if config.credentials.is_x509() => {
            hub.message = format!(
                "{} (the hub did not accept the TLS client certificate: check that its thumbprint is registered for the device)",
                hub.message
            );
            ClientError::Unauthorized(hub)
        }
        other => other,
    }
}

/// The connection's idle timeout: twice the keep-alive (fe2o3 announces
/// half of it, so the hub sends empty frames at least every keep-alive).
fn idle_timeout(config: &DeviceConfig) -> Duration {
    config.options.keep_alive.saturating_mul(2)
}

fn decode_error(why: &str) -> definitions::Error {
    definitions::Error::new(AmqpError::DecodeError, why.to_owned(), None)
}
