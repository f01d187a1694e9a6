//! The identities a connection has proven: one entry per principal, from CBS
//! put-token (renewed by a later put-token) or SASL PLAIN, each with the
//! instant its token lapses. Links are authorized per link against this set
//! (wire spec §3.9: many devices may share one connection).

use std::sync::Mutex;

use courier_auth::{Principal, Right, SasToken, CLOCK_SKEW_SECS};
use courier_core::Timestamp;
use courier_hub::device_auth::{DeviceAuthError, DeviceAuthenticator};

use crate::AmqpConfig;

/// What a link needs from the connection's identities.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Need {
    /// A policy with ServiceConnect (service send, feedback).
    Service,
    /// The right to act as this device (its own token or DeviceConnect).
    Device(String),
}

impl Need {
    fn met_by(&self, principal: &Principal) -> bool {
        match self {
            Need::Service => principal.has(Right::ServiceConnect),
            Need::Device(id) => principal.may_act_as_device(id),
        }
    }
}

/// One proven principal.
#[derive(Clone, Debug)]
struct Grant {
    principal: Principal,
    expires: Timestamp,
}

/// A connection's proven identities.
#[derive(Default)]
pub(crate) struct Identities {
    grants: Mutex<Vec<Grant>>,
}

impl Identities {
    /// Records `principal` until `expires`; a renewal replaces the older entry.
    pub(crate) fn grant(&self, principal: Principal, expires: Timestamp) {
        let mut grants = self.grants.lock().unwrap_or_else(|p| p.into_inner());
        grants.retain(|g| g.principal != principal);
        grants.push(Grant { principal, expires });
    }

    /// When the latest grant meeting `need` lapses, if one is valid at `now`.
    pub(crate) fn valid_until(&self, need: &Need, now: Timestamp) -> Option<Timestamp> {
        let grants = self.grants.lock().unwrap_or_else(|p| p.into_inner());
        grants
            .iter()
            .filter(|g| g.expires > now && need.met_by(&g.principal))
            .map(|g| g.expires)
            .max()
    }
}

/// The principal `token` proves at `now` and when it lapses.
pub(crate) fn verify_token(
    config: &AmqpConfig,
    token: &str,
    now: Timestamp,
) -> Result<(Principal, Timestamp), DeviceAuthError> {
    let token = SasToken::parse(token).map_err(courier_auth::AuthError::from)?;
    let gate = DeviceAuthenticator::new(&config.hub, &config.authenticator, &config.policies);
    let now_unix = u64::try_from(now.as_millis() / 1000).unwrap_or(0);
    let principal = gate.principal(&token, now_unix)?;
    // A token accepted within the clock-skew grace gets that grace rather
    // than lapsing at once (as the MQTT head does).
    let se = if token.expiry > now_unix {
        token.expiry
    } else {
        token.expiry.saturating_add(CLOCK_SKEW_SECS)
    };
    let expires = Timestamp(i64::try_from(se.saturating_mul(1000)).unwrap_or(i64::MAX));
    Ok((principal, expires))
}

#[cfg(test)]
mod tests {
    use super::*;
    use courier_auth::{Rights, Scope};

    fn device(id: &str) -> Principal {
        Principal::Device {
            device_id: id.into(),
        }
    }

    #[test]
    fn a_grant_serves_only_what_it_proves_and_only_until_it_lapses() {
        let ids = Identities::default();
        ids.grant(device("d1"), Timestamp(1_000));
        let d1 = Need::Device("d1".into());
        assert_eq!(ids.valid_until(&d1, Timestamp(500)), Some(Timestamp(1_000)));
        assert_eq!(ids.valid_until(&d1, Timestamp(1_000)), None);
        assert_eq!(
            ids.valid_until(&Need::Device("d2".into()), Timestamp(0)),
            None
        );
        assert_eq!(ids.valid_until(&Need::Service, Timestamp(0)), None);
        // Renewal: the later token replaces the earlier.
        ids.grant(device("d1"), Timestamp(5_000));
        assert_eq!(
            ids.valid_until(&d1, Timestamp(2_000)),
            Some(Timestamp(5_000))
        );
        ids.grant(device("d1"), Timestamp(3_000));
        assert_eq!(ids.valid_until(&d1, Timestamp(4_000)), None);
    }

    #[test]
    fn a_service_policy_meets_service_needs_only() {
        let ids = Identities::default();
        ids.grant(
            Principal::Policy {
                name: "service".into(),
                rights: Rights::empty().with(Right::ServiceConnect),
                scope: Scope::Hub,
            },
            Timestamp(1_000),
        );
        assert!(ids.valid_until(&Need::Service, Timestamp(0)).is_some());
        assert!(ids
            .valid_until(&Need::Device("d1".into()), Timestamp(0))
            .is_none());
    }
}
