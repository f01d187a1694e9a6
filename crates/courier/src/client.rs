//! A small typed HTTPS client for the hub's API (`docs/http-api.md`): one
//! method per call, typed answers, and the hub's errors as [`ApiError`].

use std::time::{Duration, Instant};

use reqwest::header::{
    HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE, ETAG, IF_MATCH,
};
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::api::{
    Device, Expiry, FeedbackBatch, FeedbackRecord, HubInfo, OutgoingMessage, PurgeResult,
    ReceivedMessage, SendReceipt,
};
use crate::target::Target;

/// Longest `wait` the hub honours on one long-poll request.
const MAX_WAIT_PER_REQUEST: Duration = Duration::from_secs(60);
/// Time allowed for a request beyond the long-poll wait it asks for.
const REQUEST_SLACK: Duration = Duration::from_secs(30);
/// Time allowed to open a TCP + TLS connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// An error the hub answered with: HTTP status plus IoT Hub's code and name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, thiserror::Error)]
#[error("{name} ({code}): {message}")]
pub(crate) struct ApiError {
    /// HTTP status code.
    pub(crate) status: u16,
    /// IoT Hub's numeric error code, e.g. 404001.
    pub(crate) code: u32,
    /// IoT Hub's error name, e.g. `DeviceNotFound`.
    pub(crate) name: String,
    /// The hub's explanation.
    pub(crate) message: String,
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(rename = "Message", alias = "message", default)]
    message: Option<String>,
    #[serde(rename = "errorCode", alias = "ErrorCode", default)]
    error_code: Option<serde_json::Value>,
}

impl ApiError {
    /// Builds the error from a response's status, `iothub-errorcode` header and body.
    ///
    /// The body is `{"Message":"ErrorCode:{Name};{text}",…,"errorCode":n}`; parts
    /// that are missing fall back to the header, then to the HTTP status, whose
    /// `{status}000` is IoT Hub's generic code for it.
    pub(crate) fn parse(status: u16, error_code_header: Option<&str>, body: &[u8]) -> Self {
        let parsed: Option<ErrorBody> = serde_json::from_slice(body).ok();
        let raw_message = match &parsed {
            Some(b) => b.message.clone().unwrap_or_default(),
            None => String::from_utf8_lossy(body).trim().to_owned(),
        };
        let (body_name, message) = match raw_message
            .strip_prefix("ErrorCode:")
            .and_then(|rest| rest.split_once(';'))
        {
            Some((name, text)) => (Some(name.trim().to_owned()), text.trim().to_owned()),
            None => (None, raw_message),
        };
        let code = parsed
            .and_then(|b| b.error_code)
            .and_then(|v| match v {
                serde_json::Value::Number(n) => n.as_u64(),
                serde_json::Value::String(s) => s.trim().parse().ok(),
                _ => None,
            })
            .and_then(|n| u32::try_from(n).ok())
            .unwrap_or(u32::from(status) * 1000);
        let name = error_code_header
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(str::to_owned)
            .or(body_name)
            .unwrap_or_else(|| {
                StatusCode::from_u16(status)
                    .ok()
                    .and_then(|s| s.canonical_reason())
                    .unwrap_or("Error")
                    .replace(' ', "")
            });
        let message = if message.is_empty() {
            format!("the hub answered HTTP {status}")
        } else {
            message
        };
        Self {
            status,
            code,
            name,
            message,
        }
    }
}

/// Why a call to the hub failed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ClientError {
    /// The hub refused the request.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// The CA file could not be read.
    #[error("cannot read the CA certificate file {path}")]
    CaRead {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The CA file holds no usable certificate.
    #[error("{path} holds no PEM certificate to trust")]
    CaParse {
        /// The file.
        path: std::path::PathBuf,
        /// Why, when reqwest said.
        #[source]
        source: Option<reqwest::Error>,
    },
    /// The HTTP client could not be set up.
    #[error("cannot set up the HTTPS client")]
    Build(#[source] reqwest::Error),
    /// The request did not get an answer.
    #[error("no answer from the hub at {endpoint} (is it running, and is the CA the one that signed its certificate?)")]
    Transport {
        /// The endpoint asked.
        endpoint: Url,
        /// Why.
        #[source]
        source: reqwest::Error,
    },
    /// The hub answered something this client cannot read.
    #[error("unexpected answer from the hub to {what}: {detail}")]
    Unexpected {
        /// The operation.
        what: &'static str,
        /// What was wrong.
        detail: String,
    },
    /// A value cannot be carried in an HTTP header.
    #[error("{what} '{value}' cannot be sent in an HTTP header (visible ASCII only)")]
    Header {
        /// Which header.
        what: String,
        /// The offending value.
        value: String,
    },
}

/// A client for one hub, signing every request with one token.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    http: reqwest::Client,
    endpoint: Url,
    authorization: HeaderValue,
}

