//! Routing: the unauthenticated endpoints, the OpenAPI document against the
//! routes that exist, and IoT Hub error bodies for everything unroutable.

use axum::body::Body;
use axum::http::{Method, StatusCode};

use crate::support::*;

/// Every route of docs/http-api.md, as (method, OpenAPI path, a concrete path).
const ROUTES: &[(&str, &str, &str)] = &[
    ("get", "/health", "/health"),
    ("get", "/openapi.json", "/openapi.json"),
    (
        "get",
        "/devices/{id}/messages/deviceBound",
        "/devices/d/messages/deviceBound",
    ),
    (
        "post",
        "/devices/{id}/messages/deviceBound",
        "/devices/d/messages/deviceBound",
    ),
    (
        "delete",
        "/devices/{id}/messages/deviceBound/{lockToken}",
        "/devices/d/messages/deviceBound/35567cd3-abf5-4b5e-aa09-9b29dad7363f",
    ),
    (
        "post",
        "/devices/{id}/messages/deviceBound/{lockToken}/abandon",
        "/devices/d/messages/deviceBound/35567cd3-abf5-4b5e-aa09-9b29dad7363f/abandon",
    ),
    ("delete", "/devices/{id}/commands", "/devices/d/commands"),
    (
        "get",
        "/messages/serviceBound/feedback",
        "/messages/serviceBound/feedback",
    ),
    (
        "delete",
        "/messages/serviceBound/feedback/{lockToken}",
        "/messages/serviceBound/feedback/35567cd3-abf5-4b5e-aa09-9b29dad7363f",
    ),
    (
        "post",
        "/messages/serviceBound/feedback/{lockToken}/abandon",
        "/messages/serviceBound/feedback/35567cd3-abf5-4b5e-aa09-9b29dad7363f/abandon",
    ),
    ("get", "/courier/hub", "/courier/hub"),
    ("put", "/devices/{id}", "/devices/d"),
    ("get", "/devices/{id}", "/devices/d"),
    ("delete", "/devices/{id}", "/devices/d"),
    ("get", "/devices", "/devices"),
    ("get", "/statistics/devices", "/statistics/devices"),
    ("get", "/statistics/service", "/statistics/service"),
];

#[tokio::test]
async fn health_and_openapi_need_no_auth() {
    let t = TestHub::start().await;
    let health = t
        .call(req(Method::GET, "/health", None, Body::empty()))
        .await;
    assert_eq!(health.status, StatusCode::OK);
    assert_eq!(health.text(), "ok");
    let doc = t
        .call(req(Method::GET, "/openapi.json", None, Body::empty()))
        .await;
    assert_eq!(doc.status, StatusCode::OK);
    assert!(doc.header("content-type").starts_with("application/json"));
    let v = doc.json();
    assert!(v["openapi"].as_str().unwrap().starts_with("3.0"));
    t.stop().await;
}

#[tokio::test]
async fn openapi_documents_exactly_the_routes_that_exist() {
    let t = TestHub::start().await;
    let doc = t
        .call(req(Method::GET, "/openapi.json", None, Body::empty()))
        .await
        .json();
    let paths = doc["paths"].as_object().unwrap();
    let mut documented: Vec<(String, String)> = paths
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|k| ["get", "put", "post", "delete"].contains(&k.as_str()))
                .map(move |m| (m.clone(), path.clone()))
        })
        .collect();
    documented.sort();
    let mut expected: Vec<(String, String)> = ROUTES
        .iter()
        .map(|(m, p, _)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    expected.sort();
    assert_eq!(documented, expected);
    // Every $ref resolves.
    let text = doc.to_string();
    for piece in text.split("\"$ref\":\"#/").skip(1) {
        let pointer = piece.split('"').next().unwrap();
        assert!(
            doc.pointer(&format!("/{pointer}")).is_some(),
            "dangling $ref {pointer}"
        );
    }

    // And every documented route is routed: no 404000/405000 for it.
    for (method, _, path) in ROUTES {
        let method: Method = method.to_uppercase().parse().unwrap();
        let r = t
            .call(req(
                method.clone(),
                path,
                Some(&policy_token("iothubowner")),
                "{}",
            ))
            .await;
        assert!(
            r.status != StatusCode::METHOD_NOT_ALLOWED
                && r.headers
                    .get("iothub-errorcode")
                    .map(|v| v.to_str().unwrap())
                    != Some("NotFound"),
            "{method} {path} is not routed: {} {}",
            r.status,
            r.text()
        );
    }
    t.stop().await;
}

#[tokio::test]
async fn unknown_paths_and_methods_answer_iothub_errors() {
    let t = TestHub::start().await;
    let r = t.owner(Method::GET, "/devices/d/twin", Body::empty()).await;
    r.assert_error(404, 404000, "NotFound");
    let r = t.owner(Method::GET, "/", Body::empty()).await;
    r.assert_error(404, 404000, "NotFound");
    // Only the bound segments are case-insensitive.
    let r = t
        .owner(
            Method::GET,
            "/Devices/d/messages/deviceBound",
            Body::empty(),
        )
        .await;
    r.assert_error(404, 404000, "NotFound");

    let r = t.owner(Method::PATCH, "/devices/d", Body::empty()).await;
    r.assert_error(405, 405000, "MethodNotAllowed");
    let allow = r.header("allow");
    for m in ["GET", "PUT", "DELETE"] {
        assert!(allow.contains(m), "{allow}");
    }
    t.stop().await;
}

#[tokio::test]
async fn bound_segments_match_in_any_case_and_api_version_is_ignored() {
    let t = TestHub::start().await;
    t.create_device("dev1").await;
    t.send("dev1", "x", &[]).await;
    for path in [
        "/devices/dev1/messages/DEVICEBOUND?api-version=1999-01-01&iothub-messagelocktimeout=60",
        "/devices/dev1/messages/deviceBound?api-version=2020-09-30",
    ] {
        let r = t
            .call(req(
                Method::GET,
                path,
                Some(&device_token("dev1", DEVICE_KEY)),
                Body::empty(),
            ))
            .await;
        assert!(r.status.is_success(), "{path}: {}", r.text());
    }
    t.stop().await;
}
