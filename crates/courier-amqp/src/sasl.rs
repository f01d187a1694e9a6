//! SASL as the SDKs use it (wire spec §3.2): ANONYMOUS and `MSSBCBS` (both
//! "authenticate later with CBS"), and PLAIN with `{policy}@sas.root.{hub}` or
//! `{deviceId}@sas.{hub}` as user name and a SAS token as password.
//!
//! fe2o3's SASL callbacks are synchronous and its acceptor is not reachable
//! from the connection handle, so PLAIN's identity goes straight into the
//! connection's [`Identities`] (the token check is synchronous too).

use std::sync::Arc;

use courier_auth::Principal;
use courier_core::Clock as _;
use courier_hub::SystemClock;
use fe2o3_amqp::acceptor::sasl_acceptor::SaslServerFrame;
use fe2o3_amqp::acceptor::SaslAcceptor;
use fe2o3_amqp::types::primitives::{Array, Symbol};
use fe2o3_amqp::types::sasl::{SaslCode, SaslInit, SaslOutcome, SaslResponse};
use tracing::debug;

use crate::identity::{verify_token, Identities};
use crate::AmqpConfig;

const ANONYMOUS: &str = "ANONYMOUS";
const MSSBCBS: &str = "MSSBCBS";
const PLAIN: &str = "PLAIN";

/// The server side of one connection's SASL exchange.
#[derive(Clone)]
pub(crate) struct CourierSasl {
    pub(crate) config: AmqpConfig,
    pub(crate) identities: Arc<Identities>,
}

impl CourierSasl {
    fn plain(&self, response: &[u8]) -> Result<(), String> {
        let mut parts = response.split(|b| *b == 0);
        let (_authzid, authcid, password) = match (parts.next(), parts.next(), parts.next()) {
            (Some(z), Some(c), Some(p)) => (z, c, p),
            _ => return Err("PLAIN response is not authzid\\0authcid\\0password".into()),
        };
        let user = std::str::from_utf8(authcid).map_err(|_| "user name is not UTF-8")?;
        let password = std::str::from_utf8(password).map_err(|_| "password is not UTF-8")?;
        let wanted = plain_user(user, &self.config.hub.settings().hub_name).ok_or_else(|| {
            format!(
                "user name '{user}' is not {{policy}}@sas.root.{{hub}} or {{deviceId}}@sas.{{hub}}"
            )
        })?;
        let now = SystemClock.now();
        let (principal, expires) =
            verify_token(&self.config, password, now).map_err(|e| e.to_string())?;
        let matches = match (&wanted, &principal) {
            (PlainUser::Policy(name), Principal::Policy { name: got, .. }) => name == got,
            (PlainUser::Device(id), p) => p.may_act_as_device(id),
            _ => false,
        };
        if !matches {
            return Err(format!("the token does not belong to '{user}'"));
        }
        self.identities.grant(principal, expires);
        Ok(())
    }
}

/// Who a PLAIN user name claims to be.
#[derive(Debug, PartialEq, Eq)]
enum PlainUser {
    Policy(String),
    Device(String),
}

fn plain_user(user: &str, hub_name: &str) -> Option<PlainUser> {
    let (who, realm) = user.rsplit_once('@')?;
    if let Some(hub) = realm.strip_prefix("sas.root.") {
        return hub
            .eq_ignore_ascii_case(hub_name)
            .then(|| PlainUser::Policy(who.to_owned()));
    }
    let hub = realm.strip_prefix("sas.")?;
    hub.eq_ignore_ascii_case(hub_name)
        .then(|| PlainUser::Device(who.to_owned()))
}

fn outcome(code: SaslCode) -> SaslServerFrame {
    SaslServerFrame::Outcome(SaslOutcome {
        code,
        additional_data: None,
    })
}

impl SaslAcceptor for CourierSasl {
    fn mechanisms(&self) -> Array<Symbol> {
        // uAMQP-C requires its own mechanism to be listed (§3.2).
        Array::from(vec![
            Symbol::from(MSSBCBS),
            Symbol::from(ANONYMOUS),
            Symbol::from(PLAIN),
        ])
    }

    fn on_init(&mut self, init: SaslInit) -> SaslServerFrame {
        match init.mechanism.0.as_str() {
            ANONYMOUS | MSSBCBS => outcome(SaslCode::Ok),
            PLAIN => {
                let response = init
                    .initial_response
                    .map(|b| b.into_vec())
                    .unwrap_or_default();
                match self.plain(&response) {
                    Ok(()) => outcome(SaslCode::Ok),
                    Err(why) => {
                        debug!(%why, "SASL PLAIN refused");
                        outcome(SaslCode::Auth)
                    }
                }
            }
            other => {
                debug!(mechanism = other, "SASL mechanism not offered");
                outcome(SaslCode::Auth)
            }
        }
    }

    fn on_response(&mut self, _response: SaslResponse) -> SaslServerFrame {
        // None of the offered mechanisms sends challenges.
        outcome(SaslCode::Sys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_user_names() {
        assert_eq!(
            plain_user("service@sas.root.Hub", "hub"),
            Some(PlainUser::Policy("service".into()))
        );
        assert_eq!(
            plain_user("d1@sas.hub", "hub"),
            Some(PlainUser::Device("d1".into()))
        );
        assert_eq!(plain_user("d1@sas.other", "hub"), None);
        assert_eq!(plain_user("d1@hub", "hub"), None);
        assert_eq!(plain_user("service", "hub"), None);
    }
}