impl Client {
    /// Builds a client for `target` that trusts only the target's CA.
    pub(crate) fn new(target: &Target, authorization: &str) -> Result<Self, ClientError> {
        let pem = std::fs::read(&target.ca_path).map_err(|source| ClientError::CaRead {
            path: target.ca_path.clone(),
            source,
        })?;
        let certificates =
            reqwest::Certificate::from_pem_bundle(&pem).map_err(|source| ClientError::CaParse {
                path: target.ca_path.clone(),
                source: Some(source),
            })?;
        if certificates.is_empty() {
            return Err(ClientError::CaParse {
                path: target.ca_path.clone(),
                source: None,
            });
        }
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .connect_timeout(CONNECT_TIMEOUT)
            .user_agent(concat!("courier-cli/", env!("CARGO_PKG_VERSION")));
        for certificate in certificates {
            builder = builder.add_root_certificate(certificate);
        }
        let http = builder.build().map_err(ClientError::Build)?;
        let authorization =
            HeaderValue::from_str(authorization).map_err(|_| ClientError::Header {
                what: "the SAS token".into(),
                value: authorization.to_owned(),
            })?;
        Ok(Self {
            http,
            endpoint: target.endpoint.clone(),
            authorization,
        })
    }

    // Registry API.

    /// `PUT /devices/{id}` without If-Match: creates, or fails with 409001.
    pub(crate) async fn create_device(&self, device: &Device) -> Result<Device, ClientError> {
        let request = self
            .request(Method::PUT, &["devices", &device.device_id])
            .json(device);
        self.json(request, "create device").await
    }

    /// `PUT /devices/{id}` with `If-Match: "{etag}"`: replaces, or fails with 412001.
    pub(crate) async fn replace_device(
        &self,
        device: &Device,
        etag: &str,
    ) -> Result<Device, ClientError> {
        let request = self
            .request(Method::PUT, &["devices", &device.device_id])
            .header(IF_MATCH, quoted_etag(etag)?)
            .json(device);
        self.json(request, "update device").await
    }

    /// `GET /devices/{id}`.
    pub(crate) async fn get_device(&self, id: &str) -> Result<Device, ClientError> {
        let request = self.request(Method::GET, &["devices", id]);
        self.json(request, "get device").await
    }

    /// `GET /devices?top=n`.
    pub(crate) async fn list_devices(&self, top: Option<u32>) -> Result<Vec<Device>, ClientError> {
        let mut request = self.request(Method::GET, &["devices"]);
        if let Some(top) = top {
            request = request.query(&[("top", top)]);
        }
        self.json(request, "list devices").await
    }

    /// `DELETE /devices/{id}`, with If-Match when an etag is given.
    pub(crate) async fn delete_device(
        &self,
        id: &str,
        etag: Option<&str>,
    ) -> Result<(), ClientError> {
        let mut request = self.request(Method::DELETE, &["devices", id]);
        if let Some(etag) = etag {
            request = request.header(IF_MATCH, quoted_etag(etag)?);
        }
        self.send(request).await.map(drop)
    }

    // Service API.

    /// `POST /devices/{id}/messages/deviceBound`: queues a message.
    pub(crate) async fn send_message(
        &self,
        device_id: &str,
        message: &OutgoingMessage,
    ) -> Result<SendReceipt, ClientError> {
        let request = self
            .request(
                Method::POST,
                &["devices", device_id, "messages", "deviceBound"],
            )
            .headers(message_headers(message)?)
            .body(message.body.clone());
        self.json(request, "send").await
    }

