//! SAS authentication against the token shapes each official SDK sends (wire spec §1.3).
//!
//! Captured tokens keep their exact bytes except the signature, which is recomputed with our
//! own keys (the capture keys were throwaway and are not in the traces).

// Helpers outside #[test] fns are test code too; a panic there is a failed test.
#![allow(clippy::unwrap_used)]

use std::collections::HashMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use courier_auth::{
    generate_token, sign, AuthError, Authenticator, DeviceCredentials, KeyStore, Policy, Principal,
    Right, Rights, SasError, SasToken, Scope,
};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use proptest::prelude::*;

const HOST: &str = "hub.courier.test";
const DEVICE_KEY: &str = "wMM1Z/MRGFC67W/7+p6FRdLdz9Wq+Wdn5Gc0pPeQCeQ=";
const DEVICE_KEY_2: &str = "vkHC4S2PygsHjOs/d0Ymj3mF0hPk8HJTSPdXl0M0Zqo=";
const OTHER_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
const OWNER_KEY: &str = "c2VydmljZS1wcmltYXJ5LWtleS0zMi1ieXRlcy0hISE=";
const OWNER_KEY_2: &str = "c2VydmljZS1zZWNvbmRhcnkta2V5LTMyLWJ5dGVzLSE=";
const NOW: u64 = 1_795_414_000;
const SE: u64 = 1_795_417_604;

#[derive(Default)]
struct Store {
    policies: HashMap<String, Policy>,
    devices: HashMap<String, DeviceCredentials>,
}

impl Store {
    fn device(mut self, id: &str, primary: Option<&str>, secondary: Option<&str>) -> Self {
        self.devices.insert(
            id.to_owned(),
            DeviceCredentials {
                primary_key: primary.map(str::to_owned),
                secondary_key: secondary.map(str::to_owned),
            },
        );
        self
    }

    fn policy(mut self, name: &str, rights: Rights) -> Self {
        self.policies.insert(
            name.to_owned(),
            Policy {
                key_name: name.to_owned(),
                primary_key: OWNER_KEY.to_owned(),
                secondary_key: OWNER_KEY_2.to_owned(),
                rights,
            },
        );
        self
    }
}

impl KeyStore for Store {
    fn policy(&self, name: &str) -> Option<Policy> {
        self.policies.get(name).cloned()
    }

    fn device(&self, device_id: &str) -> Option<DeviceCredentials> {
        self.devices.get(device_id).cloned()
    }
}

fn store() -> Store {
    Store::default()
        .device("dev-1", Some(DEVICE_KEY), Some(DEVICE_KEY_2))
        .device("harness-dev-1", Some(DEVICE_KEY), None)
        .policy("iothubowner", Rights::all())
        .policy("service", Right::ServiceConnect.into())
        .policy("device", Right::DeviceConnect.into())
}

fn auth() -> Authenticator {
    Authenticator::new(vec![HOST.to_owned(), "localhost".to_owned()])
}

/// The URL-encoded base64 signature of `sr\nse`, as SDKs put it in the token.
fn sig(sr: &str, se: u64, key: &str) -> String {
    let sig = sign(&format!("{sr}\n{se}"), key).unwrap();
    utf8_percent_encode(&sig, NON_ALPHANUMERIC).to_string()
}

/// Replaces the `sig` field of a captured token with the base64 `signature`, keeping all else.
fn with_sig(token: &str, signature: &str) -> String {
    let encoded = utf8_percent_encode(signature, NON_ALPHANUMERIC).to_string();
    let body = token.strip_prefix("SharedAccessSignature ").unwrap();
    let fields: Vec<String> = body
        .split('&')
        .map(|f| match f.strip_prefix("sig=") {
            Some(_) => format!("sig={encoded}"),
            None => f.to_owned(),
        })
        .collect();
    format!("SharedAccessSignature {}", fields.join("&"))
}

/// Re-signs a captured token's own `sr`/`se` with `key`.
fn resign(token: &str, key: &str) -> String {
    let parsed = SasToken::parse(token).unwrap();
    with_sig(token, &sign(&parsed.string_to_sign(), key).unwrap())
}

