//! The HTTPS client shared by the device transport, the service client and
//! the registry manager: one reqwest client per identity over the
//! endpoint's rustls settings (client certificates included), a SAS token
//! minted once and renewed when due, `api-version` on every call, and the
//! hub's error answers read into [`HubError`] and typed by
//! `ClientError::from`.

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use percent_encoding::percent_decode_str;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, ETAG, RETRY_AFTER};
use reqwest::{Method, RequestBuilder, Response, StatusCode, Url};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use time::format_description::well_known::{Rfc2822, Rfc3339};
use time::OffsetDateTime;

use crate::credentials::{Credentials, Token};
use crate::net::Endpoint;
use crate::{ClientError, HubError};

/// The REST api-version sent with every call (IoT Hub's service SDKs' default).
pub(crate) const API_VERSION: &str = "2021-04-12";

/// Longest `wait` (seconds) the hub honours on one long-poll request.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(60);

/// `iothub-*` header names of the C2D message vocabulary (docs/http-api.md).
pub(crate) mod names {
    /// Message id.
    pub(crate) const MESSAGE_ID: &str = "iothub-messageid";
    /// Correlation id.
    pub(crate) const CORRELATION_ID: &str = "iothub-correlationid";
    /// User id.
    pub(crate) const USER_ID: &str = "iothub-userid";
    /// Destination address.
    pub(crate) const TO: &str = "iothub-to";
    /// Feedback asked for.
    pub(crate) const ACK: &str = "iothub-ack";
    /// Absolute expiry, RFC 3339.
    pub(crate) const EXPIRY: &str = "iothub-expiry";
    /// Relative expiry in seconds (Courier's send extension).
    pub(crate) const TTL: &str = "iothub-ttl";
    /// When the hub queued it.
    pub(crate) const ENQUEUED_TIME: &str = "iothub-enqueuedtime";
    /// The hub's sequence number.
    pub(crate) const SEQUENCE_NUMBER: &str = "iothub-sequencenumber";
    /// Earlier deliveries.
    pub(crate) const DELIVERY_COUNT: &str = "iothub-deliverycount";
    /// Content type, D2C naming (the one Courier reads first on send).
    pub(crate) const CONTENT_TYPE: &str = "iothub-contenttype";
    /// Content encoding, D2C naming.
    pub(crate) const CONTENT_ENCODING: &str = "iothub-contentencoding";
    /// Content type, C2D naming (what the C SDK reads).
    pub(crate) const CONTENT_TYPE_C2D: &str = "contenttype";
    /// Content encoding, C2D naming.
    pub(crate) const CONTENT_ENCODING_C2D: &str = "contentencoding";
    /// Prefix of application property headers.
    pub(crate) const APP_PREFIX: &str = "iothub-app-";
    /// The error name on every error answer.
    pub(crate) const ERROR_CODE: &str = "iothub-errorcode";
}

/// An HTTPS client for one identity at one hub.
pub(crate) struct HttpClient {
    http: reqwest::Client,
    base: Url,
    credentials: Credentials,
    /// The token in use; a std mutex, never held across an await.
    token: Mutex<Option<Token>>,
    timeout: Duration,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("base", &self.base.as_str())
            .finish_non_exhaustive()
    }
}

