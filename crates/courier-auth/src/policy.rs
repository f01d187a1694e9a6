//! Shared access policies: named key pairs with rights (wire spec §1.5).

use std::fmt;

use base64::Engine as _;

use crate::rights::{Right, Rights};

/// A shared access policy, as the IoT Hub management API shows it.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    /// The policy name, sent as `skn` in tokens and `SharedAccessKeyName` in connection strings.
    pub key_name: String,
    /// The primary base64 key.
    pub primary_key: String,
    /// The secondary base64 key (tried when the primary does not match, for key rotation).
    pub secondary_key: String,
    /// What tokens signed with this policy's keys may do.
    pub rights: Rights,
}

impl Policy {
    /// A policy with two fresh random keys.
    pub fn generate<R: rand::RngCore + ?Sized>(
        key_name: &str,
        rights: Rights,
        rng: &mut R,
    ) -> Self {
        Policy {
            key_name: key_name.to_owned(),
            primary_key: generate_key(rng),
            secondary_key: generate_key(rng),
            rights,
        }
    }
}

impl fmt::Debug for Policy {
    /// Keys are redacted: policies get logged and the keys grant hub access.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Policy")
            .field("key_name", &self.key_name)
            .field("primary_key", &"<redacted>")
            .field("secondary_key", &"<redacted>")
            .field("rights", &self.rights)
            .finish()
    }
}

/// The five policies IoT Hub creates with every hub, with fresh keys.
pub fn default_policies<R: rand::RngCore + ?Sized>(rng: &mut R) -> Vec<Policy> {
    let read = Rights::from(Right::RegistryRead);
    [
        ("iothubowner", Rights::all()),
        ("service", Right::ServiceConnect.into()),
        ("device", Right::DeviceConnect.into()),
        ("registryRead", read),
        ("registryReadWrite", read.with(Right::RegistryWrite)),
    ]
    .into_iter()
    .map(|(name, rights)| Policy::generate(name, rights, rng))
    .collect()
}

/// A new symmetric key: 32 random bytes in standard base64 (44 characters, like IoT Hub's).
pub fn generate_key<R: rand::RngCore + ?Sized>(rng: &mut R) -> String {
    let mut bytes = [0u8; 32];
    rng.fill_bytes(&mut bytes);
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn default_policies_match_iothub() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let policies = default_policies(&mut rng);
        let summary: Vec<(&str, String)> = policies
            .iter()
            .map(|p| (p.key_name.as_str(), p.rights.to_string()))
            .collect();
        assert_eq!(
            summary,
            vec![
                (
                    "iothubowner",
                    "RegistryRead, RegistryWrite, ServiceConnect, DeviceConnect".to_owned()
                ),
                ("service", "ServiceConnect".to_owned()),
                ("device", "DeviceConnect".to_owned()),
                ("registryRead", "RegistryRead".to_owned()),
                (
                    "registryReadWrite",
                    "RegistryRead, RegistryWrite".to_owned()
                ),
            ]
        );
        let mut keys: Vec<&str> = policies
            .iter()
            .flat_map(|p| [p.primary_key.as_str(), p.secondary_key.as_str()])
            .collect();
        keys.sort_unstable();
        keys.dedup();
        assert_eq!(keys.len(), 10, "every key is distinct");
    }

    #[test]
    fn generated_key_is_32_bytes_of_base64() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let key = generate_key(&mut rng);
        assert_eq!(key.len(), 44);
        let raw = base64::engine::general_purpose::STANDARD
            .decode(&key)
            .unwrap();
        assert_eq!(raw.len(), 32);
        assert_ne!(key, generate_key(&mut rng));
    }

    #[test]
    fn serde_uses_camel_case_and_rights_string() {
        let policy = Policy {
            key_name: "service".into(),
            primary_key: "p".into(),
            secondary_key: "s".into(),
            rights: "ServiceConnect, RegistryRead".parse().unwrap(),
        };
        let json = serde_json::to_value(&policy).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "keyName": "service",
                "primaryKey": "p",
                "secondaryKey": "s",
                "rights": "RegistryRead, ServiceConnect",
            })
        );
        assert_eq!(serde_json::from_value::<Policy>(json).unwrap(), policy);
    }

    #[test]
    fn debug_hides_keys() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        let policy = Policy::generate("service", Right::ServiceConnect.into(), &mut rng);
        let shown = format!("{policy:?}");
        assert!(!shown.contains(&policy.primary_key), "{shown}");
        assert!(!shown.contains(&policy.secondary_key), "{shown}");
    }
}