    /// `DELETE /devices/{id}/commands`: removes every queued message.
    pub(crate) async fn purge(&self, device_id: &str) -> Result<PurgeResult, ClientError> {
        let request = self.request(Method::DELETE, &["devices", device_id, "commands"]);
        self.json(request, "purge").await
    }

    /// `GET /messages/serviceBound/feedback`, long-polling up to `wait` in total.
    pub(crate) async fn receive_feedback(
        &self,
        wait: Duration,
    ) -> Result<Option<FeedbackBatch>, ClientError> {
        let path = ["messages", "serviceBound", "feedback"];
        let Some(response) = self.long_poll(&path, wait).await? else {
            return Ok(None);
        };
        let headers = response.headers().clone();
        let lock_token = lock_token(&headers, "receive feedback")?;
        let bytes = response.bytes().await.map_err(|e| self.transport(e))?;
        let records: Vec<FeedbackRecord> =
            serde_json::from_slice(&bytes).map_err(|e| ClientError::Unexpected {
                what: "receive feedback",
                detail: e.to_string(),
            })?;
        Ok(Some(FeedbackBatch {
            lock_token,
            enqueued_time_utc: header_string(&headers, "iothub-enqueuedtime"),
            delivery_count: header_number(&headers, "iothub-deliverycount"),
            records,
        }))
    }

    /// `DELETE /messages/serviceBound/feedback/{lockToken}`.
    pub(crate) async fn complete_feedback(&self, lock_token: &str) -> Result<(), ClientError> {
        let path = ["messages", "serviceBound", "feedback", lock_token];
        self.send(self.request(Method::DELETE, &path))
            .await
            .map(drop)
    }

    /// `POST /messages/serviceBound/feedback/{lockToken}/abandon`.
    pub(crate) async fn abandon_feedback(&self, lock_token: &str) -> Result<(), ClientError> {
        let path = [
            "messages",
            "serviceBound",
            "feedback",
            lock_token,
            "abandon",
        ];
        self.send(self.request(Method::POST, &path)).await.map(drop)
    }

    /// `GET /courier/hub`.
    pub(crate) async fn hub_info(&self) -> Result<HubInfo, ClientError> {
        self.json(self.request(Method::GET, &["courier", "hub"]), "hub info")
            .await
    }

    // Device API.

    /// `GET /devices/{id}/messages/deviceBound`, long-polling up to `wait` in total.
    pub(crate) async fn receive_message(
        &self,
        device_id: &str,
        wait: Duration,
    ) -> Result<Option<ReceivedMessage>, ClientError> {
        let path = ["devices", device_id, "messages", "deviceBound"];
        let Some(response) = self.long_poll(&path, wait).await? else {
            return Ok(None);
        };
        let headers = response.headers().clone();
        let body = response.bytes().await.map_err(|e| self.transport(e))?;
        received_message(&headers, body.to_vec()).map(Some)
    }

    /// `DELETE /devices/{id}/messages/deviceBound/{lockToken}`.
    pub(crate) async fn complete_message(
        &self,
        device_id: &str,
        lock_token: &str,
    ) -> Result<(), ClientError> {
        let path = ["devices", device_id, "messages", "deviceBound", lock_token];
        self.send(self.request(Method::DELETE, &path))
            .await
            .map(drop)
    }

    /// `DELETE /devices/{id}/messages/deviceBound/{lockToken}?reject`.
    pub(crate) async fn reject_message(
        &self,
        device_id: &str,
        lock_token: &str,
    ) -> Result<(), ClientError> {
        let path = ["devices", device_id, "messages", "deviceBound", lock_token];
        let request = self
            .request(Method::DELETE, &path)
            .query(&[("reject", "true")]);
        self.send(request).await.map(drop)
    }

    /// `POST /devices/{id}/messages/deviceBound/{lockToken}/abandon`.
    pub(crate) async fn abandon_message(
        &self,
        device_id: &str,
        lock_token: &str,
    ) -> Result<(), ClientError> {
        let path = [
            "devices",
            device_id,
            "messages",
            "deviceBound",
            lock_token,
            "abandon",
        ];
        self.send(self.request(Method::POST, &path)).await.map(drop)
    }

