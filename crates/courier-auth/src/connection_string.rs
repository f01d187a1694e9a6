//! IoT Hub connection strings: `Key=Value` pairs separated by `;` (wire spec §1.1).

use std::fmt;
use std::str::FromStr;

/// Why a connection string was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConnectionStringError {
    /// A `;`-separated part has no `=`.
    #[error("connection string part '{0}' is not of the form Key=Value")]
    MissingEquals(String),
    /// A key outside the set IoT Hub SDKs know.
    #[error("connection string key '{0}' is not recognised")]
    UnknownKey(String),
    /// A key given twice.
    #[error("connection string key '{0}' appears more than once")]
    DuplicateKey(String),
    /// A key given with an empty value.
    #[error("connection string key '{0}' has an empty value")]
    EmptyValue(String),
    /// No `HostName`.
    #[error("connection string has no HostName")]
    MissingHostName,
    /// `ModuleId` without `DeviceId`.
    #[error("connection string has a ModuleId but no DeviceId")]
    ModuleWithoutDevice,
    /// `x509` with a value other than `true` or `false`.
    #[error("connection string x509 value '{0}' is neither 'true' nor 'false'")]
    InvalidX509(String),
    /// `SharedAccessKey` together with `x509=true`: the two ways to authenticate exclude each other.
    #[error("connection string has both SharedAccessKey and x509=true")]
    KeyWithX509,
}

/// A parsed IoT Hub connection string (device, module or service/policy form).
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectionString {
    /// `HostName`: the hub's canonical host name (always present).
    pub host_name: String,
    /// `DeviceId`, for device and module strings.
    pub device_id: Option<String>,
    /// `ModuleId`, for module strings.
    pub module_id: Option<String>,
    /// `SharedAccessKeyName`: the policy name, for service strings (or a device acting via a policy).
    pub shared_access_key_name: Option<String>,
    /// `SharedAccessKey`: a base64 symmetric key.
    pub shared_access_key: Option<String>,
    /// `SharedAccessSignature`: a fixed, pre-minted SAS token.
    pub shared_access_signature: Option<String>,
    /// `GatewayHostName`: where to connect instead of `HostName`.
    pub gateway_host_name: Option<String>,
    /// `x509=true`: the client authenticates with a certificate.
    pub x509: bool,
}

impl ConnectionString {
    /// Parses `Key=Value;...`: values split at the first `=`, known keys only, no duplicates.
    pub fn parse(s: &str) -> Result<Self, ConnectionStringError> {
        let mut cs = ConnectionString {
            host_name: String::new(),
            device_id: None,
            module_id: None,
            shared_access_key_name: None,
            shared_access_key: None,
            shared_access_signature: None,
            gateway_host_name: None,
            x509: false,
        };
        let mut seen_host = false;
        let mut seen_x509 = false;
        // Empty parts are skipped so that a trailing `;` (common when strings are pasted) is fine.
        for part in s.split(';').filter(|p| !p.trim().is_empty()) {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| ConnectionStringError::MissingEquals(part.to_owned()))?;
            let key = key.trim();
            if value.is_empty() {
                return Err(ConnectionStringError::EmptyValue(key.to_owned()));
            }
            let duplicate = || ConnectionStringError::DuplicateKey(key.to_owned());
            let slot = match key {
                "HostName" => {
                    if std::mem::replace(&mut seen_host, true) {
                        return Err(duplicate());
                    }
                    cs.host_name = value.to_owned();
                    continue;
                }
                "x509" => {
                    if std::mem::replace(&mut seen_x509, true) {
                        return Err(duplicate());
                    }
                    cs.x509 = parse_x509(value)?;
                    continue;
                }
                "DeviceId" => &mut cs.device_id,
                "ModuleId" => &mut cs.module_id,
                "SharedAccessKeyName" => &mut cs.shared_access_key_name,
                "SharedAccessKey" => &mut cs.shared_access_key,
                "SharedAccessSignature" => &mut cs.shared_access_signature,
                "GatewayHostName" => &mut cs.gateway_host_name,
                other => return Err(ConnectionStringError::UnknownKey(other.to_owned())),
            };
            if slot.replace(value.to_owned()).is_some() {
                return Err(duplicate());
            }
        }
        if !seen_host {
            return Err(ConnectionStringError::MissingHostName);
        }
        if cs.module_id.is_some() && cs.device_id.is_none() {
            return Err(ConnectionStringError::ModuleWithoutDevice);
        }
        if cs.x509 && cs.shared_access_key.is_some() {
            return Err(ConnectionStringError::KeyWithX509);
        }
        Ok(cs)
    }

    /// A device string: `HostName=..;DeviceId=..;SharedAccessKey=..`.
    pub fn for_device(host: &str, device_id: &str, key: &str) -> Self {
        ConnectionString {
            host_name: host.to_owned(),
            device_id: Some(device_id.to_owned()),
            module_id: None,
            shared_access_key_name: None,
            shared_access_key: Some(key.to_owned()),
            shared_access_signature: None,
            gateway_host_name: None,
            x509: false,
        }
    }

    /// A service string: `HostName=..;SharedAccessKeyName=..;SharedAccessKey=..`.
    pub fn for_policy(host: &str, policy: &str, key: &str) -> Self {
        ConnectionString {
            host_name: host.to_owned(),
            device_id: None,
            module_id: None,
            shared_access_key_name: Some(policy.to_owned()),
            shared_access_key: Some(key.to_owned()),
            shared_access_signature: None,
            gateway_host_name: None,
            x509: false,
        }
    }
}

