//! The identity registry model: devices as IoT Hub describes them.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::ids::DeviceId;
use crate::limits::LimitOverrides;
use crate::time::Timestamp;

/// Whether a device may connect and receive messages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeviceStatus {
    /// May connect.
    #[default]
    Enabled,
    /// Refused.
    Disabled,
}

/// How a device authenticates (`authentication.type`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum AuthenticationType {
    /// Symmetric keys (SAS tokens).
    #[default]
    Sas,
    /// X.509 certificate matched by thumbprint.
    SelfSigned,
    /// X.509 certificate chained to a registered CA; CN = device id.
    CertificateAuthority,
    /// No credentials of its own.
    None,
}

/// A device's symmetric keys (base64).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SymmetricKey {
    /// Primary key.
    pub primary_key: String,
    /// Secondary key.
    pub secondary_key: String,
}

/// A device's registered certificate thumbprints (hex, SHA-1 or SHA-256).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct X509Thumbprint {
    /// Primary thumbprint.
    pub primary_thumbprint: Option<String>,
    /// Secondary thumbprint.
    pub secondary_thumbprint: Option<String>,
}

/// A device's credentials.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Authentication {
    /// Which mechanism.
    pub kind: AuthenticationType,
    /// Keys, for `Sas`.
    pub symmetric_key: Option<SymmetricKey>,
    /// Thumbprints, for `SelfSigned`.
    pub x509_thumbprint: X509Thumbprint,
}

/// A registered device.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    /// Its id.
    pub device_id: DeviceId,
    /// Distinguishes this device from an earlier one with the same id.
    pub generation_id: String,
    /// Bumped on every write; the etag is derived from it.
    pub version: u64,
    /// Enabled or disabled.
    pub status: DeviceStatus,
    /// Why it has that status.
    pub status_reason: Option<String>,
    /// When the status last changed.
    pub status_updated_time: Option<Timestamp>,
    /// Credentials.
    pub authentication: Authentication,
    /// `capabilities.iotEdge`.
    pub iot_edge: bool,
    /// Courier's per-device C2D limit overrides.
    pub limits: LimitOverrides,
}

impl Device {
    /// The device's etag: base64 of the decimal version, as IoT Hub forms it
    /// (`"MQ=="` for version 1).
    pub fn etag(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(self.version.to_string())
    }
}

/// What a caller asks the registry to hold for a device (PUT body).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DeviceSpec {
    /// The id.
    pub device_id: Option<DeviceId>,
    /// Status.
    pub status: DeviceStatus,
    /// Status reason.
    pub status_reason: Option<String>,
    /// Credentials; empty keys for `Sas` mean "generate".
    pub authentication: Authentication,
    /// `capabilities.iotEdge`.
    pub iot_edge: bool,
    /// Limit overrides.
    pub limits: LimitOverrides,
}

/// The `If-Match` condition of a registry write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IfMatch {
    /// No header: create only.
    Absent,
    /// `*`: create or replace.
    Any,
    /// A specific etag: replace only that version.
    Etag(String),
}

impl IfMatch {
    /// Parses an `If-Match` header value (quoted or not; `*`).
    pub fn from_header(value: Option<&str>) -> IfMatch {
        match value.map(|v| v.trim().trim_matches('"')) {
            None | Some("") => IfMatch::Absent,
            Some("*") => IfMatch::Any,
            Some(e) => IfMatch::Etag(e.to_owned()),
        }
    }
}

/// Values the caller generated for a write that may need them: the generation
/// id of a new device and keys for a SAS device that brought none.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FreshIdentity {
    /// Generation id for a new device.
    pub generation_id: String,
    /// Primary key to use when none was given.
    pub primary_key: String,
    /// Secondary key to use when none was given.
    pub secondary_key: String,
}

/// Checks that a symmetric key is base64 of 16 to 64 bytes, as IoT Hub requires.
pub fn validate_key(key: &str) -> Result<(), String> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(key)
        .map_err(|_| "symmetric key is not valid base64".to_owned())?;
    if !(16..=64).contains(&bytes.len()) {
        return Err(format!(
            "symmetric key must decode to 16 to 64 bytes, got {}",
            bytes.len()
        ));
    }
    Ok(())
}

/// Checks that a thumbprint is 40 (SHA-1) or 64 (SHA-256) hex digits.
pub fn validate_thumbprint(t: &str) -> Result<(), String> {
    let hex: String = t.chars().filter(|c| *c != ':').collect();
    if (hex.len() == 40 || hex.len() == 64) && hex.chars().all(|c| c.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err(format!("thumbprint {t:?} is not 40 or 64 hex digits"))
    }
}
