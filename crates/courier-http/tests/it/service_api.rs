//! The service API: send and its refusals, purge, hub info, feedback.

use axum::body::Body;
use axum::http::{Method, StatusCode};
use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn send_answers_the_receipt_once_queued() {
    let t = TestHub::start().await;
    t.create_device("dev1").await;
    let r = t
        .call({
            let mut r = req(
                Method::POST,
                "/devices/dev1/messages/deviceBound?api-version=2021-04-12",
                Some(&node_policy_token("service")),
                "payload",
            );
            r.headers_mut()
                .insert("iothub-messageid", "m-1".parse().unwrap());
            r.headers_mut().insert("iothub-ttl", "120".parse().unwrap());
            r
        })
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.header("content-type"), "application/json; charset=utf-8");
    let v = r.json();
    assert_eq!(v["deviceId"], "dev1");
    assert_eq!(v["messageId"], "m-1");
    assert_eq!(v["sequenceNumber"].as_u64(), Some(1));
    let enqueued = v["enqueuedTimeUtc"].as_str().unwrap();
    let expiry = v["expiryTimeUtc"].as_str().unwrap();
    // RFC 3339 UTC with milliseconds.
    for t in [enqueued, expiry] {
        assert_eq!(t.len(), "2026-11-23T06:06:56.889Z".len(), "{t}");
        assert!(t.ends_with('Z') && t.as_bytes()[19] == b'.', "{t}");
    }
    assert!(expiry > enqueued);
    assert_eq!(
        v.as_object().unwrap().len(),
        5,
        "exactly the documented fields: {v}"
    );

    let second = t.send("dev1", "again", &[]).await;
    assert_eq!(second["messageId"], serde_json::Value::Null);
    assert_eq!(second["sequenceNumber"].as_u64(), Some(2));
    t.stop().await;
}

#[tokio::test]
async fn send_refusals_carry_iothub_codes() {
    let t = TestHub::start().await;
    t.create_device_json(
        "small",
        json!({"c2dLimits": {"maxQueueDepth": 2, "maxMessageSizeBytes": 100}}),
    )
    .await;
    let send = |uri: &str, body: Vec<u8>, headers: &[(&'static str, &str)]| {
        let mut r = req(
            Method::POST,
            uri,
            Some(&policy_token("service")),
            Body::from(body),
        );
        for (k, v) in headers {
            r.headers_mut().insert(*k, v.parse().unwrap());
        }
        t.call(r)
    };
    let uri = "/devices/small/messages/deviceBound";

    send(uri, vec![b'x'; 101], &[])
        .await
        .assert_error(413, 413001, "MessageTooLarge");
    // Far beyond the body limit (1 MiB here): still an IoT Hub error.
    send(uri, vec![b'x'; 5 * 1024 * 1024], &[])
        .await
        .assert_error(413, 413001, "MessageTooLarge");
    send(uri, b"x".to_vec(), &[("iothub-ack", "sometimes")])
        .await
        .assert_error(400, 400004, "ArgumentInvalid");
    send(
        uri,
        b"x".to_vec(),
        &[("iothub-expiry", "2001-01-01T00:00:00Z")],
    )
    .await
    .assert_error(403, 403009, "InvalidMessageExpiryTime");

    for _ in 0..2 {
        let r = send(uri, b"x".to_vec(), &[]).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    }
    send(uri, b"x".to_vec(), &[]).await.assert_error(
        403,
        403004,
        "DeviceMaximumQueueDepthExceeded",
    );

    send("/devices/ghost/messages/deviceBound", b"x".to_vec(), &[])
        .await
        .assert_error(404, 404001, "DeviceNotFound");
    t.stop().await;
}

#[tokio::test]
async fn send_to_a_disabled_device_is_device_not_found_saying_disabled() {
    let t = TestHub::start().await;
    t.create_device_json("off", json!({"status": "disabled"}))
        .await;
    let r = t
        .call(req(
            Method::POST,
            "/devices/off/messages/deviceBound",
            Some(&policy_token("service")),
            "x",
        ))
        .await;
    r.assert_error(404, 404001, "DeviceNotFound");
    assert!(r.error_text().contains("disabled"), "{}", r.error_text());
    t.stop().await;
}

#[tokio::test]
async fn purge_reports_how_many_messages_went() {
    let t = TestHub::start().await;
    t.create_device("dev1").await;
    for i in 0..3 {
        t.send("dev1", &format!("m{i}"), &[]).await;
    }
    let r = t
        .call(req(
            Method::DELETE,
            "/devices/dev1/commands?api-version=2021-04-12",
            Some(&policy_token("service")),
            Body::empty(),
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"totalMessagesPurged": 3, "deviceId": "dev1", "moduleId": null})
    );
    assert_eq!(t.receive("dev1").await.status, StatusCode::NO_CONTENT);

    let ghost = t
        .call(req(
            Method::DELETE,
            "/devices/ghost/commands",
            Some(&policy_token("service")),
            Body::empty(),
        ))
        .await;
    ghost.assert_error(404, 404001, "DeviceNotFound");
    t.stop().await;
}