fn parse_x509(value: &str) -> Result<bool, ConnectionStringError> {
    if value.eq_ignore_ascii_case("true") {
        Ok(true)
    } else if value.eq_ignore_ascii_case("false") {
        Ok(false)
    } else {
        Err(ConnectionStringError::InvalidX509(value.to_owned()))
    }
}

impl fmt::Display for ConnectionString {
    /// Writes the keys in the order IoT Hub and the portal print them.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HostName={}", self.host_name)?;
        let optional = [
            ("DeviceId", &self.device_id),
            ("ModuleId", &self.module_id),
            ("SharedAccessKeyName", &self.shared_access_key_name),
            ("SharedAccessKey", &self.shared_access_key),
            ("SharedAccessSignature", &self.shared_access_signature),
            ("GatewayHostName", &self.gateway_host_name),
        ];
        for (key, value) in optional {
            if let Some(value) = value {
                write!(f, ";{key}={value}")?;
            }
        }
        // C accepts only the literal `true`, and `x509=false` is the same as leaving it out.
        if self.x509 {
            f.write_str(";x509=true")?;
        }
        Ok(())
    }
}

impl fmt::Debug for ConnectionString {
    /// Like the derived form, but never prints the key or signature (connection strings get logged).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |v: &Option<String>| v.as_ref().map(|_| "<redacted>");
        f.debug_struct("ConnectionString")
            .field("host_name", &self.host_name)
            .field("device_id", &self.device_id)
            .field("module_id", &self.module_id)
            .field("shared_access_key_name", &self.shared_access_key_name)
            .field("shared_access_key", &redact(&self.shared_access_key))
            .field(
                "shared_access_signature",
                &redact(&self.shared_access_signature),
            )
            .field("gateway_host_name", &self.gateway_host_name)
            .field("x509", &self.x509)
            .finish()
    }
}

impl FromStr for ConnectionString {
    type Err = ConnectionStringError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "wMM1Z/MRGFC67W/7+p6FRdLdz9Wq+Wdn5Gc0pPeQCeQ=";

    #[test]
    fn parses_device_string_with_key_containing_equals() {
        let cs: ConnectionString =
            format!("HostName=hub.courier.test;DeviceId=dev-1;SharedAccessKey={KEY}")
                .parse()
                .unwrap();
        assert_eq!(cs.host_name, "hub.courier.test");
        assert_eq!(cs.device_id.as_deref(), Some("dev-1"));
        assert_eq!(cs.shared_access_key.as_deref(), Some(KEY));
        assert_eq!(
            cs,
            ConnectionString::for_device("hub.courier.test", "dev-1", KEY)
        );
    }

