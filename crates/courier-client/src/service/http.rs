//! The service API over HTTPS: Courier's send (`POST
//! /devices/{id}/messages/deviceBound`), IoT Hub's feedback and purge
//! calls, and the registry calls the [`RegistryManager`](crate::RegistryManager)
//! is built on.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE, IF_MATCH};
use reqwest::Method;
use tokio::time::Instant;

use super::{PurgeResult, SendReceipt, ServiceConfig};
use crate::feedback::{self, FeedbackDelivery};
use crate::http::{self, names, HttpClient};
use crate::registry::Device;
use crate::{ClientError, Expiry, FeedbackBatch, Message, Outcome, ServiceOptions};

/// The feedback queue's path.
const FEEDBACK: [&str; 3] = ["messages", "serviceBound", "feedback"];

/// Least time between two feedback polls within one receive.
const FEEDBACK_POLL_SPACING: Duration = Duration::from_secs(1);

/// The service API over HTTPS.
#[derive(Debug)]
pub(crate) struct HttpService {
    config: Arc<ServiceConfig>,
    client: HttpClient,
}

impl HttpService {
    /// A client for the hub in `config`; nothing connects yet.
    pub(crate) fn new(config: Arc<ServiceConfig>) -> Result<Self, ClientError> {
        let client = HttpClient::new(
            &config.endpoint,
            config.credentials.clone(),
            config.options.operation_timeout,
        )?;
        Ok(Self { config, client })
    }

    /// The options the client was made with.
    pub(crate) fn options(&self) -> &ServiceOptions {
        &self.config.options
    }

    /// Sends one message: `POST /devices/{id}/messages/deviceBound`, answered
    /// once the hub has stored it.
    pub(crate) async fn send(
        &self,
        device_id: &str,
        message: &Message,
    ) -> Result<SendReceipt, ClientError> {
        let headers = message_headers(message, SystemTime::now())?;
        let request = self
            .client
            .request(
                Method::POST,
                &["devices", device_id, "messages", "deviceBound"],
                &[],
            )?
            .headers(headers)
            .body(message.body.clone());
        self.client.json(request, "send").await
    }

    /// Long-polls for one feedback batch for up to `wait` (several requests
    /// when longer than the hub holds one); `None` when none came.
    pub(crate) async fn receive_feedback(
        &self,
        wait: Duration,
    ) -> Result<Option<FeedbackBatch>, ClientError> {
        let deadline = Instant::now() + wait;
        loop {
            let started = Instant::now();
            let remaining = deadline.saturating_duration_since(started);
            let answer = self
                .client
                .poll(&FEEDBACK, remaining, "receive feedback")
                .await?;
            if let Some((headers, body)) = answer {
                return feedback_batch(&headers, &body).map(Some);
            }
            // A hub that ignores `wait` answers at once: poll once a second
            // rather than spin until the deadline.
            let next = started + FEEDBACK_POLL_SPACING;
            if next >= deadline || Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep_until(next).await;
        }
    }

    /// Completes (`DELETE …/feedback/{lock}`) or abandons (`POST
    /// …/feedback/{lock}/abandon`) a feedback batch.
    pub(crate) async fn settle_feedback(
        &self,
        batch: &FeedbackBatch,
        outcome: Outcome,
    ) -> Result<(), ClientError> {
        let FeedbackDelivery::Http { lock_token } = &batch.delivery else {
            return Err(ClientError::InvalidArgument(
                "this feedback batch was not received over HTTPS".into(),
            ));
        };
        let [a, b, c] = FEEDBACK;
        let (request, operation) = match outcome {
            Outcome::Complete => (
                self.client
                    .request(Method::DELETE, &[a, b, c, lock_token], &[])?,
                "complete feedback",
            ),
            Outcome::Abandon => (
                self.client
                    .request(Method::POST, &[a, b, c, lock_token, "abandon"], &[])?,
                "abandon feedback",
            ),
            Outcome::Reject => {
                return Err(ClientError::NotSupported {
                    operation: "reject",
                    transport: "Http",
                    why: "a feedback batch can only be completed or abandoned",
                })
            }
        };
        self.client
            .call(request, operation)
            .await
            .map_err(|error| match error {
                ClientError::Hub(e) | ClientError::PreconditionFailed(e) if e.status() == 412 => {
                    ClientError::LockLost(e)
                }
                other => other,
            })
    }

