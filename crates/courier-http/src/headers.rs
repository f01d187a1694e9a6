//! C2D messages ↔ `iothub-*` headers (wire spec §4.1): what a sender's
//! headers ask for, and the headers a receiving device reads. Content type and
//! encoding go out under both namings, since the C SDK reads `ContentType` and
//! Java reads `iothub-contenttype`.

use std::time::Duration;

use axum::http::{header, HeaderMap, HeaderName, HeaderValue};
use courier_core::{devicebound_address, AckMode, Delivery, MessageProperties, Timestamp};
use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};

use crate::error::ApiError;
use crate::timefmt::{parse, rfc3339};

/// Prefix of application property headers.
pub(crate) const APP_PREFIX: &str = "iothub-app-";

const MESSAGE_ID: &str = "iothub-messageid";
const CORRELATION_ID: &str = "iothub-correlationid";
const USER_ID: &str = "iothub-userid";
const ACK: &str = "iothub-ack";
const EXPIRY: &str = "iothub-expiry";
const TTL: &str = "iothub-ttl";
const CONTENT_TYPE: &str = "iothub-contenttype";
const CONTENT_ENCODING: &str = "iothub-contentencoding";
const CONTENT_TYPE_C2D: &str = "contenttype";
const CONTENT_ENCODING_C2D: &str = "contentencoding";

/// Characters that cannot stand in a header name (RFC 9110 `tchar` complement).
const NOT_TCHAR: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'(')
    .add(b')')
    .add(b',')
    .add(b'/')
    .add(b':')
    .add(b';')
    .add(b'<')
    .add(b'=')
    .add(b'>')
    .add(b'?')
    .add(b'@')
    .add(b'[')
    .add(b'\\')
    .add(b']')
    .add(b'{')
    .add(b'}');

/// The header `name` as text; `None` when absent, 400004 when not UTF-8.
fn text(headers: &HeaderMap, name: &str) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(name) else {
        return Ok(None);
    };
    String::from_utf8(value.as_bytes().to_vec())
        .map(|s| Some(s.trim().to_owned()))
        .map_err(|_| ApiError::argument(format!("header {name} is not UTF-8")))
}

/// The message properties a send request's headers ask for. `now` turns an
/// `iothub-ttl` into an absolute expiry.
pub(crate) fn message_properties(
    headers: &HeaderMap,
    now: Timestamp,
) -> Result<MessageProperties, ApiError> {
    let non_empty = |name: &str| -> Result<Option<String>, ApiError> {
        Ok(text(headers, name)?.filter(|v| !v.is_empty()))
    };
    let ack = match non_empty(ACK)? {
        None => AckMode::None,
        Some(v) => AckMode::parse(&v).ok_or_else(|| {
            ApiError::argument(format!(
                "{ACK} must be none, positive, negative or full, got {v:?}"
            ))
        })?,
    };
    let expiry_time_utc = match (non_empty(EXPIRY)?, non_empty(TTL)?) {
        (Some(_), Some(_)) => {
            return Err(ApiError::argument(format!(
                "give {EXPIRY} or {TTL}, not both"
            )))
        }
        (Some(at), None) => Some(parse(&at).ok_or_else(|| {
            ApiError::argument(format!(
                "{EXPIRY} must be an RFC 3339 time such as 2026-11-23T10:00:00Z, got {at:?}"
            ))
        })?),
        (None, Some(ttl)) => {
            let seconds: u64 = ttl.parse().map_err(|_| {
                ApiError::argument(format!(
                    "{TTL} must be a whole number of seconds, got {ttl:?}"
                ))
            })?;
            Some(now.saturating_add(Duration::from_secs(seconds)))
        }
        (None, None) => None,
    };
    let content_type = match non_empty(CONTENT_TYPE)? {
        Some(v) => Some(v),
        None => match non_empty(CONTENT_TYPE_C2D)? {
            Some(v) => Some(v),
            None => non_empty(header::CONTENT_TYPE.as_str())?,
        },
    };
    let content_encoding = match non_empty(CONTENT_ENCODING)? {
        Some(v) => Some(v),
        None => non_empty(CONTENT_ENCODING_C2D)?,
    };
    let mut application = Vec::new();
    for (name, value) in headers {
        let Some(key) = name.as_str().strip_prefix(APP_PREFIX) else {
            continue;
        };
        if key.is_empty() {
            return Err(ApiError::argument(format!(
                "header {APP_PREFIX} names no application property"
            )));
        }
        let value = String::from_utf8(value.as_bytes().to_vec())
            .map_err(|_| ApiError::argument(format!("header {name} is not UTF-8")))?;
        application.push((key.to_owned(), value));
    }
    Ok(MessageProperties {
        message_id: non_empty(MESSAGE_ID)?,
        correlation_id: non_empty(CORRELATION_ID)?,
        user_id: non_empty(USER_ID)?,
        content_type,
        content_encoding,
        expiry_time_utc,
        ack,
        application,
    })
}

