//! One real hub over a temporary write-ahead log, the router on top, and the
//! SAS tokens the SDKs send, minted with this hub's keys.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderName, Method, Request, StatusCode};
use axum::Router;
use courier_auth::{sign, Authenticator, Policy, Right, Rights};
use courier_core::HubSettings;
use courier_http::{router, HttpConfig, PeerCertificate};
use courier_hub::{Hub, HubOptions, HubTask, SystemClock};
use courier_store::{WalOptions, WalStore};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde_json::Value;
use tower::ServiceExt as _;

/// The hub's host name, as in the traces.
pub(crate) const HOST: &str = "localhost";
/// Key of every policy in these tests (each policy differs by name and rights).
pub(crate) const POLICY_KEY: &str = "c2VydmljZS1wcmltYXJ5LWtleS0zMi1ieXRlcy0hISE=";
/// A key no policy or device has.
pub(crate) const WRONG_KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
/// The device key used when a test registers a SAS device with known keys.
pub(crate) const DEVICE_KEY: &str = "wMM1Z/MRGFC67W/7+p6FRdLdz9Wq+Wdn5Gc0pPeQCeQ=";
/// Its secondary key.
pub(crate) const DEVICE_KEY_2: &str = "vkHC4S2PygsHjOs/d0Ymj3mF0hPk8HJTSPdXl0M0Zqo=";
/// Generous bound on anything a test waits for.
pub(crate) const PATIENCE: Duration = Duration::from_secs(20);

/// A hub with the five default IoT Hub policies, served by the router.
pub(crate) struct TestHub {
    pub(crate) router: Router,
    pub(crate) hub: Hub,
    task: Option<HubTask>,
    _dir: tempfile::TempDir,
}

impl TestHub {
    pub(crate) async fn start() -> TestHub {
        let dir = tempfile::tempdir().unwrap();
        let store = WalStore::open(dir.path(), WalOptions::default()).unwrap();
        let (hub, task, _) = Hub::open(
            Arc::new(store),
            HubSettings::default(),
            Arc::new(SystemClock),
            HubOptions::default(),
        )
        .unwrap();
        let read = Rights::from(Right::RegistryRead);
        let policies = [
            ("iothubowner", Rights::all()),
            ("service", Right::ServiceConnect.into()),
            ("device", Right::DeviceConnect.into()),
            ("registryRead", read),
            ("registryReadWrite", read.with(Right::RegistryWrite)),
        ]
        .into_iter()
        .map(|(name, rights)| Policy {
            key_name: name.into(),
            primary_key: POLICY_KEY.into(),
            secondary_key: WRONG_KEY.into(),
            rights,
        })
        .collect();
        let router = router(HttpConfig {
            host_name: HOST.into(),
            hub: hub.clone(),
            authenticator: Arc::new(Authenticator::new(vec![HOST.into()])),
            policies: Arc::new(policies),
            version: "0.1.0-test",
        });
        TestHub {
            router,
            hub,
            task: Some(task),
            _dir: dir,
        }
    }

    /// Sends one request through the router.
    pub(crate) async fn call(&self, req: Request<Body>) -> Reply {
        let response = self.router.clone().oneshot(req).await.unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap()
            .to_vec();
        Reply {
            status,
            headers,
            body,
        }
    }

    /// A request as `owner` (iothubowner policy token).
    pub(crate) async fn owner(&self, method: Method, uri: &str, body: impl Into<Body>) -> Reply {
        self.call(req(method, uri, Some(&policy_token("iothubowner")), body))
            .await
    }

    /// Registers SAS device `id` with [`DEVICE_KEY`]/[`DEVICE_KEY_2`] over the API.
    pub(crate) async fn create_device(&self, id: &str) {
        self.create_device_json(
            id,
            serde_json::json!({
                "deviceId": id,
                "authentication": {"type": "sas", "symmetricKey": {"primaryKey": DEVICE_KEY, "secondaryKey": DEVICE_KEY_2}},
            }),
        )
        .await;
    }

    /// Registers a device from a PUT body, asserting it worked.
    pub(crate) async fn create_device_json(&self, id: &str, body: Value) -> Value {
        let r = self
            .owner(
                Method::PUT,
                &format!("/devices/{}?api-version=2021-04-12", enc(id)),
                body.to_string(),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        r.json()
    }

    /// Sends a C2D message with `headers` as owner, asserting it was queued.
    pub(crate) async fn send(&self, id: &str, body: &str, headers: &[(&str, &str)]) -> Value {
        let mut request = req(
            Method::POST,
            &format!("/devices/{}/messages/deviceBound", enc(id)),
            Some(&policy_token("iothubowner")),
            body.to_owned(),
        );
        for (k, v) in headers {
            request.headers_mut().append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        let r = self.call(request).await;
        assert_eq!(r.status, StatusCode::OK, "{}", r.text());
        r.json()
    }

    /// Receives as the device itself (its key token, as Node sends it).
    pub(crate) async fn receive(&self, id: &str) -> Reply {
        self.call(req(
            Method::GET,
            &format!(
                "/devices/{}/messages/devicebound?api-version=2021-04-12",
                enc(id)
            ),
            Some(&device_token(id, DEVICE_KEY)),
            Body::empty(),
        ))
        .await
    }

    /// Receives feedback as the `service` policy, long-polling up to `wait_s`.
    pub(crate) async fn receive_feedback(&self, wait_s: u64) -> Reply {
        self.call(req(
            Method::GET,
            &format!("/messages/serviceBound/feedback?api-version=2021-04-12&wait={wait_s}"),
            Some(&policy_token("service")),
            Body::empty(),
        ))
        .await
    }

    /// Collects feedback records until `n` arrived, completing every batch.
    pub(crate) async fn feedback_records(&self, n: usize) -> Vec<Value> {
        let mut records = Vec::new();
        let deadline = tokio::time::Instant::now() + PATIENCE;
        while records.len() < n {
            assert!(
                tokio::time::Instant::now() < deadline,
                "only {} of {n} feedback records arrived",
                records.len()
            );
            let r = self.receive_feedback(5).await;
            if r.status == StatusCode::NO_CONTENT {
                continue;
            }
            assert_eq!(r.status, StatusCode::OK, "{}", r.text());
            records.extend(r.json().as_array().unwrap().iter().cloned());
            let done = self
                .call(req(
                    Method::DELETE,
                    &format!("/messages/serviceBound/feedback/{}", r.lock_token()),
                    Some(&policy_token("service")),
                    Body::empty(),
                ))
                .await;
            assert_eq!(done.status, StatusCode::NO_CONTENT, "{}", done.text());
        }
        records
    }

    pub(crate) async fn stop(mut self) {
        self.hub.shutdown().await;
        if let Some(task) = self.task.take() {
            task.await.unwrap();
        }
    }
}

/// A response, read whole.
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Vec<u8>,
}

impl Reply {
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    pub(crate) fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header in {:?}", self.headers))
            .to_str()
            .unwrap()
    }

