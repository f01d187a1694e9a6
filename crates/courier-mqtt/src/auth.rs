//! CONNECT authentication: the user name's host, then the SAS token in the
//! password or, without one, the TLS client certificate (wire spec §1.3, §1.6, §2.2).

use courier_auth::{SasToken, CLOCK_SKEW_SECS};
use courier_core::Timestamp;
use courier_hub::device_auth::{DeviceAuthError, DeviceAuthenticator};
use rumqttc::mqttbytes::v4::ConnectReturnCode;

use crate::connection::ConnectAttempt;
use crate::MqttConfig;

/// Checks `attempt` at `now`; on success, when the token lapses (`None` for a certificate).
pub(crate) fn authenticate(
    config: &MqttConfig,
    attempt: &ConnectAttempt,
    peer_certificate: Option<&[u8]>,
    now: Timestamp,
) -> Result<Option<Timestamp>, (ConnectReturnCode, String)> {
    let not_authorized = |e: DeviceAuthError| (ConnectReturnCode::NotAuthorized, e.to_string());
    if !config.authenticator.accepts_host(&attempt.host) {
        return Err((
            ConnectReturnCode::BadUserNamePassword,
            format!("user name host '{}' is not this hub", attempt.host),
        ));
    }
    let gate = DeviceAuthenticator::new(&config.hub, &config.authenticator, &config.policies);
    let device_id = attempt.device_id.as_str();
    let now_unix = u64::try_from(now.as_millis() / 1000).unwrap_or(0);
    let deadline = match (&attempt.password, peer_certificate) {
        (Some(password), _) => {
            let token = SasToken::parse(password).map_err(|e| {
                (
                    ConnectReturnCode::NotAuthorized,
                    format!("the password is not a SAS token: {e}"),
                )
            })?;
            gate.device_by_token(&token, now_unix, device_id)
                .map_err(not_authorized)?;
            // IoT Hub closes the connection when `se` passes; a token
            // accepted within the clock-skew grace gets that grace instead
            // of being closed at once.
            let se = if token.expiry > now_unix {
                token.expiry
            } else {
                token.expiry.saturating_add(CLOCK_SKEW_SECS)
            };
            Some(Timestamp(
                i64::try_from(se.saturating_mul(1000)).unwrap_or(i64::MAX),
            ))
        }
        (None, Some(cert)) => {
            gate.device_by_certificate(device_id, cert)
                .map_err(not_authorized)?;
            None
        }
        (None, None) => {
            return Err((
                ConnectReturnCode::NotAuthorized,
                "no password and no client certificate: send a SAS token as the password".into(),
            ))
        }
    };
    // A policy token may name any device; the connection needs a real, enabled one.
    gate.require_enabled(device_id).map_err(not_authorized)?;
    Ok(deadline)
}