/// .NET's `WebUtility.UrlEncode`: alphanumerics and `-_.!*()` stay, space becomes `+`.
fn dotnet_url_encode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z'
            | b'a'..=b'z'
            | b'0'..=b'9'
            | b'-'
            | b'_'
            | b'.'
            | b'!'
            | b'*'
            | b'('
            | b')' => out.push(char::from(b)),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn device(id: &str) -> Principal {
    Principal::Device {
        device_id: id.to_owned(),
    }
}

#[test]
fn python_device_token_from_trace() {
    let token = resign(
        "SharedAccessSignature sr=localhost%2Fdevices%2Fharness-dev-1&sig=GgjGhZW%2B6Gk0P6zd604Nsht1NGvD0gF4S1fknZ9Esv4%3D&se=1795417604",
        DEVICE_KEY,
    );
    assert_eq!(
        auth().authenticate(&token, NOW, &store()),
        Ok(device("harness-dev-1"))
    );
}

#[test]
fn node_policy_token_with_skn_before_se_from_trace() {
    let token = resign(
        "SharedAccessSignature sr=localhost&sig=MdAhNZVFuhGDdVn1P5DW%2ByPD%2BSDBT8sW1qAFAG5srJA%3D&skn=iothubowner&se=1795417607",
        OWNER_KEY,
    );
    let principal = auth().authenticate(&token, NOW, &store()).unwrap();
    assert_eq!(
        principal,
        Principal::Policy {
            name: "iothubowner".into(),
            rights: Rights::all(),
            scope: Scope::Hub
        }
    );
    assert!(principal.has(Right::ServiceConnect));
    assert!(principal.may_act_as_device("anything"));
}

#[test]
fn python_service_cbs_token_from_trace() {
    let token = resign(
        "SharedAccessSignature sr=localhost&sig=ECImrGYoWDT86Tb%2B6vjAyijZ3TLZXL86dZlETglhASs%3D&se=1795417604&skn=iothubowner",
        OWNER_KEY,
    );
    assert!(matches!(
        auth().authenticate(&token, NOW, &store()),
        Ok(Principal::Policy {
            scope: Scope::Hub,
            ..
        })
    ));
}

#[test]
fn node_device_acting_through_policy() {
    let sr = "hub.courier.test%2Fdevices%2Fdev-1";
    let token = format!(
        "SharedAccessSignature sr={sr}&sig={}&skn=device&se={SE}",
        sig(sr, SE, OWNER_KEY)
    );
    let principal = auth().authenticate(&token, NOW, &store()).unwrap();
    assert_eq!(
        principal,
        Principal::Policy {
            name: "device".into(),
            rights: Right::DeviceConnect.into(),
            scope: Scope::Device("dev-1".into())
        }
    );
    assert!(principal.may_act_as_device("dev-1"));
    assert!(!principal.may_act_as_device("dev-2"));
    assert!(!principal.has(Right::ServiceConnect));
}

#[test]
fn dotnet_device_policy_token_is_hub_wide() {
    // .NET's DeviceAuthenticationWithSakRefresh scopes a policy token to the whole hub.
    let token = format!(
        "SharedAccessSignature sr={HOST}&sig={}&se={SE}&skn=device",
        sig(HOST, SE, OWNER_KEY)
    );
    let principal = auth().authenticate(&token, NOW, &store()).unwrap();
    assert!(principal.may_act_as_device("dev-1"));
    // The service policy has no DeviceConnect, so it may not act as a device whatever its scope.
    let token = format!(
        "SharedAccessSignature sr={HOST}&sig={}&se={SE}&skn=service",
        sig(HOST, SE, OWNER_KEY)
    );
    let principal = auth().authenticate(&token, NOW, &store()).unwrap();
    assert!(!principal.may_act_as_device("dev-1"));
    assert!(principal.has(Right::ServiceConnect));
}