    /// The lock token of a 200 receive: the ETag without its quotes.
    pub(crate) fn lock_token(&self) -> String {
        let etag = self.header("etag");
        assert!(
            etag.starts_with('"') && etag.ends_with('"') && etag.len() > 2,
            "ETag must be quoted: {etag}"
        );
        etag[1..etag.len() - 1].to_owned()
    }

    /// Asserts an IoT Hub error: status, header, body shape and code.
    pub(crate) fn assert_error(&self, status: u16, code: u32, name: &str) {
        assert_eq!(self.status.as_u16(), status, "{}", self.text());
        assert_eq!(self.header("iothub-errorcode"), name);
        assert_eq!(
            self.header("content-type"),
            "application/json; charset=utf-8"
        );
        let v = self.json();
        assert_eq!(v["errorCode"], code, "{v}");
        let message = v["Message"].as_str().unwrap();
        assert!(
            message.starts_with(&format!("ErrorCode:{name};")),
            "{message}"
        );
        assert!(
            v["ExceptionMessage"]
                .as_str()
                .unwrap()
                .starts_with("Tracking ID:"),
            "{v}"
        );
    }

    /// The text after `ErrorCode:{Name};`.
    pub(crate) fn error_text(&self) -> String {
        let v = self.json();
        let message = v["Message"].as_str().unwrap();
        message.split_once(';').unwrap().1.to_owned()
    }
}

/// A request with an optional `Authorization` header.
pub(crate) fn req(
    method: Method,
    uri: &str,
    token: Option<&str>,
    body: impl Into<Body>,
) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(uri);
    if let Some(token) = token {
        builder = builder.header("authorization", token);
    }
    builder.body(body.into()).unwrap()
}

/// A request carrying a TLS client certificate and no token.
pub(crate) fn req_with_cert(method: Method, uri: &str, cert: Option<&[u8]>) -> Request<Body> {
    let mut request = req(method, uri, None, Body::empty());
    request
        .extensions_mut()
        .insert(PeerCertificate(cert.map(|c| Arc::new(c.to_vec()))));
    request
}

/// Percent-encodes a path segment as the SDKs do.
pub(crate) fn enc(s: &str) -> String {
    utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
}

pub(crate) fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn signature(sr: &str, se: u64, key: &str) -> String {
    enc(&sign(&format!("{sr}\n{se}"), key).unwrap())
}

/// Python service REST shape: `sr={host}&sig=..&se=..&skn=..`.
pub(crate) fn policy_token(name: &str) -> String {
    let se = now_unix() + 3600;
    let sr = HOST;
    format!(
        "SharedAccessSignature sr={sr}&sig={}&se={se}&skn={name}",
        signature(sr, se, POLICY_KEY)
    )
}

/// Node service shape: `skn` before `se`.
pub(crate) fn node_policy_token(name: &str) -> String {
    let se = now_unix() + 3600;
    let sr = HOST;
    format!(
        "SharedAccessSignature sr={sr}&sig={}&skn={name}&se={se}",
        signature(sr, se, POLICY_KEY)
    )
}

/// A policy token scoped to one device (Node device with a policy connection string).
pub(crate) fn policy_device_token(name: &str, device_id: &str) -> String {
    let se = now_unix() + 3600;
    let sr = enc(&format!("{HOST}/devices/{device_id}"));
    format!(
        "SharedAccessSignature sr={sr}&sig={}&se={se}&skn={name}",
        signature(&sr, se, POLICY_KEY)
    )
}

/// Node/Python device shape: `sr={host}%2Fdevices%2F{id}&sig=..&se=..`, no `skn`.
pub(crate) fn device_token(device_id: &str, key: &str) -> String {
    device_token_until(device_id, key, now_unix() + 3600)
}

/// A device token expiring at `se`.
pub(crate) fn device_token_until(device_id: &str, key: &str, se: u64) -> String {
    let sr = enc(&format!("{HOST}/devices/{device_id}"));
    format!(
        "SharedAccessSignature sr={sr}&sig={}&se={se}",
        signature(&sr, se, key)
    )
}

/// A device key signing a hub-wide `sr` (no device named): a wrong scope.
pub(crate) fn device_key_hub_token(key: &str) -> String {
    let se = now_unix() + 3600;
    format!(
        "SharedAccessSignature sr={HOST}&sig={}&se={se}",
        signature(HOST, se, key)
    )
}
