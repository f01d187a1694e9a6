//! The registry API as the Python and Node service SDKs drive it (traces
//! g-py-registry, g-node-registry), with IoT Hub's If-Match rules.

use axum::body::Body;
use axum::http::{Method, StatusCode};
use base64::Engine as _;
use serde_json::json;

use crate::support::*;

fn assert_generated_key(key: &serde_json::Value) {
    let key = key.as_str().unwrap_or_else(|| panic!("no key: {key}"));
    let raw = base64::engine::general_purpose::STANDARD
        .decode(key)
        .unwrap();
    assert_eq!(raw.len(), 32, "{key}");
}

#[tokio::test]
async fn python_create_get_delete_from_the_trace() {
    let t = TestHub::start().await;
    let body = r#"{"deviceId": "harness-py-a6b98328", "status": "enabled", "authentication": {"symmetricKey": {}, "type": "sas"}, "capabilities": {"iotEdge": false}}"#;
    let mut put = req(
        Method::PUT,
        "/devices/harness-py-a6b98328?api-version=2021-04-12",
        Some(&policy_token("iothubowner")),
        body,
    );
    put.headers_mut().insert(
        "content-type",
        "application/json; charset=utf-8".parse().unwrap(),
    );
    let r = t.call(put).await;
    // Exactly 200: msrest raises on 201.
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.header("content-type"), "application/json; charset=utf-8");
    let v = r.json();
    assert_eq!(
        r.header("etag"),
        format!("\"{}\"", v["etag"].as_str().unwrap())
    );
    assert_eq!(v["etag"], "MQ==");
    assert_eq!(v["deviceId"], "harness-py-a6b98328");
    assert_eq!(v["status"], "enabled");
    assert_eq!(v["statusReason"], serde_json::Value::Null);
    assert_eq!(v["connectionState"], "Disconnected");
    assert_eq!(v["connectionStateUpdatedTime"], "0001-01-01T00:00:00Z");
    assert_eq!(v["lastActivityTime"], "0001-01-01T00:00:00Z");
    assert_eq!(v["cloudToDeviceMessageCount"], 0);
    assert_eq!(v["capabilities"], json!({"iotEdge": false}));
    assert_eq!(v["authentication"]["type"], "sas");
    assert_generated_key(&v["authentication"]["symmetricKey"]["primaryKey"]);
    assert_generated_key(&v["authentication"]["symmetricKey"]["secondaryKey"]);
    assert_eq!(
        v["authentication"]["x509Thumbprint"],
        json!({"primaryThumbprint": null, "secondaryThumbprint": null})
    );
    assert!(v["generationId"].as_str().is_some_and(|g| !g.is_empty()));
    assert!(v.get("c2dLimits").is_none(), "omitted when unset: {v}");

    let got = t
        .call(req(
            Method::GET,
            "/devices/harness-py-a6b98328?api-version=2021-04-12",
            Some(&policy_token("iothubowner")),
            Body::empty(),
        ))
        .await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.json(), v);

    let mut delete = req(
        Method::DELETE,
        "/devices/harness-py-a6b98328?api-version=2021-04-12",
        Some(&policy_token("iothubowner")),
        Body::empty(),
    );
    delete
        .headers_mut()
        .insert("if-match", "\"*\"".parse().unwrap());
    let r = t.call(delete).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    t.owner(Method::GET, "/devices/harness-py-a6b98328", Body::empty())
        .await
        .assert_error(404, 404001, "DeviceNotFound");
    t.stop().await;
}