    // Plumbing.

    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.endpoint.clone();
        // An https URL with a host always has path segments (the target
        // validated both), so this branch is always taken.
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    fn request(&self, method: Method, segments: &[&str]) -> RequestBuilder {
        self.http
            .request(method, self.url(segments))
            .header(AUTHORIZATION, self.authorization.clone())
            .timeout(REQUEST_SLACK)
    }

    fn transport(&self, source: reqwest::Error) -> ClientError {
        ClientError::Transport {
            endpoint: self.endpoint.clone(),
            source,
        }
    }

    /// Sends and turns any non-2xx answer into an [`ApiError`].
    async fn send(&self, request: RequestBuilder) -> Result<Response, ClientError> {
        let response = request.send().await.map_err(|e| self.transport(e))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let header = header_string(response.headers(), "iothub-errorcode");
        let body = response.bytes().await.map_err(|e| self.transport(e))?;
        Err(ApiError::parse(status, header.as_deref(), &body).into())
    }

    async fn json<T: DeserializeOwned>(
        &self,
        request: RequestBuilder,
        what: &'static str,
    ) -> Result<T, ClientError> {
        let response = self.send(request).await?;
        let bytes = response.bytes().await.map_err(|e| self.transport(e))?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Unexpected {
            what,
            detail: e.to_string(),
        })
    }

    /// GETs `segments` with `wait=` until a 200 arrives or `wait` has passed.
    ///
    /// The hub honours at most 60 s per request, so longer waits are several
    /// requests; a zero wait is one request that does not wait.
    async fn long_poll(
        &self,
        segments: &[&str],
        wait: Duration,
    ) -> Result<Option<Response>, ClientError> {
        let deadline = Instant::now() + wait;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            let this_wait = remaining.min(MAX_WAIT_PER_REQUEST);
            let seconds = this_wait.as_secs() + u64::from(this_wait.subsec_nanos() > 0);
            let request = self
                .request(Method::GET, segments)
                .query(&[("wait", seconds)])
                .timeout(this_wait + REQUEST_SLACK);
            let response = self.send(request).await?;
            match response.status() {
                StatusCode::NO_CONTENT if Instant::now() < deadline => continue,
                StatusCode::NO_CONTENT => return Ok(None),
                _ => return Ok(Some(response)),
            }
        }
    }
}

fn quoted_etag(etag: &str) -> Result<HeaderValue, ClientError> {
    let etag = etag.trim();
    let quoted = if etag == "*" || (etag.len() >= 2 && etag.starts_with('"') && etag.ends_with('"'))
    {
        etag.to_owned()
    } else {
        format!("\"{etag}\"")
    };
    HeaderValue::from_str(&quoted).map_err(|_| ClientError::Header {
        what: "etag".into(),
        value: etag.to_owned(),
    })
}

fn header_value(what: &str, value: &str) -> Result<HeaderValue, ClientError> {
    HeaderValue::from_str(value).map_err(|_| ClientError::Header {
        what: what.to_owned(),
        value: value.to_owned(),
    })
}

/// The request headers that carry a message's properties.
fn message_headers(message: &OutgoingMessage) -> Result<HeaderMap, ClientError> {
    let mut headers = HeaderMap::new();
    let optional = [
        ("iothub-messageid", &message.message_id),
        ("iothub-correlationid", &message.correlation_id),
        ("iothub-userid", &message.user_id),
        ("iothub-contentencoding", &message.content_encoding),
    ];
    for (name, value) in optional {
        if let Some(value) = value {
            headers.insert(name, header_value(name, value)?);
        }
    }
    if let Some(content_type) = &message.content_type {
        headers.insert(CONTENT_TYPE, header_value("content type", content_type)?);
    }
    headers.insert("iothub-ack", HeaderValue::from_static(message.ack.as_str()));
    match &message.expiry {
        Expiry::Default => {}
        Expiry::TtlSeconds(seconds) => {
            headers.insert("iothub-ttl", HeaderValue::from(*seconds));
        }
        Expiry::At(time) => {
            headers.insert("iothub-expiry", header_value("expiry", time)?);
        }
    }
    for (name, value) in &message.properties {
        let header = format!("iothub-app-{name}");
        let header_name =
            HeaderName::try_from(header.as_str()).map_err(|_| ClientError::Header {
                what: "property name".into(),
                value: name.clone(),
            })?;
        headers.append(
            header_name,
            header_value(&format!("property '{name}'"), value)?,
        );
    }
    Ok(headers)
}