#[test]
fn dotnet_double_encoded_device_id() {
    let id = "dev+1(x)";
    let sr = dotnet_url_encode(&format!("{HOST}/devices/{}", dotnet_url_encode(id)));
    assert_eq!(sr, "hub.courier.test%2Fdevices%2Fdev%252B1(x)");
    let keys = store().device(id, Some(DEVICE_KEY), None);
    let token = format!(
        "SharedAccessSignature sr={sr}&sig={}&se={SE}",
        sig(&sr, SE, DEVICE_KEY)
    );
    assert_eq!(auth().authenticate(&token, NOW, &keys), Ok(device(id)));

    // A device literally named like the once-decoded form is a different device: each token
    // resolves to the device whose key signed it.
    let keys = keys.device("dev%2B1(x)", Some(OTHER_KEY), None);
    assert_eq!(auth().authenticate(&token, NOW, &keys), Ok(device(id)));
    let token = format!(
        "SharedAccessSignature sr={sr}&sig={}&se={SE}",
        sig(&sr, SE, OTHER_KEY)
    );
    assert_eq!(
        auth().authenticate(&token, NOW, &keys),
        Ok(device("dev%2B1(x)"))
    );
}

#[test]
fn c_raw_sr_with_empty_skn() {
    let sr = "hub.courier.test/devices/dev-1";
    let token = format!(
        "SharedAccessSignature sr={sr}&sig={}&se={SE}&skn=",
        sig(sr, SE, DEVICE_KEY)
    );
    assert_eq!(
        auth().authenticate(&token, NOW, &store()),
        Ok(device("dev-1"))
    );
}

#[test]
fn c_raw_sr_with_percent_in_device_id() {
    // C does not encode sr at all, so an id containing "%41" must be read undecoded.
    let id = "a%41b";
    let sr = format!("{HOST}/devices/{id}");
    let keys = store().device(id, Some(DEVICE_KEY), None);
    let token = format!(
        "SharedAccessSignature sr={sr}&sig={}&se={SE}",
        sig(&sr, SE, DEVICE_KEY)
    );
    assert_eq!(auth().authenticate(&token, NOW, &keys), Ok(device(id)));
}

#[test]
fn java_device_order_and_raw_slashes() {
    let sr = "hub.courier.test/devices/dev-1";
    let token = format!(
        "SharedAccessSignature sig={}&se={SE}&sr={sr}",
        sig(sr, SE, DEVICE_KEY)
    );
    assert_eq!(
        auth().authenticate(&token, NOW, &store()),
        Ok(device("dev-1"))
    );
}

#[test]
fn java_service_lowercased_host() {
    let auth = Authenticator::new(vec!["MyHub.Courier.Test".to_owned()]);
    let sr = "myhub.courier.test";
    let token = format!(
        "SharedAccessSignature sr={sr}&sig={}&se={SE}&skn=service",
        sig(sr, SE, OWNER_KEY)
    );
    assert!(matches!(
        auth.authenticate(&token, NOW, &store()),
        Ok(Principal::Policy {
            scope: Scope::Hub,
            ..
        })
    ));
}

#[test]
fn python_service_amqp_https_host_and_amqps_trailing_slash() {
    for sr in [
        "https://hub.courier.test",
        "amqps://HUB.courier.test/",
        "https%3A%2F%2Fhub.courier.test%2F",
    ] {
        let token = format!(
            "SharedAccessSignature sr={sr}&sig={}&se={SE}&skn=iothubowner",
            sig(sr, SE, OWNER_KEY)
        );
        assert!(
            matches!(
                auth().authenticate(&token, NOW, &store()),
                Ok(Principal::Policy {
                    scope: Scope::Hub,
                    ..
                })
            ),
            "{sr}"
        );
    }
}

#[test]
fn module_token_acts_as_its_device() {
    let token = generate_token(
        &format!("{HOST}/devices/dev-1/modules/m1"),
        DEVICE_KEY,
        None,
        SE,
    )
    .unwrap();
    assert_eq!(
        auth().authenticate(&token, NOW, &store()),
        Ok(device("dev-1"))
    );
}

#[test]
fn host_with_port_is_compared_without_it() {
    let token =
        generate_token(&format!("{HOST}:8883/devices/dev-1"), DEVICE_KEY, None, SE).unwrap();
    assert_eq!(
        auth().authenticate(&token, NOW, &store()),
        Ok(device("dev-1"))
    );
    assert!(auth().accepts_host("HUB.courier.test:443"));
    assert!(!auth().accepts_host("hub.courier.test.evil"));
}

