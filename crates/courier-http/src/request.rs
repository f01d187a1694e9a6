//! Reading requests without ever answering in axum's plain-text rejections:
//! path parameters, bodies and the query parameters the API knows (`wait`,
//! `reject`, `top`); every refusal is an IoT Hub error.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, Uri};
use courier_core::{DeviceId, ErrorCode, LockToken};
use percent_encoding::percent_decode_str;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Longest long-poll a request may ask for.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(60);

/// Most devices one list returns, and the default.
pub(crate) const MAX_TOP: usize = 1000;

/// Percent-decoded path parameters; a path that does not decode is 400004.
pub(crate) struct Params<T>(pub(crate) T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(t)| Params(t))
            .map_err(|e| ApiError::argument(format!("invalid path: {}", e.body_text())))
    }
}

/// The request body; over the body limit is 413001, anything else unreadable 400004.
pub(crate) struct Body(pub(crate) Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        Bytes::from_request(req, state)
            .await
            .map(Body)
            .map_err(|e| match e.status() {
                StatusCode::PAYLOAD_TOO_LARGE => ApiError::new(
                    ErrorCode::MessageTooLarge,
                    format!("request body too large: {}", e.body_text()),
                ),
                _ => ApiError::argument(format!("unreadable request body: {}", e.body_text())),
            })
    }
}

/// A device id from the path (already percent-decoded), checked against IoT Hub's rules.
pub(crate) fn device_id(id: &str) -> Result<DeviceId, ApiError> {
    DeviceId::new(id).map_err(|e| ApiError::argument(format!("invalid device id {id:?}: {e}")))
}

/// A lock token from the path. A malformed one names no lock, so it is
/// answered as a lost lock (412002), as IoT Hub would.
pub(crate) fn lock_token(s: &str) -> Result<LockToken, ApiError> {
    // Clients that pass the ETag on unchanged keep its quotes.
    LockToken::parse(s.trim().trim_matches('"')).map_err(|_| {
        ApiError::lock_lost(format!(
            "lock token {s:?} is not a GUID, so it names no lock; use the ETag of a received message"
        ))
    })
}

/// The query's `(key, value)` pairs, percent-decoded; a key without `=` has no value.
fn query_pairs(uri: &Uri) -> Vec<(String, Option<String>)> {
    let decode = |s: &str| percent_decode_str(s).decode_utf8_lossy().into_owned();
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((k, v)) => (decode(k), Some(decode(v))),
            None => (decode(pair), None),
        })
        .collect()
}

/// Whether a settle request is a reject: a query key `reject`, or `?reject`
/// as Java sends it (`%3Freject=true`), with any or no value.
pub(crate) fn is_reject(uri: &Uri) -> bool {
    query_pairs(uri)
        .iter()
        .any(|(k, _)| k == "reject" || k == "?reject")
}

/// The long-poll time asked by `wait={seconds}`: none means zero, above 60 is 60.
pub(crate) fn wait(uri: &Uri) -> Result<Duration, ApiError> {
    let Some((_, value)) = query_pairs(uri).into_iter().find(|(k, _)| k == "wait") else {
        return Ok(Duration::ZERO);
    };
    let value = value.unwrap_or_default();
    let seconds: u64 = value.trim().parse().map_err(|_| {
        ApiError::argument(format!(
            "wait must be a whole number of seconds from 0 to 60, got {value:?}"
        ))
    })?;
    Ok(Duration::from_secs(seconds).min(MAX_WAIT))
}

/// `top={n}` of a device list: 1–1000; absent or out of range is 1000, as IoT Hub does.
pub(crate) fn top(uri: &Uri) -> Result<usize, ApiError> {
    let Some((_, value)) = query_pairs(uri).into_iter().find(|(k, _)| k == "top") else {
        return Ok(MAX_TOP);
    };
    let value = value.unwrap_or_default();
    let n: i64 = value.trim().parse().map_err(|_| {
        ApiError::argument(format!(
            "top must be a number from 1 to 1000, got {value:?}"
        ))
    })?;
    Ok(usize::try_from(n)
        .ok()
        .filter(|n| (1..=MAX_TOP).contains(n))
        .unwrap_or(MAX_TOP))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uri(s: &str) -> Uri {
        s.parse().unwrap()
    }

    #[test]
    fn reject_in_every_spelling_the_sdks_use() {
        assert!(is_reject(&uri("/x?api-version=2021-04-12&reject")));
        assert!(is_reject(&uri("/x?api-version=2019-10-01&reject=")));
        assert!(is_reject(&uri("/x?api-version=2020-09-30&%3Freject=true")));
        assert!(is_reject(&uri("/x?reject=true")));
        assert!(!is_reject(&uri("/x?api-version=2021-04-12")));
        assert!(!is_reject(&uri("/x")));
        assert!(!is_reject(&uri("/x?rejected=1")));
    }

    #[test]
    fn wait_is_seconds_capped_at_sixty() {
        assert_eq!(wait(&uri("/x")).unwrap(), Duration::ZERO);
        assert_eq!(wait(&uri("/x?wait=5")).unwrap(), Duration::from_secs(5));
        assert_eq!(wait(&uri("/x?wait=600")).unwrap(), MAX_WAIT);
        assert_eq!(wait(&uri("/x?wait=soon")).unwrap_err().number, 400004);
        assert_eq!(wait(&uri("/x?wait=-1")).unwrap_err().number, 400004);
    }

    #[test]
    fn top_defaults_and_clamps_to_a_thousand() {
        assert_eq!(top(&uri("/devices")).unwrap(), 1000);
        assert_eq!(top(&uri("/devices?top=5")).unwrap(), 5);
        assert_eq!(top(&uri("/devices?top=0")).unwrap(), 1000);
        assert_eq!(top(&uri("/devices?top=5000")).unwrap(), 1000);
        assert_eq!(top(&uri("/devices?top=-3")).unwrap(), 1000);
        assert_eq!(top(&uri("/devices?top=x")).unwrap_err().number, 400004);
    }

    #[test]
    fn malformed_lock_tokens_are_lost_locks() {
        assert!(lock_token("35567cd3-abf5-4b5e-aa09-9b29dad7363f").is_ok());
        assert!(lock_token("\"35567cd3-abf5-4b5e-aa09-9b29dad7363f\"").is_ok());
        assert_eq!(lock_token("nope").unwrap_err().number, 412002);
    }
}