/// A header's value as text. The hub sends property values as raw UTF-8,
/// which `HeaderValue::to_str` (visible ASCII only) would refuse.
fn header_string(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(header_text)
}

fn header_text(value: &reqwest::header::HeaderValue) -> Option<String> {
    String::from_utf8(value.as_bytes().to_vec()).ok()
}

fn header_number<T: std::str::FromStr>(headers: &HeaderMap, name: &str) -> Option<T> {
    header_string(headers, name).and_then(|v| v.trim().parse().ok())
}

fn lock_token(headers: &HeaderMap, what: &'static str) -> Result<String, ClientError> {
    header_string(headers, ETAG.as_str())
        .map(|etag| etag.trim().trim_matches('"').to_owned())
        .filter(|token| !token.is_empty())
        .ok_or(ClientError::Unexpected {
            what,
            detail: "no ETag (lock token) header".into(),
        })
}

/// Reads a received message from the 200 response's headers and body.
fn received_message(headers: &HeaderMap, body: Vec<u8>) -> Result<ReceivedMessage, ClientError> {
    let either = |a: &str, b: &str| header_string(headers, a).or_else(|| header_string(headers, b));
    let mut properties: Vec<(String, String)> = headers
        .iter()
        .filter_map(|(name, value)| {
            let property = name.as_str().strip_prefix("iothub-app-")?;
            Some((property.to_owned(), header_text(value)?))
        })
        .collect();
    properties.sort();
    Ok(ReceivedMessage {
        body,
        lock_token: lock_token(headers, "receive")?,
        sequence_number: header_number(headers, "iothub-sequencenumber"),
        delivery_count: header_number(headers, "iothub-deliverycount"),
        message_id: header_string(headers, "iothub-messageid"),
        correlation_id: header_string(headers, "iothub-correlationid"),
        user_id: header_string(headers, "iothub-userid"),
        to: header_string(headers, "iothub-to"),
        ack: header_string(headers, "iothub-ack"),
        enqueued_time_utc: header_string(headers, "iothub-enqueuedtime"),
        expiry_time_utc: header_string(headers, "iothub-expiry"),
        content_type: either("iothub-contenttype", "contenttype"),
        content_encoding: either("iothub-contentencoding", "contentencoding"),
        properties,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Ack;

    #[test]
    fn error_bodies_give_code_name_and_text() {
        let body = br#"{"Message":"ErrorCode:DeviceNotFound;Device 'dev1' is not registered","ExceptionMessage":"Tracking ID:x-TimeStamp:y","errorCode":404001}"#;
        let error = ApiError::parse(404, Some("DeviceNotFound"), body);
        assert_eq!(
            error,
            ApiError {
                status: 404,
                code: 404001,
                name: "DeviceNotFound".into(),
                message: "Device 'dev1' is not registered".into(),
            }
        );
        assert_eq!(
            error.to_string(),
            "DeviceNotFound (404001): Device 'dev1' is not registered"
        );
    }

    #[test]
    fn the_error_name_comes_from_the_message_when_the_header_is_missing() {
        let body =
            br#"{"Message":"ErrorCode:PreconditionFailed;etag mismatch","errorCode":"412001"}"#;
        let error = ApiError::parse(412, None, body);
        assert_eq!(
            (error.code, error.name.as_str()),
            (412001, "PreconditionFailed")
        );
        assert_eq!(error.message, "etag mismatch");
    }

    #[test]
    fn bodies_without_iot_hub_fields_fall_back_to_the_http_status() {
        let error = ApiError::parse(503, None, b"upstream gone\n");
        assert_eq!(error.code, 503000);
        assert_eq!(error.name, "ServiceUnavailable");
        assert_eq!(error.message, "upstream gone");
        let empty = ApiError::parse(404, Some("NotFound"), b"");
        assert_eq!((empty.code, empty.name.as_str()), (404000, "NotFound"));
        assert_eq!(empty.message, "the hub answered HTTP 404");
    }

    fn message() -> OutgoingMessage {
        OutgoingMessage {
            body: b"hi".to_vec(),
            message_id: Some("m1".into()),
            correlation_id: None,
            user_id: None,
            content_type: Some("application/json".into()),
            content_encoding: None,
            ack: Ack::Full,
            expiry: Expiry::TtlSeconds(90),
            properties: vec![("color".into(), "red".into()), ("a".into(), "x=y".into())],
        }
    }

    #[test]
    fn received_headers_keep_non_ascii_values() {
        let mut headers = HeaderMap::new();
        let text = |s: &str| reqwest::header::HeaderValue::from_bytes(s.as_bytes()).unwrap();
        headers.insert("etag", text("\"35567cd3-abf5-4b5e-aa09-9b29dad7363f\""));
        headers.insert("iothub-messageid", text("café ✓"));
        headers.insert("iothub-app-note", text("été"));
        let m = received_message(&headers, b"x".to_vec()).unwrap();
        assert_eq!(m.message_id.as_deref(), Some("café ✓"));
        assert_eq!(m.properties, vec![("note".to_owned(), "été".to_owned())]);
    }

    #[test]
    fn messages_become_iothub_headers() {
        let headers = message_headers(&message()).unwrap();
        assert_eq!(headers["iothub-messageid"], "m1");
        assert_eq!(headers["iothub-ack"], "full");
        assert_eq!(headers["iothub-ttl"], "90");
        assert_eq!(headers["content-type"], "application/json");
        assert_eq!(headers["iothub-app-color"], "red");
        assert_eq!(headers["iothub-app-a"], "x=y");
        assert!(!headers.contains_key("iothub-correlationid"));
        assert!(!headers.contains_key("iothub-expiry"));
    }

    #[test]
    fn properties_that_cannot_be_headers_are_refused_locally() {
        let mut bad_name = message();
        bad_name.properties = vec![("has space".into(), "v".into())];
        assert!(matches!(
            message_headers(&bad_name),
            Err(ClientError::Header { .. })
        ));
        let mut bad_value = message();
        bad_value.properties = vec![("k".into(), "line\nbreak".into())];
        assert!(matches!(
            message_headers(&bad_value),
            Err(ClientError::Header { .. })
        ));
    }

    #[test]
    fn received_headers_become_a_message() {
        let mut headers = HeaderMap::new();
        headers.insert(ETAG, HeaderValue::from_static("\"lock-1\""));
        headers.insert("iothub-sequencenumber", HeaderValue::from_static("7"));
        headers.insert("iothub-deliverycount", HeaderValue::from_static("1"));
        headers.insert("iothub-messageid", HeaderValue::from_static("m1"));
        headers.insert("contenttype", HeaderValue::from_static("text/plain"));
        headers.insert("iothub-app-zeta", HeaderValue::from_static("z"));
        headers.insert("iothub-app-alpha", HeaderValue::from_static("a"));
        let message = received_message(&headers, b"body".to_vec()).unwrap();
        assert_eq!(message.lock_token, "lock-1");
        assert_eq!(message.sequence_number, Some(7));
        assert_eq!(message.delivery_count, Some(1));
        assert_eq!(message.content_type.as_deref(), Some("text/plain"));
        assert_eq!(
            message.properties,
            vec![("alpha".into(), "a".into()), ("zeta".into(), "z".into())]
        );
        headers.remove(ETAG);
        assert!(matches!(
            received_message(&headers, Vec::new()),
            Err(ClientError::Unexpected { .. })
        ));
    }

    #[test]
    fn etags_are_quoted_once() {
        assert_eq!(quoted_etag("abc").unwrap(), "\"abc\"");
        assert_eq!(quoted_etag("\"abc\"").unwrap(), "\"abc\"");
        assert_eq!(quoted_etag("*").unwrap(), "*");
    }
}