#[test]
fn expiry_allows_five_minutes_of_skew() {
    let token = generate_token(&format!("{HOST}/devices/dev-1"), DEVICE_KEY, None, SE).unwrap();
    assert!(auth().authenticate(&token, SE + 300, &store()).is_ok());
    assert_eq!(
        auth().authenticate(&token, SE + 301, &store()),
        Err(AuthError::Expired {
            expiry: SE,
            now: SE + 301
        })
    );
    // Tokens with far-future expiry are fine (the C service SDK mints 365-day tokens).
    let long = generate_token(HOST, OWNER_KEY, Some("service"), u64::MAX).unwrap();
    assert!(auth().authenticate(&long, NOW, &store()).is_ok());
}

#[test]
fn secondary_keys_are_accepted() {
    let token = generate_token(&format!("{HOST}/devices/dev-1"), DEVICE_KEY_2, None, SE).unwrap();
    assert_eq!(
        auth().authenticate(&token, NOW, &store()),
        Ok(device("dev-1"))
    );
    let token = generate_token(HOST, OWNER_KEY_2, Some("service"), SE).unwrap();
    assert!(auth().authenticate(&token, NOW, &store()).is_ok());
}

#[test]
fn wrong_key_is_a_bad_signature() {
    let token = generate_token(&format!("{HOST}/devices/dev-1"), OTHER_KEY, None, SE).unwrap();
    assert_eq!(
        auth().authenticate(&token, NOW, &store()),
        Err(AuthError::BadSignature)
    );
    let token = generate_token(HOST, OTHER_KEY, Some("iothubowner"), SE).unwrap();
    assert_eq!(
        auth().authenticate(&token, NOW, &store()),
        Err(AuthError::BadSignature)
    );
    // A device key does not sign policy tokens.
    let token = generate_token(HOST, DEVICE_KEY, Some("iothubowner"), SE).unwrap();
    assert_eq!(
        auth().authenticate(&token, NOW, &store()),
        Err(AuthError::BadSignature)
    );
}

#[test]
fn wrong_host_is_refused() {
    let token = generate_token(
        "other.azure-devices.net/devices/dev-1",
        DEVICE_KEY,
        None,
        SE,
    )
    .unwrap();
    assert_eq!(
        auth().authenticate(&token, NOW, &store()),
        Err(AuthError::WrongHost("other.azure-devices.net".into()))
    );
    // A suffix or prefix of an accepted host is a different host.
    let token = generate_token("courier.test", OWNER_KEY, Some("service"), SE).unwrap();
    assert!(matches!(
        auth().authenticate(&token, NOW, &store()),
        Err(AuthError::WrongHost(_))
    ));
}

#[test]
fn wrong_device() {
    // A token for dev-2 signed with another device's key.
    let keys = store().device("dev-2", Some(OTHER_KEY), None);
    let token = generate_token(&format!("{HOST}/devices/dev-2"), DEVICE_KEY, None, SE).unwrap();
    assert_eq!(
        auth().authenticate(&token, NOW, &keys),
        Err(AuthError::BadSignature)
    );

    let token = generate_token(&format!("{HOST}/devices/ghost"), DEVICE_KEY, None, SE).unwrap();
    assert_eq!(
        auth().authenticate(&token, NOW, &keys),
        Err(AuthError::UnknownDevice("ghost".into()))
    );

    let principal = device("dev-1");
    assert!(principal.may_act_as_device("dev-1"));
    assert!(!principal.may_act_as_device("dev-2"));
    assert!(!principal.may_act_as_device("DEV-1"));
    assert!(principal.has(Right::DeviceConnect));
    assert!(!principal.has(Right::ServiceConnect));
    assert!(!principal.has(Right::RegistryRead));
}

#[test]
fn device_without_keys_is_refused() {
    let keys = store().device("x509-dev", None, None);
    let token = generate_token(&format!("{HOST}/devices/x509-dev"), DEVICE_KEY, None, SE).unwrap();
    assert_eq!(
        auth().authenticate(&token, NOW, &keys),
        Err(AuthError::NoSymmetricKey("x509-dev".into()))
    );
}