/// A header value for `s`: as is when HTTP allows it, else with control
/// characters percent-encoded (a property set over AMQP may hold any text).
fn value(s: &str) -> HeaderValue {
    HeaderValue::from_bytes(s.as_bytes()).unwrap_or_else(|_| {
        let encoded = utf8_percent_encode(s, CONTROLS).to_string();
        HeaderValue::from_bytes(encoded.as_bytes()).unwrap_or(HeaderValue::from_static(""))
    })
}

/// The headers of a delivered message (besides the body), as the SDKs read them.
pub(crate) fn delivery_headers(delivery: &Delivery) -> HeaderMap {
    let mut h = HeaderMap::new();
    let mut put = |name: &'static str, v: HeaderValue| {
        h.append(HeaderName::from_static(name), v);
    };
    let props = &delivery.message.properties;
    // Every SDK strips the quotes; C refuses an unquoted ETag.
    put("etag", value(&format!("\"{}\"", delivery.lock_token)));
    if let Some(v) = &props.message_id {
        put(MESSAGE_ID, value(v));
    }
    if let Some(v) = &props.correlation_id {
        put(CORRELATION_ID, value(v));
    }
    if let Some(v) = &props.user_id {
        put(USER_ID, value(v));
    }
    put(
        "iothub-to",
        value(&devicebound_address(delivery.device_id.as_str())),
    );
    put(EXPIRY, value(&rfc3339(delivery.expiry_time)));
    put(
        "iothub-enqueuedtime",
        value(&rfc3339(delivery.enqueued_time)),
    );
    put(
        "iothub-sequencenumber",
        HeaderValue::from(delivery.sequence_number.0),
    );
    put(
        "iothub-deliverycount",
        HeaderValue::from(delivery.delivery_count),
    );
    put(ACK, HeaderValue::from_static(props.ack.as_str()));
    match &props.content_type {
        Some(ct) => {
            put(CONTENT_TYPE_C2D, value(ct));
            put(CONTENT_TYPE, value(ct));
            put("content-type", value(ct));
        }
        None => put(
            "content-type",
            HeaderValue::from_static("application/octet-stream"),
        ),
    }
    if let Some(ce) = &props.content_encoding {
        put(CONTENT_ENCODING_C2D, value(ce));
        put(CONTENT_ENCODING, value(ce));
    }
    for (k, v) in &props.application {
        let name = format!("{APP_PREFIX}{}", utf8_percent_encode(k, NOT_TCHAR));
        if let Ok(name) = HeaderName::from_bytes(name.as_bytes()) {
            h.append(name, value(v));
        }
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;
    use courier_core::{C2dMessage, DeviceId, LockToken, SequenceNumber};
    use std::sync::Arc;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn send_headers_become_properties() {
        let now = Timestamp(1_000_000);
        let p = message_properties(
            &headers(&[
                ("iothub-messageid", "m1"),
                ("iothub-correlationid", "c1"),
                ("iothub-userid", "u1"),
                ("iothub-ack", "Full"),
                ("iothub-ttl", "30"),
                ("content-type", "application/json"),
                ("iothub-contentencoding", "utf-8"),
                ("iothub-app-color", "blue"),
                ("iothub-app-size", "L"),
            ]),
            now,
        )
        .unwrap();
        assert_eq!(p.message_id.as_deref(), Some("m1"));
        assert_eq!(p.correlation_id.as_deref(), Some("c1"));
        assert_eq!(p.user_id.as_deref(), Some("u1"));
        assert_eq!(p.ack, AckMode::Full);
        assert_eq!(p.expiry_time_utc, Some(Timestamp(1_030_000)));
        assert_eq!(p.content_type.as_deref(), Some("application/json"));
        assert_eq!(p.content_encoding.as_deref(), Some("utf-8"));
        assert_eq!(
            p.application,
            vec![
                ("color".to_owned(), "blue".to_owned()),
                ("size".to_owned(), "L".to_owned())
            ]
        );
    }

    #[test]
    fn iothub_content_type_wins_over_the_http_one() {
        let p = message_properties(
            &headers(&[
                ("content-type", "application/octet-stream"),
                ("iothub-contenttype", "text/plain"),
            ]),
            Timestamp(0),
        )
        .unwrap();
        assert_eq!(p.content_type.as_deref(), Some("text/plain"));
    }

    #[test]
    fn bad_send_headers_are_argument_invalid() {
        for pairs in [
            &[("iothub-ack", "always")][..],
            &[("iothub-expiry", "soon")][..],
            &[("iothub-ttl", "-1")][..],
            &[
                ("iothub-ttl", "5"),
                ("iothub-expiry", "2026-11-23T10:00:00Z"),
            ][..],
        ] {
            let err = message_properties(&headers(pairs), Timestamp(0)).unwrap_err();
            assert_eq!(err.number, 400004, "{pairs:?}");
        }
    }

    #[test]
    fn delivery_headers_carry_every_property_under_both_namings() {
        let delivery = Delivery {
            device_id: DeviceId::new("dev1").unwrap(),
            message: Arc::new(C2dMessage {
                properties: MessageProperties {
                    message_id: Some("m1".into()),
                    correlation_id: None,
                    user_id: Some("u".into()),
                    content_type: Some("text/plain".into()),
                    content_encoding: Some("utf-8".into()),
                    expiry_time_utc: None,
                    ack: AckMode::Negative,
                    application: vec![
                        ("color".into(), "blue".into()),
                        ("a b".into(), "line\nbreak".into()),
                    ],
                },
                body: b"hi".to_vec(),
            }),
            sequence_number: SequenceNumber(7),
            enqueued_time: Timestamp(1_795_414_016_889),
            expiry_time: Timestamp(1_795_417_616_889),
            delivery_count: 2,
            lock_token: LockToken::parse("35567cd3-abf5-4b5e-aa09-9b29dad7363f").unwrap(),
            locked_until: Timestamp(0),
        };
        let h = delivery_headers(&delivery);
        assert_eq!(h["etag"], "\"35567cd3-abf5-4b5e-aa09-9b29dad7363f\"");
        assert_eq!(h["iothub-messageid"], "m1");
        assert!(!h.contains_key("iothub-correlationid"));
        assert_eq!(h["iothub-userid"], "u");
        assert_eq!(h["iothub-to"], "/devices/dev1/messages/devicebound");
        assert_eq!(h["iothub-enqueuedtime"], "2026-11-23T06:06:56.889Z");
        assert_eq!(h["iothub-expiry"], "2026-11-23T07:06:56.889Z");
        assert_eq!(h["iothub-sequencenumber"], "7");
        assert_eq!(h["iothub-deliverycount"], "2");
        assert_eq!(h["iothub-ack"], "negative");
        assert_eq!(h["contenttype"], "text/plain");
        assert_eq!(h["iothub-contenttype"], "text/plain");
        assert_eq!(h["content-type"], "text/plain");
        assert_eq!(h["contentencoding"], "utf-8");
        assert_eq!(h["iothub-contentencoding"], "utf-8");
        assert_eq!(h["iothub-app-color"], "blue");
        assert_eq!(h["iothub-app-a%20b"], "line%0Abreak");
    }
}
