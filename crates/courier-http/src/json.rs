//! JSON bodies in IoT Hub's camelCase shapes: the registry's device JSON (out,
//! and in as Python and Node PUT it), feedback records, and Courier's own
//! answers (send receipt, purge result, hub info, statistics).

use std::time::Duration;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use courier_core::{
    Authentication, AuthenticationType, DeviceId, DeviceSpec, DeviceStatus, LimitOverrides,
    QueueLimits, SymmetricKey, X509Thumbprint,
};
use courier_hub::{ConnectionState, DeviceInfo};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::timefmt::rfc3339_or_never;

/// The content type of every JSON answer; the Node SDK parses a body as JSON
/// only when the content type says so.
pub(crate) const JSON_CONTENT_TYPE: &str = "application/json; charset=utf-8";

/// `value` as a JSON response with `status`.
pub(crate) fn response(status: StatusCode, value: &impl Serialize) -> Result<Response, ApiError> {
    let bytes = serde_json::to_vec(value)
        .map_err(|e| ApiError::server(format!("could not encode the answer: {e}")))?;
    let mut response = (status, bytes).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(JSON_CONTENT_TYPE),
    );
    Ok(response)
}

// ----- device JSON, out -----

/// A device as IoT Hub's registry shows it.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct DeviceJson<'a> {
    device_id: &'a str,
    generation_id: &'a str,
    etag: String,
    connection_state: &'static str,
    status: &'static str,
    status_reason: Option<&'a str>,
    connection_state_updated_time: String,
    status_updated_time: String,
    last_activity_time: String,
    cloud_to_device_message_count: usize,
    authentication: AuthenticationJson<'a>,
    capabilities: CapabilitiesJson,
    #[serde(skip_serializing_if = "Option::is_none")]
    c2d_limits: Option<LimitsJson>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct AuthenticationJson<'a> {
    symmetric_key: KeysJson<'a>,
    x509_thumbprint: ThumbprintsJson<'a>,
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct KeysJson<'a> {
    primary_key: Option<&'a str>,
    secondary_key: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ThumbprintsJson<'a> {
    primary_thumbprint: Option<&'a str>,
    secondary_thumbprint: Option<&'a str>,
}

#[derive(Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct CapabilitiesJson {
    iot_edge: bool,
}

/// Courier's `c2dLimits` extension; absent fields keep the hub's values.
#[derive(Serialize, Deserialize, Default, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct LimitsJson {
    #[serde(skip_serializing_if = "Option::is_none")]
    max_queue_depth: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_message_size_bytes: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    default_ttl_seconds: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_ttl_seconds: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_delivery_count: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lock_timeout_seconds: Option<u64>,
}

impl LimitsJson {
    fn from_overrides(o: &LimitOverrides) -> Self {
        LimitsJson {
            max_queue_depth: o.max_queue_depth,
            max_message_size_bytes: o.max_message_size,
            default_ttl_seconds: o.default_ttl.map(|d| d.as_secs()),
            max_ttl_seconds: o.max_ttl.map(|d| d.as_secs()),
            max_delivery_count: o.max_delivery_count,
            lock_timeout_seconds: o.lock_timeout.map(|d| d.as_secs()),
        }
    }

    fn into_overrides(self) -> LimitOverrides {
        LimitOverrides {
            max_queue_depth: self.max_queue_depth,
            max_message_size: self.max_message_size_bytes,
            default_ttl: self.default_ttl_seconds.map(Duration::from_secs),
            max_ttl: self.max_ttl_seconds.map(Duration::from_secs),
            max_delivery_count: self.max_delivery_count,
            lock_timeout: self.lock_timeout_seconds.map(Duration::from_secs),
        }
    }
}

/// The wire spelling of an authentication type.
pub(crate) fn authentication_type_name(kind: AuthenticationType) -> &'static str {
    match kind {
        AuthenticationType::Sas => "sas",
        AuthenticationType::SelfSigned => "selfSigned",
        AuthenticationType::CertificateAuthority => "certificateAuthority",
        AuthenticationType::None => "none",
    }
}

impl<'a> DeviceJson<'a> {
    /// The registry view of `info`.
    pub(crate) fn new(info: &'a DeviceInfo) -> Self {
        let device = &info.device;
        let auth = &device.authentication;
        let keys = auth.symmetric_key.as_ref();
        DeviceJson {
            device_id: device.device_id.as_str(),
            generation_id: &device.generation_id,
            etag: device.etag(),
            connection_state: match info.connection_state {
                ConnectionState::Connected => "Connected",
                ConnectionState::Disconnected => "Disconnected",
            },
            status: match device.status {
                DeviceStatus::Enabled => "enabled",
                DeviceStatus::Disabled => "disabled",
            },
            status_reason: device.status_reason.as_deref(),
            connection_state_updated_time: rfc3339_or_never(info.connection_state_updated_time),
            status_updated_time: rfc3339_or_never(device.status_updated_time),
            last_activity_time: rfc3339_or_never(info.last_activity_time),
            cloud_to_device_message_count: info.cloud_to_device_message_count,
            authentication: AuthenticationJson {
                // IoT Hub always sends both objects, with null members when unused.
                symmetric_key: KeysJson {
                    primary_key: keys.map(|k| k.primary_key.as_str()),
                    secondary_key: keys.map(|k| k.secondary_key.as_str()),
                },
                x509_thumbprint: ThumbprintsJson {
                    primary_thumbprint: auth.x509_thumbprint.primary_thumbprint.as_deref(),
                    secondary_thumbprint: auth.x509_thumbprint.secondary_thumbprint.as_deref(),
                },
                kind: authentication_type_name(auth.kind),
            },
            capabilities: CapabilitiesJson {
                iot_edge: device.iot_edge,
            },
            c2d_limits: (!device.limits.is_empty())
                .then(|| LimitsJson::from_overrides(&device.limits)),
        }
    }
}