#[test]
fn policy_scopes() {
    let scope_of = |resource: &str| {
        let token = generate_token(resource, OWNER_KEY, Some("iothubowner"), SE).unwrap();
        auth().authenticate(&token, NOW, &store()).map(|p| match p {
            Principal::Policy { scope, .. } => scope,
            Principal::Device { .. } => panic!("policy token authenticated as a device"),
        })
    };
    assert_eq!(scope_of(HOST), Ok(Scope::Hub));
    assert_eq!(scope_of(&format!("{HOST}/")), Ok(Scope::Hub));
    assert_eq!(scope_of(&format!("{HOST}/devices")), Ok(Scope::Devices));
    assert_eq!(
        scope_of(&format!("{HOST}/devices/dev-9")),
        Ok(Scope::Device("dev-9".into()))
    );
    for bad in [
        "/devices/dev-9/modules/m",
        "/messages/devicebound",
        "/devices/a/b",
        "//devices",
    ] {
        assert!(
            matches!(
                scope_of(&format!("{HOST}{bad}")),
                Err(AuthError::WrongScope(_))
            ),
            "{bad}"
        );
    }
    let devices = Principal::Policy {
        name: "gw".into(),
        rights: Right::DeviceConnect.into(),
        scope: Scope::Devices,
    };
    assert!(devices.may_act_as_device("any"));
}

#[test]
fn device_token_needs_a_device_scope() {
    for resource in [
        HOST.to_owned(),
        format!("{HOST}/devices"),
        format!("{HOST}/devices/a/b"),
    ] {
        let token = generate_token(&resource, DEVICE_KEY, None, SE).unwrap();
        assert!(
            matches!(
                auth().authenticate(&token, NOW, &store()),
                Err(AuthError::WrongScope(_))
            ),
            "{resource}"
        );
    }
}

#[test]
fn unknown_policy_and_malformed_tokens() {
    let token = generate_token(HOST, OWNER_KEY, Some("nobody"), SE).unwrap();
    assert_eq!(
        auth().authenticate(&token, NOW, &store()),
        Err(AuthError::UnknownPolicy("nobody".into()))
    );
    let err = auth()
        .authenticate("Bearer abc", NOW, &store())
        .unwrap_err();
    assert_eq!(err, AuthError::Malformed(SasError::MissingPrefix));
    assert_eq!(err.iothub_code(), 401002);
    assert!(err.to_string().contains("SharedAccessSignature"), "{err}");
}

/// IoT Hub's device id charset [CS IotHubConnectionStringBuilder.cs].
const DEVICE_ID: &str = "[A-Za-z0-9\\-:.+%_#*?!(),=@;$']{1,128}";

fn flip_signature_byte(token: &str, index: usize, bit: u8) -> String {
    let mut signature = SasToken::parse(token).unwrap().signature;
    let i = index % signature.len();
    signature[i] ^= 1 << (bit % 8);
    with_sig(token, &STANDARD.encode(&signature))
}

proptest! {
    #[test]
    fn generated_device_tokens_authenticate(
        id in DEVICE_ID,
        key_bytes in proptest::array::uniform32(any::<u8>()),
        expiry in 0u64..=u64::MAX / 2,
        age in 0u64..=300,
        index in any::<usize>(),
        bit in any::<u8>(),
    ) {
        let key = STANDARD.encode(key_bytes);
        let keys = Store::default().device(&id, Some(&key), None);
        let now = expiry + age;
        let token = generate_token(&format!("{HOST}/devices/{id}"), &key, None, expiry).unwrap();
        prop_assert_eq!(auth().authenticate(&token, now, &keys), Ok(device(&id)));

        let tampered = flip_signature_byte(&token, index, bit);
        prop_assert_eq!(auth().authenticate(&tampered, now, &keys), Err(AuthError::BadSignature));
    }

    #[test]
    fn dotnet_and_c_shapes_authenticate(
        id in DEVICE_ID,
        key_bytes in proptest::array::uniform32(any::<u8>()),
    ) {
        let key = STANDARD.encode(key_bytes);
        let keys = Store::default().device(&id, Some(&key), None);
        let dotnet_sr = dotnet_url_encode(&format!("{HOST}/devices/{}", dotnet_url_encode(&id)));
        let c_sr = format!("{HOST}/devices/{id}");
        for sr in [dotnet_sr, c_sr] {
            let token = format!("SharedAccessSignature sr={sr}&sig={}&se={SE}", sig(&sr, SE, &key));
            prop_assert_eq!(auth().authenticate(&token, NOW, &keys), Ok(device(&id)), "sr {}", sr);
        }
    }
}