#[tokio::test]
async fn feedback_batches_have_iothub_shape_and_settle_by_lock() {
    let t = TestHub::start().await;
    t.create_device("dev1").await;
    assert_eq!(t.receive_feedback(0).await.status, StatusCode::NO_CONTENT);
    t.send(
        "dev1",
        "x",
        &[("iothub-messageid", "m-pos"), ("iothub-ack", "positive")],
    )
    .await;
    let lock = t.receive("dev1").await.lock_token();
    let done = t
        .call(req(
            Method::DELETE,
            &format!("/devices/dev1/messages/deviceBound/{lock}"),
            Some(&device_token("dev1", DEVICE_KEY)),
            Body::empty(),
        ))
        .await;
    assert_eq!(done.status, StatusCode::NO_CONTENT);

    let r = t.receive_feedback(15).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(
        r.header("content-type"),
        "application/vnd.microsoft.iothub.feedback.json"
    );
    assert_eq!(r.header("iothub-deliverycount"), "0");
    let enqueued = r.header("iothub-enqueuedtime");
    assert!(enqueued.ends_with('Z'), "{enqueued}");
    let records = r.json();
    let record = &records.as_array().unwrap()[0];
    let generation = t
        .owner(Method::GET, "/devices/dev1", Body::empty())
        .await
        .json()["generationId"]
        .clone();
    assert_eq!(record.as_object().unwrap().len(), 6, "{record}");
    // The fields in IoT Hub's order, as the raw body has them.
    let text = r.text();
    let positions: Vec<usize> = [
        "originalMessageId",
        "deviceGenerationId",
        "deviceId",
        "enqueuedTimeUtc",
        "statusCode",
        "description",
    ]
    .iter()
    .map(|k| {
        text.find(&format!("\"{k}\":"))
            .unwrap_or_else(|| panic!("{k} in {text}"))
    })
    .collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{text}");
    assert_eq!(record["originalMessageId"], "m-pos");
    assert_eq!(record["deviceGenerationId"], generation);
    assert_eq!(record["deviceId"], "dev1");
    assert_eq!(record["statusCode"], "Success");
    assert_eq!(record["description"], "Success");

    // Abandon: the same batch comes back, counted.
    let first_lock = r.lock_token();
    let abandon = t
        .call(req(
            Method::POST,
            &format!("/messages/serviceBound/feedback/{first_lock}/abandon"),
            Some(&policy_token("service")),
            Body::empty(),
        ))
        .await;
    assert_eq!(abandon.status, StatusCode::NO_CONTENT, "{}", abandon.text());
    let again = t.receive_feedback(15).await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.header("iothub-deliverycount"), "1");
    assert_eq!(again.json(), records);

    // Complete, and the lock is spent. The path's bound segment may be lower case.
    let lock = again.lock_token();
    let complete = |lock: String| {
        t.call(req(
            Method::DELETE,
            &format!("/messages/servicebound/feedback/{lock}?api-version=2021-04-12"),
            Some(&policy_token("service")),
            Body::empty(),
        ))
    };
    assert_eq!(complete(lock.clone()).await.status, StatusCode::NO_CONTENT);
    complete(lock)
        .await
        .assert_error(412, 412002, "DeviceMessageLockLost");
    assert_eq!(t.receive_feedback(0).await.status, StatusCode::NO_CONTENT);
    t.stop().await;
}

#[tokio::test]
async fn hub_info_reports_counters_and_limits() {
    let t = TestHub::start().await;
    t.create_device("dev1").await;
    t.send("dev1", "x", &[]).await;
    let r = t
        .call(req(
            Method::GET,
            "/courier/hub",
            Some(&policy_token("service")),
            Body::empty(),
        ))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    let v = r.json();
    assert_eq!(v["hostName"], HOST);
    assert_eq!(v["version"], "0.1.0-test");
    assert_eq!(v["deviceCount"], 1);
    assert_eq!(v["queuedMessages"], 1);
    assert_eq!(v["pendingFeedbackRecords"], 0);
    assert_eq!(
        v["limits"],
        json!({
            "maxQueueDepth": 50, "maxMessageSizeBytes": 65536, "defaultTtlSeconds": 3600,
            "maxTtlSeconds": 172800, "maxDeliveryCount": 10, "lockTimeoutSeconds": 60
        })
    );
    t.stop().await;
}