// ----- device JSON, in -----

/// A PUT body. Everything is optional and unknown fields are ignored, since
/// clients send back what they read (etag, times, connectionState, …).
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct DeviceBody {
    device_id: Option<String>,
    status: Option<String>,
    status_reason: Option<String>,
    authentication: Option<AuthenticationBody>,
    capabilities: Option<CapabilitiesBody>,
    c2d_limits: Option<LimitsJson>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct AuthenticationBody {
    #[serde(rename = "type")]
    kind: Option<String>,
    symmetric_key: Option<KeysBody>,
    x509_thumbprint: Option<ThumbprintsBody>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct KeysBody {
    primary_key: Option<String>,
    secondary_key: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct ThumbprintsBody {
    primary_thumbprint: Option<String>,
    secondary_thumbprint: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct CapabilitiesBody {
    iot_edge: Option<bool>,
}

/// Reads a registry PUT body. Python sends `"symmetricKey": {}` and Node
/// empty-string keys; both mean "generate the keys" (or keep them on update).
pub(crate) fn device_spec(body: &[u8]) -> Result<DeviceSpec, ApiError> {
    let body: DeviceBody = serde_json::from_slice(body)
        .map_err(|e| ApiError::argument(format!("invalid device JSON: {e}")))?;
    let device_id = body
        .device_id
        .filter(|id| !id.is_empty())
        .map(|id| {
            DeviceId::new(id).map_err(|e| ApiError::argument(format!("invalid deviceId: {e}")))
        })
        .transpose()?;
    let status = match body
        .status
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("enabled") => DeviceStatus::Enabled,
        Some("disabled") => DeviceStatus::Disabled,
        Some(other) => {
            return Err(ApiError::argument(format!(
                "status must be \"enabled\" or \"disabled\", got {other:?}"
            )))
        }
    };
    let auth = body.authentication.unwrap_or_default();
    let kind = match auth.kind.as_deref() {
        None => AuthenticationType::Sas,
        Some(s) if s.eq_ignore_ascii_case("sas") => AuthenticationType::Sas,
        Some(s) if s.eq_ignore_ascii_case("selfSigned") => AuthenticationType::SelfSigned,
        Some(s) if s.eq_ignore_ascii_case("certificateAuthority") => {
            AuthenticationType::CertificateAuthority
        }
        Some(s) if s.eq_ignore_ascii_case("none") => AuthenticationType::None,
        Some(other) => {
            return Err(ApiError::argument(format!(
                "authentication.type must be sas, selfSigned, certificateAuthority or none, got {other:?}"
            )))
        }
    };
    let keys = auth.symmetric_key.unwrap_or_default();
    let thumbprints = auth.x509_thumbprint.unwrap_or_default();
    let non_empty = |s: Option<String>| s.filter(|s| !s.trim().is_empty());
    Ok(DeviceSpec {
        device_id,
        status,
        status_reason: body.status_reason,
        authentication: Authentication {
            kind,
            // Empty keys tell the hub to generate (or keep) them.
            symmetric_key: Some(SymmetricKey {
                primary_key: keys.primary_key.unwrap_or_default(),
                secondary_key: keys.secondary_key.unwrap_or_default(),
            }),
            x509_thumbprint: X509Thumbprint {
                primary_thumbprint: non_empty(thumbprints.primary_thumbprint),
                secondary_thumbprint: non_empty(thumbprints.secondary_thumbprint),
            },
        },
        iot_edge: body
            .capabilities
            .and_then(|c| c.iot_edge)
            .unwrap_or_default(),
        limits: body
            .c2d_limits
            .map(LimitsJson::into_overrides)
            .unwrap_or_default(),
    })
}

// ----- Courier's own answers -----

/// The answer to a send.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SendReceiptJson<'a> {
    pub(crate) device_id: &'a str,
    pub(crate) message_id: Option<&'a str>,
    pub(crate) sequence_number: u64,
    pub(crate) enqueued_time_utc: String,
    pub(crate) expiry_time_utc: String,
}

/// The answer to a purge (IoT Hub's `PurgeMessageQueueResult`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PurgeJson<'a> {
    pub(crate) total_messages_purged: u32,
    pub(crate) device_id: &'a str,
    pub(crate) module_id: Option<&'a str>,
}

/// `GET /courier/hub`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct HubInfoJson<'a> {
    pub(crate) host_name: &'a str,
    pub(crate) version: &'a str,
    pub(crate) device_count: usize,
    pub(crate) queued_messages: usize,
    pub(crate) pending_feedback_records: usize,
    pub(crate) limits: HubLimitsJson,
}

