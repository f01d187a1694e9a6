//! The device API as the SDKs drive it (traces e-node-http, e2-node-http-settle):
//! receive headers, complete, the three reject spellings, abandon and
//! redelivery, lost locks, long polls.

use axum::body::Body;
use axum::http::{Method, StatusCode};

use crate::support::*;

#[tokio::test]
async fn receive_answers_204_when_empty_and_200_with_every_header() {
    let t = TestHub::start().await;
    t.create_device("harness-dev-1").await;
    assert_eq!(
        t.receive("harness-dev-1").await.status,
        StatusCode::NO_CONTENT
    );

    let receipt = t
        .send(
            "harness-dev-1",
            "hello over http",
            &[
                ("iothub-messageid", "harness-e-510d6fe5340f"),
                ("iothub-correlationid", "corr-1"),
                ("iothub-userid", "user-1"),
                ("iothub-ack", "full"),
                ("iothub-contenttype", "text/plain"),
                ("iothub-contentencoding", "utf-8"),
                ("iothub-app-color", "blue"),
            ],
        )
        .await;
    let r = t.receive("harness-dev-1").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.text(), "hello over http");
    let lock = r.lock_token();
    assert_eq!(lock.len(), 36, "hyphenated GUID: {lock}");
    assert_eq!(r.header("iothub-messageid"), "harness-e-510d6fe5340f");
    assert_eq!(r.header("iothub-correlationid"), "corr-1");
    assert_eq!(r.header("iothub-userid"), "user-1");
    assert_eq!(
        r.header("iothub-to"),
        "/devices/harness-dev-1/messages/devicebound"
    );
    assert_eq!(
        r.header("iothub-sequencenumber"),
        receipt["sequenceNumber"].to_string()
    );
    assert_eq!(r.header("iothub-deliverycount"), "0");
    assert_eq!(r.header("iothub-ack"), "full");
    assert_eq!(r.header("iothub-enqueuedtime"), receipt["enqueuedTimeUtc"]);
    assert_eq!(r.header("iothub-expiry"), receipt["expiryTimeUtc"]);
    assert_eq!(r.header("contenttype"), "text/plain");
    assert_eq!(r.header("iothub-contenttype"), "text/plain");
    assert_eq!(r.header("content-type"), "text/plain");
    assert_eq!(r.header("contentencoding"), "utf-8");
    assert_eq!(r.header("iothub-contentencoding"), "utf-8");
    assert_eq!(r.header("iothub-app-color"), "blue");
    // The message is locked: nothing else to receive.
    assert_eq!(
        t.receive("harness-dev-1").await.status,
        StatusCode::NO_CONTENT
    );

    // Node: DELETE with an unquoted If-Match and the lock in the path.
    let mut complete = req(
        Method::DELETE,
        &format!("/devices/harness-dev-1/messages/devicebound/{lock}?api-version=2021-04-12"),
        Some(&device_token("harness-dev-1", DEVICE_KEY)),
        Body::empty(),
    );
    complete
        .headers_mut()
        .insert("if-match", lock.parse().unwrap());
    let r = t.call(complete).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());
    assert!(r.body.is_empty());

    let records = t.feedback_records(1).await;
    assert_eq!(records[0]["statusCode"], "Success");
    assert_eq!(records[0]["originalMessageId"], "harness-e-510d6fe5340f");
    t.stop().await;
}

#[tokio::test]
async fn message_without_content_type_is_octet_stream_and_omits_absent_headers() {
    let t = TestHub::start().await;
    t.create_device("dev1").await;
    t.send("dev1", "x", &[]).await;
    let r = t.receive("dev1").await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.header("content-type"), "application/octet-stream");
    assert_eq!(r.header("iothub-ack"), "none");
    for absent in [
        "iothub-messageid",
        "iothub-correlationid",
        "iothub-userid",
        "contenttype",
        "iothub-contenttype",
        "contentencoding",
    ] {
        assert!(!r.headers.contains_key(absent), "{absent} sent");
    }
    t.stop().await;
}

#[tokio::test]
async fn reject_in_the_node_cli_and_java_spellings() {
    let t = TestHub::start().await;
    t.create_device("dev1").await;
    let queries = [
        "api-version=2021-04-12&reject",
        "api-version=2019-10-01&reject=",
        "api-version=2020-09-30&%3Freject=true",
    ];
    for (i, query) in queries.iter().enumerate() {
        t.send(
            "dev1",
            "B: reject",
            &[
                ("iothub-messageid", &format!("m{i}")),
                ("iothub-ack", "full"),
            ],
        )
        .await;
        let lock = t.receive("dev1").await.lock_token();
        let r = t
            .call(req(
                Method::DELETE,
                &format!("/devices/dev1/messages/deviceBound/{lock}?{query}"),
                Some(&device_token("dev1", DEVICE_KEY)),
                Body::empty(),
            ))
            .await;
        assert_eq!(r.status, StatusCode::NO_CONTENT, "{query}: {}", r.text());
    }
    assert_eq!(t.receive("dev1").await.status, StatusCode::NO_CONTENT);
    let records = t.feedback_records(3).await;
    let mut ids: Vec<&str> = records
        .iter()
        .map(|r| {
            assert_eq!(r["statusCode"], "Rejected", "{r}");
            r["originalMessageId"].as_str().unwrap()
        })
        .collect();
    ids.sort_unstable();
    assert_eq!(ids, ["m0", "m1", "m2"]);
    t.stop().await;
}

