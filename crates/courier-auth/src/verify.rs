//! SAS token verification: who a token proves the caller to be (wire spec §1.3, §1.5).
//!
//! The order of checks is: parse, host, expiry, key lookup, signature, scope. A signature is
//! always checked against the raw `sr`; decoding only serves to find *which* key to try.

use percent_encoding::percent_decode_str;

use crate::policy::Policy;
use crate::rights::{Right, Rights};
use crate::sas::{SasError, SasToken};

/// How far past `se` a token is still accepted, as IoT Hub's own validator allowed (5 minutes).
pub const CLOCK_SKEW_SECS: u64 = 300;

/// Where the authenticator looks up keys; implemented by the registry.
pub trait KeyStore {
    /// The shared access policy called `name`, if any.
    fn policy(&self, name: &str) -> Option<Policy>;
    /// The SAS keys of device `device_id`, if the device exists.
    fn device(&self, device_id: &str) -> Option<DeviceCredentials>;
}

/// A device's symmetric keys; both `None` means the device does not authenticate with SAS.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct DeviceCredentials {
    /// The primary base64 key.
    pub primary_key: Option<String>,
    /// The secondary base64 key.
    pub secondary_key: Option<String>,
}

impl DeviceCredentials {
    fn keys(&self) -> impl Iterator<Item = &str> {
        [&self.primary_key, &self.secondary_key]
            .into_iter()
            .filter_map(|k| k.as_deref())
            .filter(|k| !k.is_empty())
    }
}

impl std::fmt::Debug for DeviceCredentials {
    /// Says which keys exist, never what they are.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let shown = |k: &Option<String>| k.as_ref().map(|_| "<redacted>");
        f.debug_struct("DeviceCredentials")
            .field("primary_key", &shown(&self.primary_key))
            .field("secondary_key", &shown(&self.secondary_key))
            .finish()
    }
}

/// What a policy token's `sr` covers.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Scope {
    /// `{host}`: the whole hub.
    Hub,
    /// `{host}/devices`: every device (gateways).
    Devices,
    /// `{host}/devices/{id}`: one device.
    Device(String),
}

impl Scope {
    /// Whether this scope includes device `device_id`.
    pub fn covers_device(&self, device_id: &str) -> bool {
        match self {
            Scope::Hub | Scope::Devices => true,
            Scope::Device(id) => id == device_id,
        }
    }
}

/// Who an authenticated token speaks for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Principal {
    /// A device, proven by its own symmetric key.
    Device {
        /// The device's id.
        device_id: String,
    },
    /// A shared access policy, proven by the policy's key.
    Policy {
        /// The policy name (`skn`).
        name: String,
        /// The policy's rights at the time of authentication.
        rights: Rights,
        /// What the token's `sr` covers.
        scope: Scope,
    },
}

impl Principal {
    /// Whether the principal holds `right` (a device key grants only DeviceConnect).
    pub fn has(&self, right: Right) -> bool {
        match self {
            Principal::Device { .. } => right == Right::DeviceConnect,
            Principal::Policy { rights, .. } => rights.contains(right),
        }
    }

    /// Whether the principal may connect as device `device_id` (receive its C2D messages).
    pub fn may_act_as_device(&self, device_id: &str) -> bool {
        match self {
            Principal::Device { device_id: own } => own == device_id,
            Principal::Policy { rights, scope, .. } => {
                rights.contains(Right::DeviceConnect) && scope.covers_device(device_id)
            }
        }
    }
}