    /// Purges a device's queue: `DELETE /devices/{id}/commands`.
    pub(crate) async fn purge(&self, device_id: &str) -> Result<PurgeResult, ClientError> {
        let request =
            self.client
                .request(Method::DELETE, &["devices", device_id, "commands"], &[])?;
        self.client.json(request, "purge").await
    }

    /// `PUT /devices/{id}`: without `if_match` a create (409001 when it
    /// exists), with it a replace (`*`: unconditional).
    pub(crate) async fn put_device(
        &self,
        device: &Device,
        if_match: Option<&str>,
    ) -> Result<Device, ClientError> {
        check_id(&device.device_id)?;
        let mut request = self
            .client
            .request(Method::PUT, &["devices", &device.device_id], &[])?
            .json(device);
        if let Some(etag) = if_match {
            request = request.header(IF_MATCH, http::if_match(etag)?);
        }
        let operation = if if_match.is_some() {
            "update device"
        } else {
            "create device"
        };
        self.client.json(request, operation).await
    }

    /// `GET /devices/{id}`.
    pub(crate) async fn get_device(&self, id: &str) -> Result<Device, ClientError> {
        check_id(id)?;
        let request = self.client.request(Method::GET, &["devices", id], &[])?;
        self.client.json(request, "get device").await
    }

    /// `GET /devices[?top=n]`.
    pub(crate) async fn list_devices(&self, top: Option<u32>) -> Result<Vec<Device>, ClientError> {
        let top = top.map(|n| n.to_string());
        let query: Vec<(&str, Option<&str>)> = top
            .as_deref()
            .map(|n| ("top", Some(n)))
            .into_iter()
            .collect();
        let request = self.client.request(Method::GET, &["devices"], &query)?;
        self.client.json(request, "list devices").await
    }

    /// `DELETE /devices/{id}` with `If-Match: {etag}` (`*`: unconditional).
    pub(crate) async fn delete_device(&self, id: &str, if_match: &str) -> Result<(), ClientError> {
        check_id(id)?;
        let request = self
            .client
            .request(Method::DELETE, &["devices", id], &[])?
            .header(IF_MATCH, http::if_match(if_match)?);
        self.client.call(request, "delete device").await
    }
}

/// An empty id would name the collection, not a device.
fn check_id(id: &str) -> Result<(), ClientError> {
    if id.is_empty() {
        return Err(ClientError::InvalidArgument(
            "the device id is empty".into(),
        ));
    }
    Ok(())
}

/// The request headers that carry a message's properties (the names the
/// hub reads on send, docs/http-api.md).
fn message_headers(message: &Message, now: SystemTime) -> Result<HeaderMap, ClientError> {
    let mut headers = HeaderMap::new();
    let optional = [
        (names::MESSAGE_ID, &message.message_id),
        (names::CORRELATION_ID, &message.correlation_id),
        (names::USER_ID, &message.user_id),
        (names::CONTENT_TYPE, &message.content_type),
        (names::CONTENT_ENCODING, &message.content_encoding),
    ];
    for (name, value) in optional {
        if let Some(value) = value {
            headers.insert(name, http::header_value(name, value)?);
        }
    }
    // The hub falls back to Content-Type for the message's content type, so
    // the body's own type must not be guessed when the message has none.
    if let Some(content_type) = &message.content_type {
        headers.insert(
            CONTENT_TYPE,
            http::header_value("content type", content_type)?,
        );
    }
    headers.insert(names::ACK, HeaderValue::from_static(message.ack.as_str()));
    match message.expiry {
        None => {}
        Some(Expiry::After(ttl)) => {
            // Whole seconds, rounded up: a short TTL must not become "now".
            let seconds = ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0);
            headers.insert(names::TTL, HeaderValue::from(seconds));
        }
        Some(expiry @ Expiry::At(_)) => {
            let at = http::rfc3339(expiry.at(now))?;
            headers.insert(names::EXPIRY, http::header_value("expiry", &at)?);
        }
    }
    for (name, value) in &message.properties {
        headers.append(
            http::property_header(name)?,
            http::header_value(&format!("property {name:?}"), value)?,
        );
    }
    Ok(headers)
}