impl HttpClient {
    /// A client for `endpoint`'s HTTPS port that signs with `credentials`
    /// and allows `timeout` per request (beyond any long-poll wait).
    pub(crate) fn new(
        endpoint: &Endpoint,
        credentials: Credentials,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let mut tls = (*endpoint.tls).clone();
        // h2 first: one connection then carries a long poll and the
        // settlements beside it; HTTP/1.1 for hubs (and proxies) without it.
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(timeout)
            .user_agent(concat!("courier-client/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ClientError::Tls(format!("cannot set up the HTTPS client: {e}")))?;
        let host = if endpoint.host.contains(':') && !endpoint.host.starts_with('[') {
            format!("[{}]", endpoint.host)
        } else {
            endpoint.host.clone()
        };
        let port = endpoint.connectivity.ports.https;
        let base = Url::parse(&format!("https://{host}:{port}/"))
            .map_err(|e| ClientError::InvalidArgument(format!("host name '{host}': {e}")))?;
        Ok(Self {
            http,
            base,
            credentials,
            token: Mutex::new(None),
            timeout,
        })
    }

    /// The `Authorization` value for a request sent now: the cached token
    /// until its renewal time, then a fresh one; `None` for X.509.
    pub(crate) fn authorization(&self) -> Result<Option<HeaderValue>, ClientError> {
        if self.credentials.is_x509() {
            return Ok(None);
        }
        let now = SystemTime::now();
        let current = self
            .token
            .lock()
            .ok()
            .and_then(|slot| slot.clone())
            .filter(|token| now < token.renew_at.unwrap_or(token.expires_at));
        let token = match current {
            Some(token) => token,
            None => {
                let Some(fresh) = self.credentials.token(now)? else {
                    return Ok(None);
                };
                tracing::debug!(resource = self.credentials.resource(), "minted a SAS token");
                if let Ok(mut slot) = self.token.lock() {
                    *slot = Some(fresh.clone());
                }
                fresh
            }
        };
        HeaderValue::from_str(&token.value)
            .map(Some)
            .map_err(|_| ClientError::InvalidArgument("the SAS token is not a header value".into()))
    }

    /// The URL of `segments` (each percent-encoded as one path segment)
    /// with `api-version` and the given query pairs (`None`: a bare key).
    pub(crate) fn url(&self, segments: &[&str], query: &[(&str, Option<&str>)]) -> Url {
        let mut url = self.base.clone();
        // The base is an https URL with a host, which always has a path.
        if let Ok(mut path) = url.path_segments_mut() {
            path.clear().extend(segments);
        }
        {
            let mut pairs = url.query_pairs_mut();
            pairs.append_pair("api-version", API_VERSION);
            for (key, value) in query {
                match value {
                    Some(value) => pairs.append_pair(key, value),
                    None => pairs.append_key_only(key),
                };
            }
        }
        url
    }

    /// A request to `segments`, authorized, with the default timeout.
    pub(crate) fn request(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(&str, Option<&str>)],
    ) -> Result<RequestBuilder, ClientError> {
        let mut request = self
            .http
            .request(method, self.url(segments, query))
            .timeout(self.timeout);
        if let Some(authorization) = self.authorization()? {
            request = request.header(AUTHORIZATION, authorization);
        }
        Ok(request)
    }

    /// Sends `request`; any answer but 2xx becomes the hub's typed error.
    /// `after` is the request's timeout, for the error it gives.
    pub(crate) async fn send(
        &self,
        request: RequestBuilder,
        operation: &'static str,
        after: Duration,
    ) -> Result<Response, ClientError> {
        let response = request
            .send()
            .await
            .map_err(|e| transport_error(e, operation, after))?;
        if response.status().is_success() {
            return Ok(response);
        }
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .bytes()
            .await
            .map_err(|e| transport_error(e, operation, after))?;
        Err(error_from_response(status, &headers, &body))
    }

    /// Sends `request` and reads the JSON answer.
    pub(crate) async fn json<T: DeserializeOwned>(
        &self,
        request: RequestBuilder,
        operation: &'static str,
    ) -> Result<T, ClientError> {
        let response = self.send(request, operation, self.timeout).await?;
        let body = read_body(response, operation, self.timeout).await?;
        serde_json::from_slice(&body).map_err(|e| {
            ClientError::Protocol(format!(
                "the hub's answer to {operation} is not the expected JSON: {e}"
            ))
        })
    }

    /// Sends `request` for its status only.
    pub(crate) async fn call(
        &self,
        request: RequestBuilder,
        operation: &'static str,
    ) -> Result<(), ClientError> {
        let response = self.send(request, operation, self.timeout).await?;
        // Reading the (empty) body lets the connection be reused at once.
        read_body(response, operation, self.timeout).await.map(drop)
    }

    /// One GET of `segments` asking the hub to hold it up to `wait`
    /// (Courier's `wait` extension, whole seconds, at most 60); `None` on
    /// 204. Hubs that ignore `wait` answer at once.
    pub(crate) async fn poll(
        &self,
        segments: &[&str],
        wait: Duration,
        operation: &'static str,
    ) -> Result<Option<(HeaderMap, Bytes)>, ClientError> {
        let seconds = wait_seconds(wait);
        let after = Duration::from_secs(seconds) + self.timeout;
        let seconds = seconds.to_string();
        let request = self
            .request(Method::GET, segments, &[("wait", Some(seconds.as_str()))])?
            .timeout(after);
        let response = self.send(request, operation, after).await?;
        if response.status() == StatusCode::NO_CONTENT {
            read_body(response, operation, after).await?;
            return Ok(None);
        }
        let headers = response.headers().clone();
        let body = read_body(response, operation, after).await?;
        Ok(Some((headers, body)))
    }
}

/// `wait` as whole seconds for the `wait` query (rounded down, at most 60).
pub(crate) fn wait_seconds(wait: Duration) -> u64 {
    wait.min(MAX_WAIT).as_secs()
}

async fn read_body(
    response: Response,
    operation: &'static str,
    after: Duration,
) -> Result<Bytes, ClientError> {
    response
        .bytes()
        .await
        .map_err(|e| transport_error(e, operation, after))
}

/// A failed exchange as the SDK's error: a lapse is a timeout, a refused
/// handshake a TLS error, anything else the network's fault.
fn transport_error(e: reqwest::Error, operation: &'static str, after: Duration) -> ClientError {
    if e.is_timeout() {
        return ClientError::Timeout { operation, after };
    }
    if e.is_builder() {
        return ClientError::InvalidArgument(error_chain(&e));
    }
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
    while let Some(error) = source {
        if let Some(tls) = error.downcast_ref::<rustls::Error>() {
            return ClientError::Tls(format!(
                "handshake failed: {tls} (is the CA the one that signed the hub's certificate?)"
            ));
        }
        // io::Error's own `source` skips the error it wraps, so step into it.
        source = match error
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(wrapped) => Some(wrapped as &(dyn std::error::Error + 'static)),
            None => error.source(),
        };
    }
    ClientError::Network(error_chain(&e))
}

/// An error and its causes on one line (reqwest's own text is terse).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}

/// A non-2xx answer as the typed error callers match on, with the
/// `Retry-After` hint on throttling.
pub(crate) fn error_from_response(status: u16, headers: &HeaderMap, body: &[u8]) -> ClientError {
    let name = header_string(headers, names::ERROR_CODE);
    let hub = HubError::from_http_response(status, name.as_deref(), body);
    match ClientError::from(hub) {
        ClientError::Throttled { error, retry_after } => ClientError::Throttled {
            error,
            retry_after: retry_after.or_else(|| {
                header_string(headers, RETRY_AFTER.as_str())
                    .and_then(|v| parse_retry_after(&v, SystemTime::now()))
            }),
        },
        other => other,
    }
}

/// `Retry-After`: delay seconds, or an HTTP date.
fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = system_time(OffsetDateTime::parse(value, &Rfc2822).ok()?)?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(rename = "Message", alias = "message", default)]
    message: Option<String>,
    #[serde(rename = "errorCode", alias = "ErrorCode", default)]
    error_code: Option<serde_json::Value>,
}

