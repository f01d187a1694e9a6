//! IoT Hub error responses: status, `iothub-errorcode` header and the JSON
//! body whose `Message` the Node SDK splits and whose header .NET cross-checks
//! (wire spec §4.4).

use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use courier_core::ErrorCode;
use serde::Serialize;

/// The header SDKs read the error name from.
pub(crate) const IOTHUB_ERRORCODE: HeaderName = HeaderName::from_static("iothub-errorcode");

/// A refusal, answered as IoT Hub answers it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{name} ({number}): {text}")]
pub(crate) struct ApiError {
    /// HTTP status.
    pub(crate) status: StatusCode,
    /// IoT Hub's six-digit code.
    pub(crate) number: u32,
    /// IoT Hub's error name.
    pub(crate) name: &'static str,
    /// What went wrong, for a person.
    pub(crate) text: String,
}

impl ApiError {
    /// An error with one of IoT Hub's codes.
    pub(crate) fn new(code: ErrorCode, text: impl Into<String>) -> Self {
        ApiError {
            status: StatusCode::from_u16(code.http_status())
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            number: code.number(),
            name: code.name(),
            text: text.into(),
        }
    }

    /// An error IoT Hub has no code for (only method-not-allowed).
    pub(crate) fn custom(
        status: StatusCode,
        number: u32,
        name: &'static str,
        text: impl Into<String>,
    ) -> Self {
        ApiError {
            status,
            number,
            name,
            text: text.into(),
        }
    }

    /// 400004: something in the request is malformed.
    pub(crate) fn argument(text: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::ArgumentInvalid, text)
    }

    /// 401002: the caller is not who may do this.
    pub(crate) fn unauthorized(text: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::IotHubUnauthorizedAccess, text)
    }

    /// 412002: a lock token names no lock held now.
    pub(crate) fn lock_lost(text: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::DeviceMessageLockLost, text)
    }

    /// 500001: the hub failed itself.
    pub(crate) fn server(text: impl Into<String>) -> Self {
        ApiError::new(ErrorCode::ServerError, text)
    }
}

impl From<courier_hub::Error> for ApiError {
    fn from(e: courier_hub::Error) -> Self {
        if let courier_hub::Error::Storage(_) = &e {
            tracing::error!(error = %e, "hub operation failed in storage");
        }
        ApiError::new(e.code(), e.to_string())
    }
}

#[derive(Serialize)]
struct ErrorBody {
    #[serde(rename = "Message")]
    message: String,
    #[serde(rename = "ExceptionMessage")]
    exception_message: String,
    #[serde(rename = "errorCode")]
    error_code: u32,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status.is_server_error() {
            tracing::warn!(code = self.number, text = %self.text, "request failed");
        } else {
            tracing::debug!(code = self.number, text = %self.text, "request refused");
        }
        let tracking_id = uuid::Uuid::new_v4().simple();
        let body = ErrorBody {
            message: format!("ErrorCode:{};{}", self.name, self.text),
            exception_message: format!(
                "Tracking ID:{tracking_id}-TimeStamp:{}",
                crate::timefmt::rfc3339(crate::timefmt::now())
            ),
            error_code: self.number,
        };
        // Serializing strings and a number cannot fail; an empty body would
        // still carry the status and header.
        let bytes = serde_json::to_vec(&body).unwrap_or_default();
        let mut response = (self.status, bytes).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(crate::json::JSON_CONTENT_TYPE),
        );
        headers.insert(IOTHUB_ERRORCODE, HeaderValue::from_static(self.name));
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn body_has_the_legacy_message_form_and_the_number() {
        let response = ApiError::new(ErrorCode::DeviceNotFound, "device 'dev1' is not registered")
            .into_response();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        assert_eq!(response.headers()[IOTHUB_ERRORCODE], "DeviceNotFound");
        assert_eq!(
            response.headers()[header::CONTENT_TYPE],
            "application/json; charset=utf-8"
        );
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(
            v["Message"],
            "ErrorCode:DeviceNotFound;device 'dev1' is not registered"
        );
        assert_eq!(v["errorCode"], 404001);
        let exception = v["ExceptionMessage"].as_str().unwrap();
        let rest = exception.strip_prefix("Tracking ID:").unwrap();
        let (id, stamp) = rest.split_once("-TimeStamp:").unwrap();
        assert_eq!(id.len(), 32);
        assert!(crate::timefmt::parse(stamp).is_some(), "{stamp}");
    }
}