/// A feedback batch from a 200 answer.
fn feedback_batch(headers: &HeaderMap, body: &[u8]) -> Result<FeedbackBatch, ClientError> {
    let lock_token = http::lock_token(headers).ok_or_else(|| {
        ClientError::Protocol("the hub sent a feedback batch without an ETag (lock token)".into())
    })?;
    let records = feedback::parse_records(body)?;
    let mut batch = FeedbackBatch::new(
        records,
        FeedbackDelivery::Http {
            lock_token: lock_token.clone(),
        },
    );
    batch.lock_token = Some(lock_token);
    batch.enqueued_time_utc = http::header_string(headers, names::ENQUEUED_TIME);
    batch.delivery_count = http::header_number(headers, names::DELIVERY_COUNT);
    Ok(batch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Ack, FeedbackStatus};
    use std::time::UNIX_EPOCH;

    fn message() -> Message {
        Message::new("hi")
            .message_id("m1")
            .content_type("application/json")
            .ack(Ack::Full)
            .ttl(Duration::from_millis(90_500))
            .property("color", "red")
            .property("a", "x=y")
    }

    #[test]
    fn messages_become_iothub_headers() {
        let headers = message_headers(&message(), SystemTime::now()).unwrap();
        assert_eq!(headers["iothub-messageid"], "m1");
        assert_eq!(headers["iothub-ack"], "full");
        assert_eq!(headers["iothub-ttl"], "91");
        assert_eq!(headers["iothub-contenttype"], "application/json");
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(headers["iothub-app-color"], "red");
        assert_eq!(headers["iothub-app-a"], "x=y");
        assert!(!headers.contains_key("iothub-correlationid"));
        assert!(!headers.contains_key("iothub-expiry"));

        let at = UNIX_EPOCH + Duration::from_millis(1_795_414_016_889);
        let absolute =
            message_headers(&Message::new("x").expires_at(at), SystemTime::now()).unwrap();
        assert_eq!(absolute["iothub-expiry"], "2026-11-23T06:06:56.889Z");
        assert_eq!(absolute["iothub-ack"], "none");
        assert!(!absolute.contains_key("content-type"));
    }

    #[test]
    fn properties_that_cannot_be_headers_are_refused_locally() {
        let bad_name = Message::new("x").property("has space", "v");
        assert!(matches!(
            message_headers(&bad_name, SystemTime::now()),
            Err(ClientError::InvalidArgument(_))
        ));
        let bad_value = Message::new("x").property("k", "line\nbreak");
        assert!(matches!(
            message_headers(&bad_value, SystemTime::now()),
            Err(ClientError::InvalidArgument(_))
        ));
    }

    #[test]
    fn feedback_answers_become_settleable_batches() {
        let mut headers = HeaderMap::new();
        headers.insert("etag", HeaderValue::from_static("\"f-lock\""));
        headers.insert(
            "iothub-enqueuedtime",
            HeaderValue::from_static("2026-11-23T06:06:56.889Z"),
        );
        headers.insert("iothub-deliverycount", HeaderValue::from_static("2"));
        let body = br#"[{"originalMessageId":"m1","deviceGenerationId":"g","deviceId":"d","enqueuedTimeUtc":"2026-11-23T06:06:56.889Z","statusCode":"Rejected","description":"Message rejected"}]"#;
        let batch = feedback_batch(&headers, body).unwrap();
        assert_eq!(batch.lock_token.as_deref(), Some("f-lock"));
        assert_eq!(batch.delivery_count, Some(2));
        assert_eq!(
            batch.enqueued_time_utc.as_deref(),
            Some("2026-11-23T06:06:56.889Z")
        );
        assert_eq!(batch.records[0].status_code, FeedbackStatus::Rejected);
        assert_eq!(
            batch.delivery,
            FeedbackDelivery::Http {
                lock_token: "f-lock".into()
            }
        );
        headers.remove("etag");
        assert!(matches!(
            feedback_batch(&headers, body),
            Err(ClientError::Protocol(_))
        ));
    }
}
