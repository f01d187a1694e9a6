//! Who may call what: the SAS shapes of the traces, every way a token is
//! wrong, rights per API, disabled devices, X.509 self-signed devices.

use axum::body::Body;
use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::support::*;

async fn get(t: &TestHub, uri: &str, token: &str) -> Reply {
    t.call(req(Method::GET, uri, Some(token), Body::empty()))
        .await
}

#[tokio::test]
async fn token_shapes_the_sdks_send_are_accepted() {
    let t = TestHub::start().await;
    t.create_device("harness-dev-1").await;
    let receive = "/devices/harness-dev-1/messages/devicebound?api-version=2021-04-12";
    // Node/Python device key token, signed with either key.
    for key in [DEVICE_KEY, DEVICE_KEY_2] {
        let r = get(&t, receive, &device_token("harness-dev-1", key)).await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    }
    // .NET: DeviceConnect policy token scoped to the whole hub.
    let r = get(&t, receive, &policy_token("device")).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    // Node with a policy connection string: scoped to the device.
    let r = get(&t, receive, &policy_device_token("device", "harness-dev-1")).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    // Python (skn last) and Node (skn before se) service tokens.
    for token in [
        policy_token("iothubowner"),
        node_policy_token("iothubowner"),
    ] {
        let r = get(&t, "/devices/harness-dev-1?api-version=2021-04-12", &token).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
    t.stop().await;
}

#[tokio::test]
async fn bad_tokens_are_unauthorized() {
    let t = TestHub::start().await;
    t.create_device("dev1").await;
    let receive = "/devices/dev1/messages/deviceBound";
    let cases = [
        ("wrong scope", device_key_hub_token(DEVICE_KEY)),
        (
            "expired",
            device_token_until("dev1", DEVICE_KEY, now_unix() - 3600),
        ),
        ("wrong key", device_token("dev1", WRONG_KEY)),
        ("unknown device", device_token("ghost", DEVICE_KEY)),
        ("not SAS", "Bearer abc".to_owned()),
        (
            "malformed",
            "SharedAccessSignature sr=localhost&se=1".to_owned(),
        ),
        (
            "unknown policy",
            policy_token("iothubowner").replace("skn=iothubowner", "skn=nobody"),
        ),
        (
            "other hub",
            policy_device_token("device", "dev1").replace("localhost", "elsewhere"),
        ),
    ];
    for (what, token) in cases {
        let r = get(&t, receive, &token).await;
        r.assert_error(401, 401002, "IotHubUnauthorizedAccess");
        assert!(!r.error_text().is_empty(), "{what}");
    }
    let missing = t.call(req(Method::GET, receive, None, Body::empty())).await;
    missing.assert_error(401, 401002, "IotHubUnauthorizedAccess");
    assert!(missing.error_text().contains("Authorization"));
    t.stop().await;
}

#[tokio::test]
async fn a_device_token_acts_only_for_its_own_device_and_only_as_a_device() {
    let t = TestHub::start().await;
    t.create_device("dev1").await;
    t.create_device("dev2").await;
    let token = device_token("dev1", DEVICE_KEY);
    let r = get(&t, "/devices/dev2/messages/deviceBound", &token).await;
    r.assert_error(401, 401002, "IotHubUnauthorizedAccess");
    assert!(r.error_text().contains("dev2"), "{}", r.error_text());
    // Settling another device's message is refused before the lock is looked at.
    let r = t
        .call(req(
            Method::DELETE,
            "/devices/dev2/messages/deviceBound/35567cd3-abf5-4b5e-aa09-9b29dad7363f",
            Some(&token),
            Body::empty(),
        ))
        .await;
    r.assert_error(401, 401002, "IotHubUnauthorizedAccess");
    // A device policy token scoped to dev1 cannot act for dev2 either.
    let r = get(
        &t,
        "/devices/dev2/messages/deviceBound",
        &policy_device_token("device", "dev1"),
    )
    .await;
    r.assert_error(401, 401002, "IotHubUnauthorizedAccess");
    // Device keys grant no service or registry rights.
    for uri in [
        "/devices/dev1",
        "/courier/hub",
        "/messages/serviceBound/feedback",
    ] {
        get(&t, uri, &token)
            .await
            .assert_error(401, 401002, "IotHubUnauthorizedAccess");
    }
    let send = t
        .call(req(
            Method::POST,
            "/devices/dev1/messages/deviceBound",
            Some(&token),
            "x",
        ))
        .await;
    send.assert_error(401, 401002, "IotHubUnauthorizedAccess");
    t.stop().await;
}

#[tokio::test]
async fn policies_need_the_right_for_each_api() {
    let t = TestHub::start().await;
    t.create_device("dev1").await;
    // registryRead cannot write.
    let r = t
        .call(req(
            Method::PUT,
            "/devices/dev2",
            Some(&policy_token("registryRead")),
            "{}",
        ))
        .await;
    r.assert_error(401, 401002, "IotHubUnauthorizedAccess");
    assert!(
        r.error_text().contains("RegistryWrite"),
        "{}",
        r.error_text()
    );
    let r = t
        .call(req(
            Method::DELETE,
            "/devices/dev1",
            Some(&policy_token("registryRead")),
            Body::empty(),
        ))
        .await;
    r.assert_error(401, 401002, "IotHubUnauthorizedAccess");
    // service cannot read the registry, but registryRead can.
    get(&t, "/devices/dev1", &policy_token("service"))
        .await
        .assert_error(401, 401002, "IotHubUnauthorizedAccess");
    get(&t, "/devices", &policy_token("service"))
        .await
        .assert_error(401, 401002, "IotHubUnauthorizedAccess");
    assert_eq!(
        get(&t, "/devices/dev1", &policy_token("registryRead"))
            .await
            .status,
        StatusCode::OK
    );
    // registryReadWrite cannot send, receive feedback or act as a device.
    let owner_of_registry = policy_token("registryReadWrite");
    let send = t
        .call(req(
            Method::POST,
            "/devices/dev1/messages/deviceBound",
            Some(&owner_of_registry),
            "x",
        ))
        .await;
    send.assert_error(401, 401002, "IotHubUnauthorizedAccess");
    get(&t, "/messages/serviceBound/feedback", &owner_of_registry)
        .await
        .assert_error(401, 401002, "IotHubUnauthorizedAccess");
    get(&t, "/devices/dev1/messages/deviceBound", &owner_of_registry)
        .await
        .assert_error(401, 401002, "IotHubUnauthorizedAccess");
    // service cannot act as a device.
    get(
        &t,
        "/devices/dev1/messages/deviceBound",
        &policy_token("service"),
    )
    .await
    .assert_error(401, 401002, "IotHubUnauthorizedAccess");
    t.stop().await;
}

#[tokio::test]
async fn a_disabled_device_is_refused_with_its_own_token() {
    let t = TestHub::start().await;
    t.create_device_json(
        "off",
        json!({"status": "disabled", "authentication": {"symmetricKey": {"primaryKey": DEVICE_KEY, "secondaryKey": DEVICE_KEY_2}}}),
    )
    .await;
    let r = get(
        &t,
        "/devices/off/messages/deviceBound",
        &device_token("off", DEVICE_KEY),
    )
    .await;
    r.assert_error(401, 401002, "IotHubUnauthorizedAccess");
    assert!(r.error_text().contains("disabled"), "{}", r.error_text());
    t.stop().await;
}

#[tokio::test]
async fn self_signed_devices_authenticate_by_client_certificate() {
    let t = TestHub::start().await;
    let cert: &[u8] = b"stand-in DER bytes: the thumbprint is a hash of whatever the leaf is";
    let other: &[u8] = b"another certificate";
    let (sha1, sha256) = courier_auth::thumbprints(cert);
    t.create_device_json(
        "x509-dev",
        json!({"authentication": {"type": "selfSigned", "x509Thumbprint": {"primaryThumbprint": sha1, "secondaryThumbprint": sha256}}}),
    )
    .await;
    let receive = "/devices/x509-dev/messages/deviceBound";
    let r = t
        .call(req_with_cert(Method::GET, receive, Some(cert)))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());

    t.call(req_with_cert(Method::GET, receive, Some(other)))
        .await
        .assert_error(401, 401002, "IotHubUnauthorizedAccess");
    t.call(req_with_cert(Method::GET, receive, None))
        .await
        .assert_error(401, 401002, "IotHubUnauthorizedAccess");
    // A certificate proves a device, never a policy.
    t.call(req_with_cert(Method::GET, "/devices/x509-dev", Some(cert)))
        .await
        .assert_error(401, 401002, "IotHubUnauthorizedAccess");
    // A certificate of one device does not open another's queue.
    t.create_device("sas-dev").await;
    t.call(req_with_cert(
        Method::GET,
        "/devices/sas-dev/messages/deviceBound",
        Some(cert),
    ))
    .await
    .assert_error(401, 401002, "IotHubUnauthorizedAccess");

    t.create_device_json(
        "ca-dev",
        json!({"authentication": {"type": "certificateAuthority"}}),
    )
    .await;
    let r = t
        .call(req_with_cert(
            Method::GET,
            "/devices/ca-dev/messages/deviceBound",
            Some(cert),
        ))
        .await;
    r.assert_error(401, 401002, "IotHubUnauthorizedAccess");
    assert!(
        r.error_text().contains("CA-signed") && r.error_text().contains("not support"),
        "{}",
        r.error_text()
    );
    t.stop().await;
}