#[tokio::test]
async fn node_create_with_empty_keys_from_the_trace() {
    let t = TestHub::start().await;
    let body = r#"{"deviceId":"harness-node-ef512772","status":"enabled","authentication":{"type":"sas","symmetricKey":{"primaryKey":"","secondaryKey":""}}}"#;
    let r = t
        .call(req(
            Method::PUT,
            "/devices/harness-node-ef512772?api-version=2021-04-12",
            Some(&node_policy_token("iothubowner")),
            body,
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    // Node parses the body only when the content type says JSON.
    assert!(r.header("content-type").contains("application/json"));
    let v = r.json();
    assert_generated_key(&v["authentication"]["symmetricKey"]["primaryKey"]);
    assert_ne!(
        v["authentication"]["symmetricKey"]["primaryKey"],
        v["authentication"]["symmetricKey"]["secondaryKey"]
    );
    // The generated key works as the device's key.
    let key = v["authentication"]["symmetricKey"]["primaryKey"]
        .as_str()
        .unwrap()
        .to_owned();
    let r = t
        .call(req(
            Method::GET,
            "/devices/harness-node-ef512772/messages/devicebound",
            Some(&device_token("harness-node-ef512772", &key)),
            Body::empty(),
        ))
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    t.stop().await;
}

#[tokio::test]
async fn put_follows_iothub_if_match_rules() {
    let t = TestHub::start().await;
    let put = |if_match: Option<&str>, body: serde_json::Value| {
        let mut r = req(
            Method::PUT,
            "/devices/dev1",
            Some(&policy_token("registryReadWrite")),
            body.to_string(),
        );
        if let Some(v) = if_match {
            r.headers_mut().insert("if-match", v.parse().unwrap());
        }
        t.call(r)
    };
    // If-Match with an etag on an absent device.
    put(Some("\"MQ==\""), json!({}))
        .await
        .assert_error(404, 404001, "DeviceNotFound");
    let created = put(None, json!({"deviceId": "dev1"})).await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.text());
    assert_eq!(created.json()["etag"], "MQ==");
    put(None, json!({}))
        .await
        .assert_error(409, 409001, "DeviceAlreadyExists");
    let forced = put(Some("*"), json!({"statusReason": "forced"})).await;
    assert_eq!(forced.status, StatusCode::OK, "{}", forced.text());
    let etag = forced.json()["etag"].as_str().unwrap().to_owned();
    assert_ne!(etag, "MQ==");
    // Keys survive an update that leaves them empty.
    assert_eq!(
        forced.json()["authentication"]["symmetricKey"],
        created.json()["authentication"]["symmetricKey"]
    );
    put(Some("\"MQ==\""), json!({}))
        .await
        .assert_error(412, 412001, "PreconditionFailed");
    let current = format!("\"{etag}\"");
    let updated = put(
        Some(&current),
        json!({"status": "disabled", "c2dLimits": {"maxQueueDepth": 7, "defaultTtlSeconds": 60}}),
    )
    .await;
    assert_eq!(updated.status, StatusCode::OK, "{}", updated.text());
    let v = updated.json();
    assert_eq!(v["status"], "disabled");
    assert_eq!(
        v["c2dLimits"],
        json!({"maxQueueDepth": 7, "defaultTtlSeconds": 60})
    );
    put(None, json!({"deviceId": "other"}))
        .await
        .assert_error(400, 400004, "ArgumentInvalid");
    t.stop().await;
}

#[tokio::test]
async fn malformed_put_bodies_are_argument_invalid() {
    let t = TestHub::start().await;
    for body in [
        "",
        "{",
        r#"{"status": "asleep"}"#,
        r#"{"authentication": {"type": "sas", "symmetricKey": {"primaryKey": "not base64!"}}}"#,
        r#"{"c2dLimits": {"maxDeliveryCount": 500}}"#,
        r#"{"authentication": {"type": "selfSigned"}}"#,
    ] {
        t.owner(Method::PUT, "/devices/dev1", body)
            .await
            .assert_error(400, 400004, "ArgumentInvalid");
    }
    t.stop().await;
}

#[tokio::test]
async fn delete_checks_etags_and_takes_the_queue_along() {
    let t = TestHub::start().await;
    t.create_device("dev1").await;
    t.send("dev1", "x", &[]).await;
    let mut stale = req(
        Method::DELETE,
        "/devices/dev1",
        Some(&policy_token("iothubowner")),
        Body::empty(),
    );
    stale
        .headers_mut()
        .insert("if-match", "\"Mg==\"".parse().unwrap());
    t.call(stale)
        .await
        .assert_error(412, 412001, "PreconditionFailed");

    let r = t
        .owner(Method::DELETE, "/devices/dev1", Body::empty())
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    t.owner(Method::DELETE, "/devices/dev1", Body::empty())
        .await
        .assert_error(404, 404001, "DeviceNotFound");
    // Re-created, it starts with an empty queue.
    t.create_device("dev1").await;
    assert_eq!(t.receive("dev1").await.status, StatusCode::NO_CONTENT);
    t.stop().await;
}

#[tokio::test]
async fn list_and_statistics() {
    let t = TestHub::start().await;
    for id in ["c", "a", "b"] {
        t.create_device(id).await;
    }
    t.create_device_json("d", json!({"status": "disabled"}))
        .await;
    t.send("a", "x", &[]).await;

    let all = t
        .owner(
            Method::GET,
            "/devices?api-version=2021-04-12",
            Body::empty(),
        )
        .await;
    assert_eq!(all.status, StatusCode::OK);
    let ids: Vec<String> = all
        .json()
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["deviceId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids, ["a", "b", "c", "d"]);
    assert_eq!(all.json()[0]["cloudToDeviceMessageCount"], 1);

    // The Node service SDK's Registry.list() asks with a trailing slash.
    let node = t
        .owner(
            Method::GET,
            "/devices/?api-version=2021-04-12",
            Body::empty(),
        )
        .await;
    assert_eq!(node.status, StatusCode::OK, "{}", node.text());
    assert_eq!(node.json(), all.json());

    let two = t.owner(Method::GET, "/devices?top=2", Body::empty()).await;
    assert_eq!(two.json().as_array().unwrap().len(), 2);
    let clamped = t.owner(Method::GET, "/devices?top=0", Body::empty()).await;
    assert_eq!(clamped.json().as_array().unwrap().len(), 4);

    let stats = t
        .call(req(
            Method::GET,
            "/statistics/devices",
            Some(&policy_token("registryRead")),
            Body::empty(),
        ))
        .await;
    assert_eq!(
        stats.json(),
        json!({"totalDeviceCount": 4, "enabledDeviceCount": 3, "disabledDeviceCount": 1})
    );
    for policy in ["service", "registryRead"] {
        let service = t
            .call(req(
                Method::GET,
                "/statistics/service",
                Some(&policy_token(policy)),
                Body::empty(),
            ))
            .await;
        assert_eq!(service.status, StatusCode::OK, "{policy}");
        assert_eq!(service.json(), json!({"connectedDeviceCount": 0}));
    }
    t.stop().await;
}

#[tokio::test]
async fn deleting_a_device_deletes_its_queue_and_recreating_it_gives_a_new_generation() {
    let t = TestHub::start().await;
    let body = json!({"deviceId": "phoenix", "authentication": {"type": "sas"}});
    let first = t.create_device_json("phoenix", body.clone()).await;
    t.send("phoenix", "queued before delete", &[]).await;
    let r = t
        .owner(Method::DELETE, "/devices/phoenix", Body::empty())
        .await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());

    let second = t.create_device_json("phoenix", body).await;
    assert_ne!(first["generationId"], second["generationId"]);
    assert_eq!(second["cloudToDeviceMessageCount"], 0);
    assert_eq!(
        second["etag"], "MQ==",
        "a new device starts its etags again"
    );
    let got = t
        .owner(
            Method::GET,
            "/devices/phoenix/messages/deviceBound",
            Body::empty(),
        )
        .await;
    assert_eq!(got.status, StatusCode::NO_CONTENT, "the old queue is gone");
}