/// Why a token was refused. Every variant is IoT Hub error 401002 (IotHubUnauthorizedAccess).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// The token could not be parsed.
    #[error("malformed SAS token: {0}")]
    Malformed(#[from] SasError),
    /// `se` plus the allowed clock skew is in the past.
    #[error("SAS token expired at {expiry} (seconds since 1970); it is now {now}")]
    Expired {
        /// The token's `se`.
        expiry: u64,
        /// The time the check was made.
        now: u64,
    },
    /// `skn` names no policy.
    #[error("shared access policy '{0}' does not exist on this hub")]
    UnknownPolicy(String),
    /// The device named in `sr` is not registered.
    #[error("device '{0}' is not registered on this hub")]
    UnknownDevice(String),
    /// The device exists but has no symmetric keys (it uses X.509 or no authentication).
    #[error("device '{0}' does not authenticate with shared access keys")]
    NoSymmetricKey(String),
    /// The host in `sr` is not one of this hub's names.
    #[error("SAS token resource host '{0}' is not this hub")]
    WrongHost(String),
    /// No key of the device or policy produces the token's signature.
    #[error("SAS token signature does not match the key")]
    BadSignature,
    /// `sr` does not name something this kind of token may be scoped to.
    #[error("SAS token resource '{0}' is not a valid scope: device tokens need {{host}}/devices/{{deviceId}}, policy tokens {{host}}, {{host}}/devices or {{host}}/devices/{{deviceId}}")]
    WrongScope(String),
}

impl AuthError {
    /// The IoT Hub error code to report: 401002 (IotHubUnauthorizedAccess).
    pub fn iothub_code(&self) -> u32 {
        401002
    }
}

/// Checks SAS tokens against this hub's host names and a [`KeyStore`].
#[derive(Clone, Debug)]
pub struct Authenticator {
    /// Lowercased, without ports; compared against the `sr` host.
    host_names: Vec<String>,
}

impl Authenticator {
    /// An authenticator accepting tokens for any of `host_names` (canonical host and aliases).
    pub fn new(host_names: Vec<String>) -> Self {
        let host_names = host_names
            .into_iter()
            .map(|h| strip_port(h.trim()).to_ascii_lowercase())
            .collect();
        Authenticator { host_names }
    }

    /// Whether `host` (optionally with `:port`) is one of this hub's names, ignoring case.
    pub fn accepts_host(&self, host: &str) -> bool {
        let host = strip_port(host);
        self.host_names.iter().any(|h| h.eq_ignore_ascii_case(host))
    }

    /// Parses and verifies `token` (the full `SharedAccessSignature ...` string).
    pub fn authenticate(
        &self,
        token: &str,
        now_unix: u64,
        keys: &dyn KeyStore,
    ) -> Result<Principal, AuthError> {
        self.authenticate_token(&SasToken::parse(token)?, now_unix, keys)
    }

    /// Verifies an already parsed token (for callers that also need its expiry).
    pub fn authenticate_token(
        &self,
        token: &SasToken,
        now_unix: u64,
        keys: &dyn KeyStore,
    ) -> Result<Principal, AuthError> {
        let targets = self.targets(token)?;
        if token.expiry.saturating_add(CLOCK_SKEW_SECS) < now_unix {
            return Err(AuthError::Expired {
                expiry: token.expiry,
                now: now_unix,
            });
        }
        match &token.key_name {
            Some(name) => authenticate_policy(token, name, &targets, keys),
            None => authenticate_device(token, &targets, keys),
        }
    }

    /// The readings of `sr` whose host is ours: the once-decoded one first, then the raw one
    /// (C and Java send slashes raw, so an id containing `%` must be read undecoded).
    fn targets(&self, token: &SasToken) -> Result<Vec<Target>, AuthError> {
        let decoded = Target::parse(&token.resource);
        let mut readings = vec![decoded.clone()];
        if token.resource_raw.contains('/') && token.resource_raw != token.resource {
            readings.push(Target::parse(&token.resource_raw));
        }
        let ours: Vec<Target> = readings
            .into_iter()
            .filter(|t| self.accepts_host(&t.host))
            .collect();
        if ours.is_empty() {
            return Err(AuthError::WrongHost(decoded.host));
        }
        Ok(ours)
    }
}

