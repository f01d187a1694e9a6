//! Who is calling, and may they: the SAS token of the `Authorization` header
//! (or, without one, a device's self-signed TLS client certificate) checked
//! against the registry and the shared access policies (wire spec §1.3–1.6).

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;
use courier_auth::{AuthError, Principal, Right, SasToken};
use courier_hub::device_auth::{DeviceAuthError, DeviceAuthenticator};

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

/// The shared device authentication over this app's hub and policies.
fn gate(app: &App) -> DeviceAuthenticator<'_> {
    DeviceAuthenticator::new(&app.hub, &app.authenticator, &app.policies)
}

fn unauthorized(e: DeviceAuthError) -> ApiError {
    ApiError::unauthorized(e.to_string())
}

/// The caller's SAS token, parsed.
fn parse_token(token: &Result<String, ()>) -> Result<SasToken, ApiError> {
    let token = token
        .as_ref()
        .map_err(|()| ApiError::unauthorized("the Authorization header is not UTF-8"))?;
    SasToken::parse(token.trim()).map_err(|e| unauthorized(AuthError::from(e).into()))
}

fn now_unix() -> u64 {
    u64::try_from(crate::timefmt::now().as_millis() / 1000).unwrap_or(0)
}

/// The principal proven by the caller's SAS token.
fn sas_principal(app: &App, token: &Result<String, ()>) -> Result<Principal, ApiError> {
    let token = parse_token(token)?;
    gate(app)
        .principal(&token, now_unix())
        .map_err(unauthorized)
}

/// Checks that the caller may act as device `device_id` (the device API).
pub(crate) fn device(app: &App, caller: &Caller, device_id: &str) -> Result<Principal, ApiError> {
    let Some(token) = &caller.authorization else {
        return certificate_principal(app, caller, device_id);
    };
    let token = parse_token(token)?;
    gate(app)
        .device_by_token(&token, now_unix(), device_id)
        .map_err(unauthorized)
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
    gate(app)
        .device_by_certificate(device_id, cert)
        .map_err(unauthorized)
}
