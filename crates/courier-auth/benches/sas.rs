//! SAS token cost per connection: parsing, full verification (parse + host + expiry + key
//! lookup + HMAC-SHA256) of a device-key token as the Python and Node device SDKs form it and
//! of a policy token with `skn`, and minting a token as the Node SDK does.
//!
//! Run: `cargo bench -p courier-auth --bench sas` (short run: append
//! `-- --warm-up-time 1 --measurement-time 3`). `cargo test --benches` runs each once.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::collections::HashMap;
use std::hint::black_box;

use courier_auth::{
    generate_token, Authenticator, DeviceCredentials, KeyStore, Policy, Principal, Rights, SasToken,
};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

const HOST: &str = "bench-hub.azure-devices.net";
const DEVICE: &str = "sensor-0042";
const DEVICE_KEY: &str = "wMM1Z/MRGFC67W/7+p6FRdLdz9Wq+Wdn5Gc0pPeQCeQ=";
const DEVICE_KEY_2: &str = "vkHC4S2PygsHjOs/d0Ymj3mF0hPk8HJTSPdXl0M0Zqo=";
const OWNER_KEY: &str = "c2VydmljZS1wcmltYXJ5LWtleS0zMi1ieXRlcy0hISE=";
const OWNER_KEY_2: &str = "c2VydmljZS1zZWNvbmRhcnkta2V5LTMyLWJ5dGVzLSE=";
const NOW: u64 = 1_795_414_000;
const SE: u64 = 1_795_417_600;

/// A registry of 1,000 devices and the owner policy, looked up the way the hub's view is
/// (a map lookup and a clone of the keys per call).
struct Keys {
    devices: HashMap<String, DeviceCredentials>,
    policies: Vec<Policy>,
}

impl KeyStore for Keys {
    fn policy(&self, name: &str) -> Option<Policy> {
        self.policies.iter().find(|p| p.key_name == name).cloned()
    }

    fn device(&self, device_id: &str) -> Option<DeviceCredentials> {
        self.devices.get(device_id).cloned()
    }
}

fn keys() -> Keys {
    let mut devices: HashMap<String, DeviceCredentials> = (0..1000)
        .map(|i| {
            (
                format!("sensor-{i:04}"),
                DeviceCredentials {
                    primary_key: Some(DEVICE_KEY_2.to_owned()),
                    secondary_key: Some(DEVICE_KEY_2.to_owned()),
                },
            )
        })
        .collect();
    devices.insert(
        DEVICE.to_owned(),
        DeviceCredentials {
            primary_key: Some(DEVICE_KEY.to_owned()),
            secondary_key: Some(DEVICE_KEY_2.to_owned()),
        },
    );
    Keys {
        devices,
        policies: vec![Policy {
            key_name: "iothubowner".to_owned(),
            primary_key: OWNER_KEY.to_owned(),
            secondary_key: OWNER_KEY_2.to_owned(),
            rights: Rights::all(),
        }],
    }
}

fn bench_sas(c: &mut Criterion) {
    let keys = keys();
    let auth = Authenticator::new(vec![HOST.to_owned()]);
    // Python/Node device token: `sr={host}%2Fdevices%2F{id}&sig=..&se=..`, no skn.
    let device_token =
        generate_token(&format!("{HOST}/devices/{DEVICE}"), DEVICE_KEY, None, SE).unwrap();
    // Same shape, signed with the secondary key: the primary's HMAC is computed first.
    let secondary_token =
        generate_token(&format!("{HOST}/devices/{DEVICE}"), DEVICE_KEY_2, None, SE).unwrap();
    // Service/policy token: `sr={host}&sig=..&se=..&skn=iothubowner`.
    let policy_token = generate_token(HOST, OWNER_KEY, Some("iothubowner"), SE).unwrap();
    assert_eq!(
        auth.authenticate(&device_token, NOW, &keys).unwrap(),
        Principal::Device {
            device_id: DEVICE.to_owned()
        }
    );
    assert!(auth.authenticate(&secondary_token, NOW, &keys).is_ok());
    assert!(matches!(
        auth.authenticate(&policy_token, NOW, &keys).unwrap(),
        Principal::Policy { .. }
    ));

    let mut group = c.benchmark_group("sas");
    group.throughput(Throughput::Elements(1));
    group.bench_function("parse/device_token", |b| {
        b.iter(|| SasToken::parse(black_box(&device_token)).unwrap())
    });
    group.bench_function("parse/policy_token", |b| {
        b.iter(|| SasToken::parse(black_box(&policy_token)).unwrap())
    });
    group.bench_function("authenticate/device_primary_key", |b| {
        b.iter(|| {
            auth.authenticate(black_box(&device_token), NOW, &keys)
                .unwrap()
        })
    });
    group.bench_function("authenticate/device_secondary_key", |b| {
        b.iter(|| {
            auth.authenticate(black_box(&secondary_token), NOW, &keys)
                .unwrap()
        })
    });
    group.bench_function("authenticate/policy_skn", |b| {
        b.iter(|| {
            auth.authenticate(black_box(&policy_token), NOW, &keys)
                .unwrap()
        })
    });
    group.bench_function("generate/device_token", |b| {
        b.iter(|| {
            generate_token(
                black_box("bench-hub.azure-devices.net/devices/sensor-0042"),
                DEVICE_KEY,
                None,
                SE,
            )
            .unwrap()
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20);
    targets = bench_sas
}
criterion_main!(benches);
