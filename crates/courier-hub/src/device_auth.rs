//! Device authentication as every protocol head needs it: SAS tokens checked
//! against the registry's keys and the shared access policies, a device's
//! self-signed client certificate checked against its registered thumbprints,
//! and disabled devices refused (wire spec §1.3–1.6).
//!
//! It lives here, beside the registry view it reads, so that the HTTPS, MQTT
//! and AMQP heads authenticate devices in exactly one way. It reads only the
//! synchronous credential view: no round trip to the engine.

use courier_auth::{
    AuthError, Authenticator, DeviceCredentials as Keys, KeyStore, Policy, Principal, Right,
    SasToken,
};
use courier_core::{AuthenticationType, DeviceStatus};

use crate::Hub;

/// The registry and the policy list, as the authenticator looks keys up.
pub struct HubKeys<'a> {
    hub: &'a Hub,
    policies: &'a [Policy],
}

impl<'a> HubKeys<'a> {
    /// Keys of `hub`'s devices and of `policies`.
    pub fn new(hub: &'a Hub, policies: &'a [Policy]) -> Self {
        HubKeys { hub, policies }
    }
}

impl KeyStore for HubKeys<'_> {
    fn policy(&self, name: &str) -> Option<Policy> {
        self.policies.iter().find(|p| p.key_name == name).cloned()
    }

    fn device(&self, device_id: &str) -> Option<Keys> {
        let credentials = self.hub.device_credentials(device_id)?;
        // Only SAS devices have keys; the others authenticate by certificate.
        let keys = match credentials.authentication.kind {
            AuthenticationType::Sas => credentials.authentication.symmetric_key,
            _ => None,
        };
        Some(Keys {
            primary_key: keys.as_ref().map(|k| k.primary_key.clone()),
            secondary_key: keys.map(|k| k.secondary_key),
        })
    }
}

/// Why a caller may not act as a device. Every variant is IoT Hub's 401002
/// (IotHubUnauthorizedAccess); the text tells the caller what to fix.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DeviceAuthError {
    /// The SAS token itself was refused.
    #[error(transparent)]
    Token(#[from] AuthError),
    /// The device is registered but disabled.
    #[error(
        "device '{0}' is disabled; set its status to enabled in the registry to let it connect"
    )]
    Disabled(String),
    /// The device is not registered.
    #[error("device '{0}' is not registered on this hub")]
    UnknownDevice(String),
    /// A device's own token used for another device.
    #[error("a token of device '{own}' cannot act for device '{device_id}'")]
    OtherDevice {
        /// The device the token belongs to.
        own: String,
        /// The device the caller wanted to act as.
        device_id: String,
    },
    /// A DeviceConnect policy token scoped to another device.
    #[error("the token of policy '{name}' is scoped to another device than '{device_id}'")]
    PolicyScope {
        /// The policy.
        name: String,
        /// The device the caller wanted to act as.
        device_id: String,
    },
    /// A policy token without DeviceConnect.
    #[error("Authorization rule '{name}' does not allow access for 'DeviceConnect'")]
    NoDeviceConnect {
        /// The policy.
        name: String,
    },
    /// A certificate that matches neither registered thumbprint.
    #[error("the client certificate matches neither registered thumbprint of device '{0}'")]
    ThumbprintMismatch(String),
    /// A device registered for CA-signed certificates.
    #[error("device '{0}' uses CA-signed certificates, which Courier does not support yet; register it as selfSigned with the certificate's thumbprint, or use SAS keys")]
    CertificateAuthorityUnsupported(String),
    /// A certificate presented for a device that uses SAS keys or nothing.
    #[error("device '{0}' does not authenticate with a client certificate; send a SAS token")]
    NotCertificateDevice(String),
}

/// Authenticates callers against one hub's registry and policies.
pub struct DeviceAuthenticator<'a> {
    hub: &'a Hub,
    authenticator: &'a Authenticator,
    policies: &'a [Policy],
}

