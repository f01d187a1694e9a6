//! The device's HTTPS transport: IoT Hub's polling C2D API. HTTP has no
//! connection to keep, so a "connection" here is a run of polls that ends
//! with the first failed one. Polls go out only while a receiver waits (a
//! polled message is locked from the moment it is returned), long-poll with
//! Courier's `wait` extension, and are spaced by `http_poll_interval` when
//! they find nothing (IoT Hub answers at once and throttles busy pollers).

use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{FuturesUnordered, StreamExt as _};
use reqwest::header::HeaderMap;
use reqwest::Method;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;

use super::session::{Demand, Session, SessionEnd, Settle};
use crate::http::{self, names, HttpClient};
use crate::message::Delivery;
use crate::{Ack, ClientError, Outcome, ReceivedMessage};

/// Settlements sent at once; more wait in the settlement queue.
const CONCURRENT_SETTLEMENTS: usize = 8;

/// Serves one "connection" (see `Session` for the contract).
pub(crate) async fn run(mut session: Session<'_>) -> SessionEnd {
    let config = session.config;
    let client = match HttpClient::new(
        &config.endpoint,
        config.credentials.clone(),
        config.options.operation_timeout,
    ) {
        Ok(client) => client,
        Err(e) => return SessionEnd::Failed(e),
    };
    // Nothing to open. With nobody waiting the device is "connected" once it
    // can sign requests; with a receiver waiting, once the hub has answered
    // a first, quick poll, so that a hub that is down is retried with a
    // growing back-off instead of looking connected between failures.
    if let Err(e) = client.authorization() {
        return SessionEnd::Failed(e);
    }
    if !session.demand.is_wanted() {
        session.connected();
    }
    let answered = Notify::new();
    let device_id = config.device_id.as_str();
    let receiving = receive_loop(
        &client,
        device_id,
        config.options.http_poll_interval,
        session.inbox,
        session.demand,
        &answered,
    );
    tokio::pin!(receiving);
    let mut settling = FuturesUnordered::new();
    loop {
        tokio::select! {
            biased;
            // Dropping `receiving` abandons an in-flight long poll.
            () = session.closing.cancelled() => return SessionEnd::Closed,
            error = &mut receiving => return SessionEnd::Failed(error),
            () = answered.notified() => session.connected(),
            Some(settled) = settling.next(), if !settling.is_empty() => {
                if settled {
                    session.connected();
                }
            }
            request = session.settlements.recv(), if settling.len() < CONCURRENT_SETTLEMENTS => {
                match request {
                    Some(request) => settling.push(settle(&client, device_id, request)),
                    // The client is gone (its drop cancels `closing` too).
                    None => return SessionEnd::Closed,
                }
            }
        }
    }
}

/// Polls while receivers wait, until a poll fails; returns its error.
/// Notifies `answered` after the first poll the hub answers.
async fn receive_loop(
    client: &HttpClient,
    device_id: &str,
    interval: Duration,
    inbox: &mpsc::Sender<ReceivedMessage>,
    demand: &Demand,
    answered: &Notify,
) -> ClientError {
    let path = ["devices", device_id, "messages", "deviceBound"];
    // The hub holds an empty poll up to `wait`; a hub that ignores it
    // answers at once and `next_poll` spaces the polls instead.
    let long_wait = interval.min(http::MAX_WAIT);
    let mut next_poll = Instant::now();
    let mut first = true;
    loop {
        // Messages already in the inbox (and slots reserved for them) serve
        // waiting receivers first.
        demand
            .wanted_beyond(|| inbox.max_capacity() - inbox.capacity())
            .await;
        // A slot first, so that a message the hub locks for us has a place.
        let permit = match inbox.reserve().await {
            Ok(permit) => permit,
            Err(_) => return ClientError::Closed("the client is closed".into()),
        };
        if Instant::now() < next_poll {
            tokio::time::sleep_until(next_poll).await;
            if !demand.is_wanted() {
                continue;
            }
        }
        // The first poll does not wait: it tells at once whether the hub
        // is there and takes this identity.
        let wait = if first { Duration::ZERO } else { long_wait };
        let started = Instant::now();
        let answer = client.poll(&path, wait, "receive").await;
        if first && answer.is_ok() {
            first = false;
            answered.notify_one();
        }
        match answer {
            Ok(Some((headers, body))) => match received_message(&headers, body) {
                Some(message) => {
                    tracing::debug!(device = device_id, lock_token = ?message.lock_token, "received a message");
                    permit.send(message);
                }
                None => {
                    // Unsettleable without a lock token; the hub delivers it
                    // again when the lock expires and dead-letters it in the end.
                    tracing::warn!(
                        device = device_id,
                        "the hub sent a message without an ETag (lock token); skipped"
                    );
                }
            },
            // Only a poll that asked to wait paces the next one.
            Ok(None) if !wait.is_zero() => next_poll = started + interval,
            Ok(None) => {}
            Err(error) => return error,
        }
    }
}