#[tokio::test]
async fn abandon_redelivers_with_delivery_count_one_and_old_locks_are_lost() {
    let t = TestHub::start().await;
    t.create_device("harness-dev-1").await;
    t.send("harness-dev-1", "A: abandon once then complete", &[])
        .await;
    let first = t.receive("harness-dev-1").await;
    let lock = first.lock_token();

    // Java sends a one-byte body; .NET sends its token in a header named IfMatch.
    let mut abandon = req(
        Method::POST,
        &format!(
            "/devices/harness-dev-1/messages/devicebound/{lock}/abandon?api-version=2021-04-12"
        ),
        Some(&device_token("harness-dev-1", DEVICE_KEY)),
        "x",
    );
    abandon
        .headers_mut()
        .insert("ifmatch", format!("\"{lock}\"").parse().unwrap());
    let r = t.call(abandon).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text());

    let again = t.receive("harness-dev-1").await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.header("iothub-deliverycount"), "1");
    assert_eq!(
        again.header("iothub-sequencenumber"),
        first.header("iothub-sequencenumber")
    );
    assert_ne!(again.lock_token(), lock, "a redelivery has a new lock");

    // The abandoned lock names nothing any more.
    let stale = t
        .call(req(
            Method::DELETE,
            &format!("/devices/harness-dev-1/messages/devicebound/{lock}"),
            Some(&device_token("harness-dev-1", DEVICE_KEY)),
            Body::empty(),
        ))
        .await;
    stale.assert_error(412, 412002, "DeviceMessageLockLost");

    let done = t
        .call(req(
            Method::DELETE,
            &format!(
                "/devices/harness-dev-1/messages/devicebound/{}",
                again.lock_token()
            ),
            Some(&device_token("harness-dev-1", DEVICE_KEY)),
            Body::empty(),
        ))
        .await;
    assert_eq!(done.status, StatusCode::NO_CONTENT);
    // Completing twice: the lock is gone.
    let twice = t
        .call(req(
            Method::DELETE,
            &format!(
                "/devices/harness-dev-1/messages/devicebound/{}",
                again.lock_token()
            ),
            Some(&device_token("harness-dev-1", DEVICE_KEY)),
            Body::empty(),
        ))
        .await;
    twice.assert_error(412, 412002, "DeviceMessageLockLost");
    t.stop().await;
}

#[tokio::test]
async fn malformed_and_unknown_lock_tokens_are_lost_locks() {
    let t = TestHub::start().await;
    t.create_device("dev1").await;
    for (method, path) in [
        (
            Method::DELETE,
            "/devices/dev1/messages/deviceBound/not-a-guid",
        ),
        (
            Method::POST,
            "/devices/dev1/messages/deviceBound/not-a-guid/abandon",
        ),
        (
            Method::DELETE,
            "/devices/dev1/messages/deviceBound/35567cd3-abf5-4b5e-aa09-9b29dad7363f",
        ),
        (
            Method::POST,
            "/devices/dev1/messages/deviceBound/35567cd3-abf5-4b5e-aa09-9b29dad7363f/abandon",
        ),
    ] {
        let r = t
            .call(req(
                method.clone(),
                path,
                Some(&device_token("dev1", DEVICE_KEY)),
                Body::empty(),
            ))
            .await;
        r.assert_error(412, 412002, "DeviceMessageLockLost");
    }
    t.stop().await;
}

#[tokio::test]
async fn long_poll_receive_wakes_when_a_message_arrives() {
    let t = TestHub::start().await;
    t.create_device("dev1").await;
    let poll = t.call(req(
        Method::GET,
        "/devices/dev1/messages/deviceBound?wait=30",
        Some(&device_token("dev1", DEVICE_KEY)),
        Body::empty(),
    ));
    let send = async {
        // The send may land before or after the poll starts waiting; both
        // must end in a 200.
        t.send("dev1", "late", &[]).await;
    };
    let (r, ()) = tokio::time::timeout(PATIENCE, async { tokio::join!(poll, send) })
        .await
        .expect("the long poll did not return");
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(r.text(), "late");

    let bad = t
        .call(req(
            Method::GET,
            "/devices/dev1/messages/deviceBound?wait=later",
            Some(&device_token("dev1", DEVICE_KEY)),
            Body::empty(),
        ))
        .await;
    bad.assert_error(400, 400004, "ArgumentInvalid");
    t.stop().await;
}

#[tokio::test]
async fn receive_for_an_unknown_device_via_policy_is_device_not_found() {
    let t = TestHub::start().await;
    let r = t
        .call(req(
            Method::GET,
            "/devices/ghost/messages/deviceBound",
            Some(&policy_token("device")),
            Body::empty(),
        ))
        .await;
    r.assert_error(404, 404001, "DeviceNotFound");
    t.stop().await;
}

#[tokio::test]
async fn percent_encoded_device_ids_are_decoded() {
    let t = TestHub::start().await;
    t.create_device("room#1:a").await;
    let created = t
        .owner(Method::GET, "/devices/room%231%3Aa", Body::empty())
        .await;
    assert_eq!(created.status, StatusCode::OK, "{}", created.text());
    assert_eq!(created.json()["deviceId"], "room#1:a");
    t.send("room#1:a", "hi", &[]).await;
    let r = t.receive("room#1:a").await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text());
    assert_eq!(
        r.header("iothub-to"),
        "/devices/room#1:a/messages/devicebound"
    );

    let invalid = t.owner(Method::GET, "/devices/a%20b", Body::empty()).await;
    invalid.assert_error(400, 400004, "ArgumentInvalid");
    t.stop().await;
}