impl<'a> DeviceAuthenticator<'a> {
    /// Checks tokens with `authenticator` against `hub`'s devices and `policies`.
    pub fn new(hub: &'a Hub, authenticator: &'a Authenticator, policies: &'a [Policy]) -> Self {
        DeviceAuthenticator {
            hub,
            authenticator,
            policies,
        }
    }

    /// The principal `token` proves; a disabled device's own token is refused.
    pub fn principal(&self, token: &SasToken, now_unix: u64) -> Result<Principal, DeviceAuthError> {
        let keys = HubKeys::new(self.hub, self.policies);
        let principal = self
            .authenticator
            .authenticate_token(token, now_unix, &keys)?;
        if let Principal::Device { device_id } = &principal {
            self.refuse_disabled(device_id)?;
        }
        Ok(principal)
    }

    /// The principal of `token`, if it may act as device `device_id`.
    pub fn device_by_token(
        &self,
        token: &SasToken,
        now_unix: u64,
        device_id: &str,
    ) -> Result<Principal, DeviceAuthError> {
        let principal = self.principal(token, now_unix)?;
        if principal.may_act_as_device(device_id) {
            return Ok(principal);
        }
        Err(match principal {
            Principal::Device { device_id: own } => DeviceAuthError::OtherDevice {
                own,
                device_id: device_id.to_owned(),
            },
            Principal::Policy { name, rights, .. } if rights.contains(Right::DeviceConnect) => {
                DeviceAuthError::PolicyScope {
                    name,
                    device_id: device_id.to_owned(),
                }
            }
            Principal::Policy { name, .. } => DeviceAuthError::NoDeviceConnect { name },
        })
    }

    /// Device `device_id`, proven by its self-signed TLS client certificate (leaf DER).
    pub fn device_by_certificate(
        &self,
        device_id: &str,
        cert_der: &[u8],
    ) -> Result<Principal, DeviceAuthError> {
        let credentials = self
            .hub
            .device_credentials(device_id)
            .ok_or_else(|| DeviceAuthError::UnknownDevice(device_id.to_owned()))?;
        let auth = &credentials.authentication;
        match auth.kind {
            AuthenticationType::SelfSigned => {
                let t = &auth.x509_thumbprint;
                let matches = [&t.primary_thumbprint, &t.secondary_thumbprint]
                    .into_iter()
                    .flatten()
                    .any(|registered| courier_auth::thumbprint_matches(registered, cert_der));
                if !matches {
                    return Err(DeviceAuthError::ThumbprintMismatch(device_id.to_owned()));
                }
            }
            AuthenticationType::CertificateAuthority => {
                return Err(DeviceAuthError::CertificateAuthorityUnsupported(
                    device_id.to_owned(),
                ));
            }
            AuthenticationType::Sas | AuthenticationType::None => {
                return Err(DeviceAuthError::NotCertificateDevice(device_id.to_owned()));
            }
        }
        self.refuse_disabled(device_id)?;
        Ok(Principal::Device {
            device_id: device_id.to_owned(),
        })
    }

    /// Refuses a disabled device (an unknown one passes: callers that need it
    /// registered use [`DeviceAuthenticator::require_enabled`]).
    pub fn refuse_disabled(&self, device_id: &str) -> Result<(), DeviceAuthError> {
        let disabled = self
            .hub
            .device_credentials(device_id)
            .is_some_and(|c| c.status == DeviceStatus::Disabled);
        if disabled {
            return Err(DeviceAuthError::Disabled(device_id.to_owned()));
        }
        Ok(())
    }

    /// Requires device `device_id` to be registered and enabled (a policy
    /// token may name any device; a connection needs a real one).
    pub fn require_enabled(&self, device_id: &str) -> Result<(), DeviceAuthError> {
        match self.hub.device_credentials(device_id) {
            None => Err(DeviceAuthError::UnknownDevice(device_id.to_owned())),
            Some(c) if c.status == DeviceStatus::Disabled => {
                Err(DeviceAuthError::Disabled(device_id.to_owned()))
            }
            Some(_) => Ok(()),
        }
    }
}