impl HubError {
    /// Reads an IoT Hub HTTPS error answer: its status, `iothub-errorcode`
    /// header and body `{"Message":"ErrorCode:{Name};{text}",…,"errorCode":n}`.
    /// Missing parts fall back to the header, then to the HTTP status, whose
    /// `{status}000` is IoT Hub's generic code for it.
    ///
    /// ```
    /// use courier_client::{ClientError, HubError};
    ///
    /// let body = br#"{"Message":"ErrorCode:DeviceNotFound;Device 'dev1' is not registered","errorCode":404001}"#;
    /// let error = HubError::from_http_response(404, Some("DeviceNotFound"), body);
    /// assert_eq!((error.code, error.name.as_str()), (404001, "DeviceNotFound"));
    /// assert!(matches!(ClientError::from(error), ClientError::NotFound(_)));
    /// ```
    pub fn from_http_response(status: u16, error_code_header: Option<&str>, body: &[u8]) -> Self {
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
        Self::new(code, name, message)
    }
}

/// A header's value as text. The hub sends values as raw UTF-8, which
/// `HeaderValue::to_str` (visible ASCII only) would refuse.
pub(crate) fn header_string(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get(name).and_then(header_text)
}

/// A header value as UTF-8 text, when it is.
pub(crate) fn header_text(value: &HeaderValue) -> Option<String> {
    String::from_utf8(value.as_bytes().to_vec()).ok()
}

/// A header's value parsed as a number.
pub(crate) fn header_number<T: std::str::FromStr>(headers: &HeaderMap, name: &str) -> Option<T> {
    header_string(headers, name).and_then(|v| v.trim().parse().ok())
}

/// A header's RFC 3339 time; `None` when absent, unreadable or before 1970
/// (IoT Hub's `0001-01-01T00:00:00Z` means "never").
pub(crate) fn header_time(headers: &HeaderMap, name: &str) -> Option<SystemTime> {
    let text = header_string(headers, name)?;
    system_time(OffsetDateTime::parse(text.trim(), &Rfc3339).ok()?)
}

/// A parsed time as a `SystemTime`; `None` before 1970 or beyond what the
/// platform holds (the conversions of `time` panic there).
fn system_time(at: OffsetDateTime) -> Option<SystemTime> {
    let seconds = u64::try_from(at.unix_timestamp()).ok()?;
    UNIX_EPOCH.checked_add(Duration::new(seconds, at.nanosecond()))
}