/// Sends one settlement and answers its caller; true when it was done.
async fn settle(client: &HttpClient, device_id: &str, request: Settle) -> bool {
    let Settle {
        message,
        outcome,
        reply,
    } = request;
    let result = match &message.delivery {
        Delivery::Http { lock_token } => settle_lock(client, device_id, lock_token, outcome).await,
        _ => Err(ClientError::lock_lost_locally(
            "the message was not received over HTTPS",
        )),
    };
    if let Err(e) = &result {
        tracing::debug!(device = device_id, outcome = outcome.as_str(), error = %e, "settlement failed");
    }
    let settled = result.is_ok();
    let _ = reply.send(result);
    settled
}

/// Complete: `DELETE …/{lock}`; reject: the same with `?reject`; abandon:
/// `POST …/{lock}/abandon`.
async fn settle_lock(
    client: &HttpClient,
    device_id: &str,
    lock_token: &str,
    outcome: Outcome,
) -> Result<(), ClientError> {
    let path = ["devices", device_id, "messages", "deviceBound", lock_token];
    let (request, operation) = match outcome {
        Outcome::Complete => (client.request(Method::DELETE, &path, &[])?, "complete"),
        Outcome::Reject => (
            client.request(Method::DELETE, &path, &[("reject", None)])?,
            "reject",
        ),
        Outcome::Abandon => {
            let abandon = [
                "devices",
                device_id,
                "messages",
                "deviceBound",
                lock_token,
                "abandon",
            ];
            (client.request(Method::POST, &abandon, &[])?, "abandon")
        }
    };
    client
        .call(request, operation)
        .await
        .map_err(lock_lost_on_412)
}

/// Any 412 on a settlement is a lost lock (IoT Hub may leave out the code).
fn lock_lost_on_412(error: ClientError) -> ClientError {
    match error {
        ClientError::Hub(e) | ClientError::PreconditionFailed(e) if e.status() == 412 => {
            ClientError::LockLost(e)
        }
        other => other,
    }
}

