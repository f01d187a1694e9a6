//! SAS tokens for one identity: minted from a key (and renewed before they
//! expire), taken as given from the connection string, or none (X.509).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use courier_auth::{generate_token, ConnectionString, SasToken};

use crate::ClientError;

/// Share of a minted token's lifetime after which it is renewed.
const RENEW_AT_SHARE: f64 = 0.85;

/// One SAS token and when to replace it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Token {
    /// `SharedAccessSignature sr=…&sig=…&se=…[&skn=…]`.
    pub(crate) value: String,
    /// Its `se`.
    pub(crate) expires_at: SystemTime,
    /// When a fresh one should take its place; `None` when it cannot be
    /// renewed (a fixed token from the connection string).
    pub(crate) renew_at: Option<SystemTime>,
}

#[derive(Debug, Clone)]
enum Source {
    Key {
        key: String,
        key_name: Option<String>,
    },
    Fixed(Token),
    X509,
}

/// How one identity proves itself to the hub.
#[derive(Debug, Clone)]
pub(crate) struct Credentials {
    /// The token audience: `{host}/devices/{id}` or `{host}`.
    resource: String,
    source: Source,
    lifetime: Duration,
}

fn unix(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

impl Credentials {
    fn from_parts(
        cs: &ConnectionString,
        resource: String,
        lifetime: Duration,
    ) -> Result<Self, ClientError> {
        let source = if let Some(key) = &cs.shared_access_key {
            Source::Key {
                key: key.clone(),
                key_name: cs.shared_access_key_name.clone(),
            }
        } else if let Some(token) = &cs.shared_access_signature {
            let parsed = SasToken::parse(token).map_err(|e| {
                ClientError::ConnectionString(format!(
                    "SharedAccessSignature is not a SAS token: {e}"
                ))
            })?;
            Source::Fixed(Token {
                value: token.clone(),
                expires_at: UNIX_EPOCH + Duration::from_secs(parsed.expiry),
                renew_at: None,
            })
        } else if cs.x509 {
            Source::X509
        } else {
            return Err(ClientError::ConnectionString(
                "needs SharedAccessKey, SharedAccessSignature or x509=true".into(),
            ));
        };
        Ok(Self {
            resource,
            source,
            lifetime,
        })
    }

    /// A device's credentials from its connection string.
    pub(crate) fn device(cs: &ConnectionString, lifetime: Duration) -> Result<Self, ClientError> {
        let Some(device_id) = &cs.device_id else {
            return Err(ClientError::ConnectionString(
                "a device connection string needs DeviceId".into(),
            ));
        };
        if cs.module_id.is_some() {
            return Err(ClientError::ConnectionString(
                "module identities are not supported; use a device connection string".into(),
            ));
        }
        Self::from_parts(
            cs,
            format!("{}/devices/{device_id}", cs.host_name),
            lifetime,
        )
    }

    /// A shared access policy's credentials from a service connection string.
    pub(crate) fn service(cs: &ConnectionString, lifetime: Duration) -> Result<Self, ClientError> {
        if cs.shared_access_key_name.is_none() {
            return Err(ClientError::ConnectionString(
                "a service connection string needs SharedAccessKeyName (a policy)".into(),
            ));
        }
        if cs.x509 {
            return Err(ClientError::ConnectionString(
                "a service cannot use x509=true".into(),
            ));
        }
        Self::from_parts(cs, cs.host_name.clone(), lifetime)
    }

    /// The token audience (`sr` before encoding; CBS `name`).
    pub(crate) fn resource(&self) -> &str {
        &self.resource
    }

    /// True when the client authenticates with a certificate, not a token.
    pub(crate) fn is_x509(&self) -> bool {
        matches!(self.source, Source::X509)
    }

    /// A token valid from `now`: freshly minted from the key, or the fixed
    /// one (an error once it has expired). `None` for X.509.
    pub(crate) fn token(&self, now: SystemTime) -> Result<Option<Token>, ClientError> {
        match &self.source {
            Source::X509 => Ok(None),
            Source::Fixed(token) if token.expires_at <= now => {
                Err(ClientError::Unauthorized(crate::HubError::new(
                    401002,
                    "IotHubUnauthorizedAccess",
                    "the SharedAccessSignature in the connection string has expired",
                )))
            }
            Source::Fixed(token) => Ok(Some(token.clone())),
            Source::Key { key, key_name } => {
                // `se` is whole seconds, rounded down: the hub's expiry is
                // that second, so renewal is planned from it, not from the
                // unrounded lifetime.
                let se = unix(now + self.lifetime);
                let expires_at = UNIX_EPOCH + Duration::from_secs(se);
                let usable = expires_at.duration_since(now).unwrap_or_default();
                let value = generate_token(&self.resource, key, key_name.as_deref(), se)
                    .map_err(|e| ClientError::ConnectionString(format!("SharedAccessKey: {e}")))?;
                Ok(Some(Token {
                    value,
                    expires_at,
                    renew_at: Some(now + usable.mul_f64(RENEW_AT_SHARE)),
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "vkHC4S2PygsHjOs/d0Ymj3mF0hPk8HJTSPdXl0M0Zqo=";

    #[test]
    fn key_tokens_are_minted_for_the_device_and_renewed_early() {
        let cs = ConnectionString::for_device("hub.local", "dev-1", KEY);
        let creds = Credentials::device(&cs, Duration::from_secs(100)).unwrap();
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let token = creds.token(now).unwrap().unwrap();
        let parsed = SasToken::parse(&token.value).unwrap();
        assert_eq!(parsed.resource, "hub.local/devices/dev-1");
        assert_eq!(parsed.expiry, 1_000_100);
        assert!(parsed.is_signed_by(KEY));
        assert_eq!(token.renew_at, Some(now + Duration::from_secs(85)));
        // Mid-second, `se` rounds down and renewal comes before it.
        let later = now + Duration::from_millis(900);
        let token = creds.token(later).unwrap().unwrap();
        assert_eq!(
            token.expires_at,
            UNIX_EPOCH + Duration::from_secs(1_000_100)
        );
        assert!(token.renew_at.unwrap() < token.expires_at - Duration::from_secs(14));
    }

    #[test]
    fn a_fixed_token_is_used_until_it_expires_and_then_refused() {
        let value = generate_token("hub.local/devices/dev-1", KEY, None, 1_000_050).unwrap();
        let cs = ConnectionString::parse(&format!(
            "HostName=hub.local;DeviceId=dev-1;SharedAccessSignature={value}"
        ))
        .unwrap();
        let creds = Credentials::device(&cs, Duration::from_secs(100)).unwrap();
        let before = UNIX_EPOCH + Duration::from_secs(1_000_000);
        assert_eq!(creds.token(before).unwrap().unwrap().renew_at, None);
        let after = UNIX_EPOCH + Duration::from_secs(1_000_051);
        assert!(matches!(
            creds.token(after),
            Err(ClientError::Unauthorized(_))
        ));
    }

    #[test]
    fn service_tokens_name_the_policy_and_device_strings_need_an_id() {
        let cs = ConnectionString::for_policy("hub.local", "service", KEY);
        let creds = Credentials::service(&cs, Duration::from_secs(60)).unwrap();
        let token = creds.token(SystemTime::now()).unwrap().unwrap();
        assert_eq!(
            SasToken::parse(&token.value).unwrap().key_name.as_deref(),
            Some("service")
        );
        assert!(Credentials::device(&cs, Duration::from_secs(60)).is_err());
    }
}