/// `at` as RFC 3339 UTC.
pub(crate) fn rfc3339(at: SystemTime) -> Result<String, ClientError> {
    let invalid = |why: String| ClientError::InvalidArgument(format!("time {at:?}: {why}"));
    let since = at
        .duration_since(UNIX_EPOCH)
        .map_err(|_| invalid("before 1970".into()))?;
    OffsetDateTime::from_unix_timestamp_nanos(i128::try_from(since.as_nanos()).unwrap_or(i128::MAX))
        .map_err(|e| invalid(e.to_string()))?
        .format(&Rfc3339)
        .map_err(|e| invalid(e.to_string()))
}

/// The lock token in the `ETag` header, unquoted.
pub(crate) fn lock_token(headers: &HeaderMap) -> Option<String> {
    header_string(headers, ETAG.as_str())
        .map(|etag| etag.trim().trim_matches('"').to_owned())
        .filter(|token| !token.is_empty())
}

/// An `If-Match` value: `*` as is, an etag quoted once.
pub(crate) fn if_match(etag: &str) -> Result<HeaderValue, ClientError> {
    let etag = etag.trim();
    let quoted = if etag == "*" || (etag.len() >= 2 && etag.starts_with('"') && etag.ends_with('"'))
    {
        etag.to_owned()
    } else {
        format!("\"{etag}\"")
    };
    HeaderValue::from_str(&quoted)
        .map_err(|_| ClientError::InvalidArgument(format!("etag {etag:?} is not a header value")))
}

/// A header value from text; non-ASCII UTF-8 is sent as raw bytes (the hub
/// reads values as UTF-8), control characters are refused.
pub(crate) fn header_value(what: &str, value: &str) -> Result<HeaderValue, ClientError> {
    HeaderValue::from_bytes(value.as_bytes()).map_err(|_| {
        ClientError::InvalidArgument(format!(
            "{what} {value:?} cannot be sent in an HTTP header (no control characters)"
        ))
    })
}

/// The `iothub-app-{name}` header for an application property. HTTP header
/// names are case-insensitive, so the hub sees the name lower-cased.
pub(crate) fn property_header(name: &str) -> Result<HeaderName, ClientError> {
    if name.is_empty() {
        return Err(ClientError::InvalidArgument(
            "an application property name is empty".into(),
        ));
    }
    HeaderName::try_from(format!("{}{name}", names::APP_PREFIX)).map_err(|_| {
        ClientError::InvalidArgument(format!(
            "application property name {name:?} cannot be an HTTP header name (letters, digits and !#$%&'*+-.^_`|~ only)"
        ))
    })
}

