//! Who is calling, and may they: the SAS token of the `Authorization` header
//! (or, without one, a device's self-signed TLS client certificate) checked
//! against the registry and the shared access policies (wire spec §1.3–1.6).

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use courier_auth::{DeviceCredentials, KeyStore, Policy, Principal, Right};
use courier_core::{AuthenticationType, DeviceStatus};

use crate::error::ApiError;
use crate::{App, PeerCertificate};

/// What a request brings to prove who it is.
pub(crate) struct Caller {
    /// The `Authorization` header; `Err` when it is not UTF-8.
    authorization: Option<Result<String, ()>>,
    /// The TLS client certificate (leaf DER), if the connection had one.
    certificate: Option<Arc<Vec<u8>>>,
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Infallible> {
        let authorization = parts
            .headers
            .get(header::AUTHORIZATION)
            .map(|v| String::from_utf8(v.as_bytes().to_vec()).map_err(|_| ()));
        let certificate = parts
            .extensions
            .get::<PeerCertificate>()
            .and_then(|p| p.0.clone());
        Ok(Caller {
            authorization,
            certificate,
        })
    }
}

/// The registry and the policy list, as the authenticator looks keys up.
struct HubKeys<'a> {
    app: &'a App,
}

impl KeyStore for HubKeys<'_> {
    fn policy(&self, name: &str) -> Option<Policy> {
        self.app
            .policies
            .iter()
            .find(|p| p.key_name == name)
            .cloned()
    }

    fn device(&self, device_id: &str) -> Option<DeviceCredentials> {
        let credentials = self.app.hub.device_credentials(device_id)?;
        // Only SAS devices have keys; the others authenticate by certificate.
        let keys = match credentials.authentication.kind {
            AuthenticationType::Sas => credentials.authentication.symmetric_key,
            _ => None,
        };
        Some(DeviceCredentials {
            primary_key: keys.as_ref().map(|k| k.primary_key.clone()),
            secondary_key: keys.map(|k| k.secondary_key),
        })
    }
}

/// The principal proven by the caller's SAS token.
fn sas_principal(app: &App, token: &Result<String, ()>) -> Result<Principal, ApiError> {
    let token = token
        .as_ref()
        .map_err(|()| ApiError::unauthorized("the Authorization header is not UTF-8"))?;
    let now = u64::try_from(crate::timefmt::now().as_millis() / 1000).unwrap_or(0);
    let principal = app
        .authenticator
        .authenticate(token.trim(), now, &HubKeys { app })
        .map_err(|e| ApiError::unauthorized(e.to_string()))?;
    if let Principal::Device { device_id } = &principal {
        refuse_disabled(app, device_id)?;
    }
    Ok(principal)
}

/// A disabled device's own credentials no longer let it in.
fn refuse_disabled(app: &App, device_id: &str) -> Result<(), ApiError> {
    let disabled = app
        .hub
        .device_credentials(device_id)
        .is_some_and(|c| c.status == DeviceStatus::Disabled);
    if disabled {
        return Err(ApiError::unauthorized(format!(
            "device '{device_id}' is disabled; set its status to enabled in the registry to let it connect"
        )));
    }
    Ok(())
}

/// Checks that the caller may act as device `device_id` (the device API).
pub(crate) fn device(app: &App, caller: &Caller, device_id: &str) -> Result<Principal, ApiError> {
    let Some(token) = &caller.authorization else {
        return certificate_principal(app, caller, device_id);
    };
    let principal = sas_principal(app, token)?;
    if principal.may_act_as_device(device_id) {
        return Ok(principal);
    }
    Err(ApiError::unauthorized(match &principal {
        Principal::Device { device_id: own } => {
            format!("a token of device '{own}' cannot act for device '{device_id}'")
        }
        Principal::Policy { name, rights, .. } if rights.contains(Right::DeviceConnect) => {
            format!("the token of policy '{name}' is scoped to another device than '{device_id}'")
        }
        Principal::Policy { name, .. } => {
            format!("Authorization rule '{name}' does not allow access for 'DeviceConnect'")
        }
    }))
}

/// Checks that the caller holds `right` (the service and registry APIs).
pub(crate) fn right(app: &App, caller: &Caller, right: Right) -> Result<Principal, ApiError> {
    any_right(app, caller, &[right])
}

/// Checks that the caller holds at least one of `rights`.
pub(crate) fn any_right(
    app: &App,
    caller: &Caller,
    rights: &[Right],
) -> Result<Principal, ApiError> {
    let Some(token) = &caller.authorization else {
        let text = if caller.certificate.is_some() {
            "client certificates authenticate devices only; this API needs a SAS token of a shared access policy"
        } else {
            "missing Authorization header; send a SAS token of a shared access policy (SharedAccessSignature sr=…&sig=…&se=…&skn=…)"
        };
        return Err(ApiError::unauthorized(text));
    };
    let principal = sas_principal(app, token)?;
    if rights.iter().any(|r| principal.has(*r)) {
        return Ok(principal);
    }
    let wanted = rights
        .iter()
        .map(|r| r.as_str())
        .collect::<Vec<_>>()
        .join("' or '");
    Err(ApiError::unauthorized(match &principal {
        Principal::Device { device_id } => format!(
            "a device token (device '{device_id}') grants only DeviceConnect; this API needs '{wanted}' from a shared access policy"
        ),
        Principal::Policy { name, .. } => {
            format!("Authorization rule '{name}' does not allow access for '{wanted}'")
        }
    }))
}

/// A device proven by its TLS client certificate, for requests without a token.
fn certificate_principal(
    app: &App,
    caller: &Caller,
    device_id: &str,
) -> Result<Principal, ApiError> {
    let Some(cert) = &caller.certificate else {
        return Err(ApiError::unauthorized(
            "missing Authorization header; send a SAS token (SharedAccessSignature sr=…&sig=…&se=…) or connect with the device's registered client certificate",
        ));
    };
    let Some(credentials) = app.hub.device_credentials(device_id) else {
        return Err(ApiError::unauthorized(format!(
            "device '{device_id}' is not registered on this hub"
        )));
    };
    let auth = &credentials.authentication;
    match auth.kind {
        AuthenticationType::SelfSigned => {
            let t = &auth.x509_thumbprint;
            let matches = [&t.primary_thumbprint, &t.secondary_thumbprint]
                .into_iter()
                .flatten()
                .any(|registered| courier_auth::thumbprint_matches(registered, cert));
            if !matches {
                return Err(ApiError::unauthorized(format!(
                    "the client certificate matches neither registered thumbprint of device '{device_id}'"
                )));
            }
        }
        AuthenticationType::CertificateAuthority => {
            return Err(ApiError::unauthorized(format!(
                "device '{device_id}' uses CA-signed certificates, which Courier does not support yet; register it as selfSigned with the certificate's thumbprint, or use SAS keys"
            )));
        }
        AuthenticationType::Sas | AuthenticationType::None => {
            return Err(ApiError::unauthorized(format!(
                "device '{device_id}' does not authenticate with a client certificate; send a SAS token"
            )));
        }
    }
    refuse_disabled(app, device_id)?;
    Ok(Principal::Device {
        device_id: device_id.to_owned(),
    })
}