    #[test]
    fn parses_fixed_token_string() {
        let token = "SharedAccessSignature sr=localhost%2Fdevices%2Fharness-dev-1&sig=GgjGhZW%2B6Gk0P6zd604Nsht1NGvD0gF4S1fknZ9Esv4%3D&se=1795417604";
        let cs = ConnectionString::parse(&format!(
            "HostName=localhost;DeviceId=harness-dev-1;SharedAccessSignature={token}"
        ))
        .unwrap();
        assert_eq!(cs.shared_access_signature.as_deref(), Some(token));
    }

    #[test]
    fn display_uses_iothub_order_and_round_trips() {
        let cs = ConnectionString {
            host_name: "hub.courier.test".into(),
            device_id: Some("dev".into()),
            module_id: Some("mod".into()),
            shared_access_key_name: Some("device".into()),
            shared_access_key: Some(KEY.into()),
            shared_access_signature: None,
            gateway_host_name: Some("edge.local".into()),
            x509: false,
        };
        let text = cs.to_string();
        assert_eq!(
            text,
            format!("HostName=hub.courier.test;DeviceId=dev;ModuleId=mod;SharedAccessKeyName=device;SharedAccessKey={KEY};GatewayHostName=edge.local")
        );
        assert_eq!(ConnectionString::parse(&text).unwrap(), cs);

        let x509 = ConnectionString::parse("x509=true;DeviceId=d;HostName=h.test").unwrap();
        assert!(x509.x509);
        assert_eq!(x509.to_string(), "HostName=h.test;DeviceId=d;x509=true");
        assert_eq!(ConnectionString::parse(&x509.to_string()).unwrap(), x509);

        let policy = ConnectionString::for_policy("h.test", "iothubowner", KEY);
        assert_eq!(
            policy.to_string(),
            format!("HostName=h.test;SharedAccessKeyName=iothubowner;SharedAccessKey={KEY}")
        );
        assert_eq!(
            policy.to_string().parse::<ConnectionString>().unwrap(),
            policy
        );
    }

    #[test]
    fn tolerates_trailing_separator() {
        let cs = ConnectionString::parse("HostName=h.test;DeviceId=d;").unwrap();
        assert_eq!(cs.device_id.as_deref(), Some("d"));
    }

    #[test]
    fn rejections() {
        use ConnectionStringError as E;
        let cases: &[(&str, E)] = &[
            ("DeviceId=d;SharedAccessKey=k", E::MissingHostName),
            ("", E::MissingHostName),
            ("HostName=h;Foo=bar", E::UnknownKey("Foo".into())),
            ("HostName=h;hostname=x", E::UnknownKey("hostname".into())),
            ("HostName=h;HostName=h", E::DuplicateKey("HostName".into())),
            (
                "HostName=h;DeviceId=a;DeviceId=b",
                E::DuplicateKey("DeviceId".into()),
            ),
            (
                "HostName=h;x509=true;x509=true",
                E::DuplicateKey("x509".into()),
            ),
            ("HostName=h;DeviceId", E::MissingEquals("DeviceId".into())),
            ("HostName=h;DeviceId=", E::EmptyValue("DeviceId".into())),
            ("HostName=h;ModuleId=m", E::ModuleWithoutDevice),
            (
                "HostName=h;DeviceId=d;x509=yes",
                E::InvalidX509("yes".into()),
            ),
            (
                "HostName=h;DeviceId=d;SharedAccessKey=k;x509=true",
                E::KeyWithX509,
            ),
        ];
        for (input, expected) in cases {
            assert_eq!(
                ConnectionString::parse(input).as_ref(),
                Err(expected),
                "input {input:?}"
            );
        }
        // A key with x509=false is fine: the string just says "not X.509".
        assert!(
            ConnectionString::parse("HostName=h;DeviceId=d;SharedAccessKey=k;x509=false").is_ok()
        );
    }

    #[test]
    fn debug_hides_secrets() {
        let cs = ConnectionString::for_device("h.test", "d", KEY);
        let shown = format!("{cs:?}");
        assert!(!shown.contains(KEY), "{shown}");
        assert!(shown.contains("<redacted>"));
    }
}