/// The application properties in a response's `iothub-app-*` headers, in
/// the order received. The hub percent-encodes characters a header name
/// cannot hold, so names are decoded.
pub(crate) fn properties(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .filter_map(|(name, value)| {
            let encoded = name.as_str().strip_prefix(names::APP_PREFIX)?;
            let name = percent_decode_str(encoded)
                .decode_utf8()
                .map_or_else(|_| encoded.to_owned(), |n| n.into_owned());
            Some((name, header_text(value)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_give_code_name_and_text() {
        let body = br#"{"Message":"ErrorCode:DeviceNotFound;Device 'dev1' is not registered","ExceptionMessage":"Tracking ID:x-TimeStamp:y","errorCode":404001}"#;
        let error = HubError::from_http_response(404, Some("DeviceNotFound"), body);
        assert_eq!(
            error,
            HubError::new(404001, "DeviceNotFound", "Device 'dev1' is not registered")
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
        let error = HubError::from_http_response(412, None, body);
        assert_eq!(
            (error.code, error.name.as_str()),
            (412001, "PreconditionFailed")
        );
        assert_eq!(error.message, "etag mismatch");
    }

    #[test]
    fn bodies_without_iot_hub_fields_fall_back_to_the_http_status() {
        let error = HubError::from_http_response(503, None, b"upstream gone\n");
        assert_eq!(error.code, 503000);
        assert_eq!(error.name, "ServiceUnavailable");
        assert_eq!(error.message, "upstream gone");
        let empty = HubError::from_http_response(404, Some("NotFound"), b"");
        assert_eq!((empty.code, empty.name.as_str()), (404000, "NotFound"));
        assert_eq!(empty.message, "the hub answered HTTP 404");
    }

    #[test]
    fn error_answers_become_the_variants_callers_match_on() {
        let mut headers = HeaderMap::new();
        headers.insert(
            names::ERROR_CODE,
            HeaderValue::from_static("ThrottlingException"),
        );
        headers.insert(RETRY_AFTER, HeaderValue::from_static("7"));
        let body = br#"{"Message":"ErrorCode:ThrottlingException;slow down","errorCode":429001}"#;
        match error_from_response(429, &headers, body) {
            ClientError::Throttled { error, retry_after } => {
                assert_eq!(error.code, 429001);
                assert_eq!(retry_after, Some(Duration::from_secs(7)));
            }
            other => panic!("{other:?}"),
        }
        let unauthorized = br#"{"Message":"ErrorCode:IotHubUnauthorizedAccess;Unauthorized"}"#;
        assert!(matches!(
            error_from_response(401, &HeaderMap::new(), unauthorized),
            ClientError::Unauthorized(_)
        ));
        let lock = br#"{"Message":"ErrorCode:DeviceMessageLockLost;gone","errorCode":412002}"#;
        assert!(matches!(
            error_from_response(412, &HeaderMap::new(), lock),
            ClientError::LockLost(_)
        ));
    }

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        assert_eq!(
            parse_retry_after(" 12 ", now),
            Some(Duration::from_secs(12))
        );
        // 2001-09-09T01:46:50Z is 1_000_000_010.
        assert_eq!(
            parse_retry_after("Sun, 09 Sep 2001 01:46:50 GMT", now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[test]
    fn urls_encode_segments_and_carry_the_api_version() {
        let endpoint = Endpoint::new("localhost", &Default::default(), None).unwrap();
        let cs = courier_auth::ConnectionString::for_policy(
            "localhost",
            "service",
            "vkHC4S2PygsHjOs/d0Ymj3mF0hPk8HJTSPdXl0M0Zqo=",
        );
        let credentials = Credentials::service(&cs, Duration::from_secs(60)).unwrap();
        let client = HttpClient::new(&endpoint, credentials, Duration::from_secs(5)).unwrap();
        let url = client.url(
            &["devices", "a b/c#d", "messages", "deviceBound", "lock"],
            &[("reject", None)],
        );
        assert_eq!(
            url.as_str(),
            "https://localhost/devices/a%20b%2Fc%23d/messages/deviceBound/lock?api-version=2021-04-12&reject"
        );
        let first = client.authorization().unwrap().unwrap();
        assert_eq!(client.authorization().unwrap().unwrap(), first);
    }

    #[test]
    fn etags_are_quoted_once() {
        assert_eq!(if_match("abc").unwrap(), "\"abc\"");
        assert_eq!(if_match("\"abc\"").unwrap(), "\"abc\"");
        assert_eq!(if_match("*").unwrap(), "*");
    }

    #[test]
    fn property_names_and_values_that_cannot_be_headers_are_refused() {
        assert_eq!(
            property_header("Color").unwrap().as_str(),
            "iothub-app-color"
        );
        assert!(property_header("has space").is_err());
        assert!(property_header("").is_err());
        assert!(header_value("v", "line\nbreak").is_err());
        assert_eq!(
            header_value("v", "été").unwrap().as_bytes(),
            "été".as_bytes()
        );
    }

    #[test]
    fn response_properties_keep_order_and_decode_names() {
        let mut headers = HeaderMap::new();
        let text = |s: &str| HeaderValue::from_bytes(s.as_bytes()).unwrap();
        headers.insert("iothub-app-zeta", text("z"));
        headers.insert("content-type", text("text/plain"));
        headers.insert("iothub-app-a%20b", text("été"));
        assert_eq!(
            properties(&headers),
            vec![
                ("zeta".to_owned(), "z".to_owned()),
                ("a b".to_owned(), "été".to_owned())
            ]
        );
    }

    #[test]
    fn times_parse_from_rfc3339_and_never_is_none() {
        let mut headers = HeaderMap::new();
        headers.insert(
            names::EXPIRY,
            HeaderValue::from_static("2026-11-23T06:06:56.889Z"),
        );
        headers.insert(
            names::ENQUEUED_TIME,
            HeaderValue::from_static("0001-01-01T00:00:00Z"),
        );
        let expiry = header_time(&headers, names::EXPIRY).unwrap();
        assert_eq!(
            expiry.duration_since(UNIX_EPOCH).unwrap(),
            Duration::from_millis(1_795_414_016_889)
        );
        assert_eq!(header_time(&headers, names::ENQUEUED_TIME), None);
        assert_eq!(rfc3339(expiry).unwrap(), "2026-11-23T06:06:56.889Z");
    }
}