fn authenticate_device(
    token: &SasToken,
    targets: &[Target],
    keys: &dyn KeyStore,
) -> Result<Principal, AuthError> {
    let mut ids: Vec<String> = Vec::new();
    for target in targets {
        let (Path::Device(id) | Path::Module(id)) = &target.path else {
            continue;
        };
        // .NET encodes the id before encoding the whole audience, so after one decode the id
        // is still encoded once.
        let twice = percent_decode_str(id)
            .decode_utf8()
            .ok()
            .map(|d| d.into_owned());
        for candidate in std::iter::once(id.clone()).chain(twice) {
            if !ids.contains(&candidate) {
                ids.push(candidate);
            }
        }
    }
    let Some(first) = ids.first() else {
        return Err(AuthError::WrongScope(token.resource.clone()));
    };

    let mut registered: Option<&String> = None;
    let mut any_keys = false;
    for id in &ids {
        let Some(credentials) = keys.device(id) else {
            continue;
        };
        registered.get_or_insert(id);
        for key in credentials.keys() {
            any_keys = true;
            if token.is_signed_by(key) {
                return Ok(Principal::Device {
                    device_id: id.clone(),
                });
            }
        }
    }
    match registered {
        None => Err(AuthError::UnknownDevice(first.clone())),
        Some(id) if !any_keys => Err(AuthError::NoSymmetricKey(id.clone())),
        Some(_) => Err(AuthError::BadSignature),
    }
}

fn authenticate_policy(
    token: &SasToken,
    name: &str,
    targets: &[Target],
    keys: &dyn KeyStore,
) -> Result<Principal, AuthError> {
    let policy = keys
        .policy(name)
        .ok_or_else(|| AuthError::UnknownPolicy(name.to_owned()))?;
    let signed = [&policy.primary_key, &policy.secondary_key]
        .into_iter()
        .any(|k| token.is_signed_by(k));
    if !signed {
        return Err(AuthError::BadSignature);
    }
    let scope = targets
        .iter()
        .find_map(|t| match &t.path {
            Path::Hub => Some(Scope::Hub),
            Path::Devices => Some(Scope::Devices),
            Path::Device(id) => Some(Scope::Device(id.clone())),
            Path::Module(_) | Path::Other => None,
        })
        .ok_or_else(|| AuthError::WrongScope(token.resource.clone()))?;
    Ok(Principal::Policy {
        name: policy.key_name,
        rights: policy.rights,
        scope,
    })
}

/// One reading of `sr`: a host and what follows it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Target {
    host: String,
    path: Path,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Path {
    Hub,
    Devices,
    Device(String),
    /// `devices/{id}/modules/{m}`, holding the device id.
    Module(String),
    Other,
}

impl Target {
    fn parse(resource: &str) -> Self {
        // Python service AMQP sends `https://host`; AMQP link addresses use `amqps://`.
        let without_scheme = ["https://", "amqps://"]
            .into_iter()
            .find_map(|scheme| strip_prefix_ignore_case(resource, scheme))
            .unwrap_or(resource);
        let trimmed = without_scheme.trim_end_matches('/');
        let (host, rest) = trimmed.split_once('/').unwrap_or((trimmed, ""));
        let segments: Vec<&str> = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('/').collect()
        };
        let is = |s: &str, word: &str| s.eq_ignore_ascii_case(word);
        let path = match segments.as_slice() {
            [] => Path::Hub,
            [d] if is(d, "devices") => Path::Devices,
            [d, id] if is(d, "devices") && !id.is_empty() => Path::Device((*id).to_owned()),
            [d, id, m, module]
                if is(d, "devices") && is(m, "modules") && !id.is_empty() && !module.is_empty() =>
            {
                Path::Module((*id).to_owned())
            }
            _ => Path::Other,
        };
        Target {
            host: host.to_owned(),
            path,
        }
    }
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) {
        s.get(prefix.len()..)
    } else {
        None
    }
}

/// `host:8883` → `host`; a host without a numeric port is returned unchanged.
fn strip_port(host: &str) -> &str {
    match host.rsplit_once(':') {
        Some((name, port)) if !port.is_empty() && port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}