/// The hub-wide C2D limits, named as in `c2dLimits`.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct HubLimitsJson {
    max_queue_depth: u32,
    max_message_size_bytes: u32,
    default_ttl_seconds: u64,
    max_ttl_seconds: u64,
    max_delivery_count: u32,
    lock_timeout_seconds: u64,
}

impl HubLimitsJson {
    /// The wire view of `limits`.
    pub(crate) fn new(limits: &QueueLimits) -> Self {
        HubLimitsJson {
            max_queue_depth: limits.max_queue_depth,
            max_message_size_bytes: limits.max_message_size,
            default_ttl_seconds: limits.default_ttl.as_secs(),
            max_ttl_seconds: limits.max_ttl.as_secs(),
            max_delivery_count: limits.max_delivery_count,
            lock_timeout_seconds: limits.lock_timeout.as_secs(),
        }
    }
}

/// `GET /statistics/devices` (IoT Hub's `RegistryStatistics`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RegistryStatisticsJson {
    pub(crate) total_device_count: usize,
    pub(crate) enabled_device_count: usize,
    pub(crate) disabled_device_count: usize,
}

/// `GET /statistics/service` (IoT Hub's `ServiceStatistics`).
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct ServiceStatisticsJson {
    pub(crate) connected_device_count: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_put_body_from_the_trace_asks_for_generated_keys() {
        let spec = device_spec(br#"{"deviceId": "harness-py-a6b98328", "status": "enabled", "authentication": {"symmetricKey": {}, "type": "sas"}, "capabilities": {"iotEdge": false}}"#).unwrap();
        assert_eq!(
            spec.device_id.as_ref().map(DeviceId::as_str),
            Some("harness-py-a6b98328")
        );
        assert_eq!(spec.status, DeviceStatus::Enabled);
        assert_eq!(spec.authentication.kind, AuthenticationType::Sas);
        assert_eq!(
            spec.authentication.symmetric_key,
            Some(SymmetricKey::default())
        );
        assert!(!spec.iot_edge);
        assert!(spec.limits.is_empty());
    }

    #[test]
    fn node_put_body_from_the_trace_asks_for_generated_keys() {
        let spec = device_spec(br#"{"deviceId":"harness-node-ef512772","status":"enabled","authentication":{"type":"sas","symmetricKey":{"primaryKey":"","secondaryKey":""}}}"#).unwrap();
        assert_eq!(spec.authentication.kind, AuthenticationType::Sas);
        assert_eq!(
            spec.authentication.symmetric_key,
            Some(SymmetricKey::default())
        );
    }

    #[test]
    fn reads_thumbprints_status_and_limits() {
        let spec = device_spec(br#"{"status":"Disabled","statusReason":"stolen","authentication":{"type":"selfSigned","x509Thumbprint":{"primaryThumbprint":"AB","secondaryThumbprint":""}},"capabilities":{"iotEdge":true},"c2dLimits":{"maxQueueDepth":5,"lockTimeoutSeconds":30}}"#).unwrap();
        assert_eq!(spec.device_id, None);
        assert_eq!(spec.status, DeviceStatus::Disabled);
        assert_eq!(spec.status_reason.as_deref(), Some("stolen"));
        assert_eq!(spec.authentication.kind, AuthenticationType::SelfSigned);
        assert_eq!(
            spec.authentication.x509_thumbprint,
            X509Thumbprint {
                primary_thumbprint: Some("AB".into()),
                secondary_thumbprint: None
            }
        );
        assert!(spec.iot_edge);
        assert_eq!(spec.limits.max_queue_depth, Some(5));
        assert_eq!(spec.limits.lock_timeout, Some(Duration::from_secs(30)));
        assert_eq!(spec.limits.max_ttl, None);
    }

    #[test]
    fn refuses_malformed_bodies_with_argument_invalid() {
        for body in [
            &b"not json"[..],
            br#"{"status":"sleeping"}"#,
            br#"{"authentication":{"type":"password"}}"#,
            br#"{"deviceId":"a b"}"#,
            br#"{"c2dLimits":{"maxQueueDept":5}}"#,
            br#"[]"#,
        ] {
            let err = device_spec(body).err().unwrap();
            assert_eq!(err.number, 400004, "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn limits_round_trip_between_json_and_overrides() {
        let json = LimitsJson {
            max_queue_depth: Some(3),
            max_message_size_bytes: Some(100),
            default_ttl_seconds: Some(10),
            max_ttl_seconds: Some(20),
            max_delivery_count: Some(4),
            lock_timeout_seconds: Some(5),
        };
        let overrides = json.into_overrides();
        assert_eq!(overrides.default_ttl, Some(Duration::from_secs(10)));
        let back = LimitsJson::from_overrides(&overrides);
        assert_eq!(back.max_queue_depth, Some(3));
        assert_eq!(back.max_ttl_seconds, Some(20));
        assert_eq!(back.lock_timeout_seconds, Some(5));
    }
}