/// A message from a 200 answer's headers and body; `None` without a lock token.
fn received_message(headers: &HeaderMap, body: Bytes) -> Option<ReceivedMessage> {
    let lock_token = http::lock_token(headers)?;
    let text = |name: &str| http::header_string(headers, name);
    let either = |a: &str, b: &str| text(a).or_else(|| text(b));
    let mut message = ReceivedMessage::new(
        body,
        Delivery::Http {
            lock_token: lock_token.clone(),
        },
    );
    message.message_id = text(names::MESSAGE_ID);
    message.correlation_id = text(names::CORRELATION_ID);
    message.user_id = text(names::USER_ID);
    message.to = text(names::TO);
    message.content_type = either(names::CONTENT_TYPE_C2D, names::CONTENT_TYPE);
    message.content_encoding = either(names::CONTENT_ENCODING_C2D, names::CONTENT_ENCODING);
    message.expiry = http::header_time(headers, names::EXPIRY);
    message.enqueued_time = http::header_time(headers, names::ENQUEUED_TIME);
    message.sequence_number = http::header_number(headers, names::SEQUENCE_NUMBER);
    message.delivery_count = http::header_number(headers, names::DELIVERY_COUNT);
    message.ack = text(names::ACK).and_then(|a| Ack::parse(a.trim()));
    message.lock_token = Some(lock_token);
    message.properties = http::properties(headers);
    Some(message)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;
    use std::time::{SystemTime, UNIX_EPOCH};

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                reqwest::header::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_bytes(value.as_bytes()).unwrap(),
            );
        }
        headers
    }

    #[test]
    fn response_headers_become_a_received_message() {
        let h = headers(&[
            ("etag", "\"35567cd3-abf5-4b5e-aa09-9b29dad7363f\""),
            ("iothub-messageid", "café ✓"),
            ("iothub-correlationid", "c1"),
            ("iothub-userid", "u1"),
            ("iothub-to", "/devices/dev1/messages/devicebound"),
            ("iothub-expiry", "2026-11-23T06:06:56.889Z"),
            ("iothub-enqueuedtime", "2026-11-23T06:05:56.889Z"),
            ("iothub-sequencenumber", "7"),
            ("iothub-deliverycount", "1"),
            ("iothub-ack", "full"),
            ("contenttype", "application/json"),
            ("iothub-contenttype", "application/json"),
            ("content-type", "application/json"),
            ("iothub-contentencoding", "utf-8"),
            ("iothub-app-zeta", "z"),
            ("iothub-app-alpha", "été"),
        ]);
        let m = received_message(&h, Bytes::from_static(b"body")).unwrap();
        let lock = "35567cd3-abf5-4b5e-aa09-9b29dad7363f";
        assert_eq!(m.lock_token.as_deref(), Some(lock));
        assert_eq!(
            m.delivery,
            Delivery::Http {
                lock_token: lock.into()
            }
        );
        assert_eq!(m.body_str(), Some("body"));
        assert_eq!(m.message_id.as_deref(), Some("café ✓"));
        assert_eq!(m.correlation_id.as_deref(), Some("c1"));
        assert_eq!(m.user_id.as_deref(), Some("u1"));
        assert_eq!(m.to.as_deref(), Some("/devices/dev1/messages/devicebound"));
        assert_eq!(m.sequence_number, Some(7));
        assert_eq!(m.delivery_count, Some(1));
        assert_eq!(m.ack, Some(Ack::Full));
        assert_eq!(m.content_type.as_deref(), Some("application/json"));
        assert_eq!(m.content_encoding.as_deref(), Some("utf-8"));
        let at = |ms: u64| Some(UNIX_EPOCH + Duration::from_millis(ms));
        assert_eq!(m.expiry, at(1_795_414_016_889));
        assert_eq!(m.enqueued_time, at(1_795_413_956_889));
        assert_eq!(
            m.properties,
            vec![
                ("zeta".to_owned(), "z".to_owned()),
                ("alpha".to_owned(), "été".to_owned())
            ]
        );
        assert_eq!(m.property("alpha"), Some("été"));
    }

    #[test]
    fn sparse_headers_leave_fields_empty_and_no_etag_is_no_message() {
        let m = received_message(&headers(&[("etag", "\"l\"")]), Bytes::new()).unwrap();
        assert_eq!(m.lock_token.as_deref(), Some("l"));
        assert_eq!(
            (m.message_id, m.sequence_number, m.ack, m.expiry),
            (None, None, None, None::<SystemTime>)
        );
        assert!(m.properties.is_empty());
        assert!(received_message(&headers(&[("iothub-messageid", "m")]), Bytes::new()).is_none());
    }

    #[test]
    fn any_412_on_a_settlement_is_a_lost_lock() {
        let bare = ClientError::from(crate::HubError::new(412000, "PreconditionFailed", "x"));
        assert!(matches!(lock_lost_on_412(bare), ClientError::LockLost(_)));
        let other = ClientError::from(crate::HubError::new(404001, "DeviceNotFound", "x"));
        assert!(matches!(lock_lost_on_412(other), ClientError::NotFound(_)));
    }
}
