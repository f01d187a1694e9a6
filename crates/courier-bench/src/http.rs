//! The few HTTPS calls a run makes as the hub's policy: registry create and
//! delete, C2D send, feedback receive and complete (`docs/http-api.md`).

use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE, ETAG};
use reqwest::{Method, StatusCode};

use crate::options::{AckMode, HttpVersion};
use crate::target::BenchTarget;
use crate::BenchError;

/// How long one request may take before it counts as a transport error.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Why one call failed; `kind` is the label errors are counted under.
#[derive(Debug)]
pub(crate) struct CallError {
    /// e.g. `send: HTTP 404 DeviceNotFound` or `send: transport`.
    pub(crate) kind: String,
    /// Detail for fatal errors.
    pub(crate) detail: String,
}

/// A client for one hub, signing with one policy token.
#[derive(Clone)]
pub(crate) struct Service {
    http: reqwest::Client,
    base: String,
    authorization: HeaderValue,
}

impl Service {
    pub(crate) fn new(target: &BenchTarget, version: HttpVersion) -> Result<Self, BenchError> {
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .timeout(REQUEST_TIMEOUT)
            .pool_max_idle_per_host(usize::MAX)
            .user_agent(concat!("courier-bench/", env!("CARGO_PKG_VERSION")));
        for cert in reqwest::Certificate::from_pem_bundle(&target.ca_pem)
            .map_err(|e| BenchError::Ca(e.to_string()))?
        {
            builder = builder.add_root_certificate(cert);
        }
        builder = match version {
            HttpVersion::Http1 => builder.http1_only(),
            HttpVersion::Http2 => builder.http2_prior_knowledge(),
        };
        let http = builder.build().map_err(BenchError::HttpClient)?;
        let authorization = HeaderValue::from_str(&target.policy_token()?)
            .map_err(|_| BenchError::Ca("the SAS token is not a valid header".into()))?;
        Ok(Self {
            http,
            base: target
                .https_endpoint
                .as_str()
                .trim_end_matches('/')
                .to_owned(),
            authorization,
        })
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .header(AUTHORIZATION, self.authorization.clone())
    }

    /// Creates `id` with `key` as both keys and the given queue depth; a device
    /// left by an earlier run is deleted and created afresh, so its old queue goes.
    pub(crate) async fn create_device(
        &self,
        id: &str,
        key: &str,
        max_queue_depth: u32,
    ) -> Result<(), CallError> {
        let body = serde_json::json!({
            "deviceId": id,
            "status": "enabled",
            "authentication": {
                "type": "sas",
                "symmetricKey": { "primaryKey": key, "secondaryKey": key },
            },
            "c2dLimits": { "maxQueueDepth": max_queue_depth },
        });
        let put = || {
            self.request(Method::PUT, &format!("/devices/{id}"))
                .json(&body)
        };
        match call(put(), "create device").await {
            Err(e) if e.kind.contains("HTTP 409") => {
                self.delete_device(id).await?;
                call(put(), "create device").await.map(drop)
            }
            other => other.map(drop),
        }
    }

    /// Deletes `id` (its queue goes with it); a device already gone is fine.
    pub(crate) async fn delete_device(&self, id: &str) -> Result<(), CallError> {
        let request = self.request(Method::DELETE, &format!("/devices/{id}"));
        match call(request, "delete device").await {
            Err(e) if e.kind.contains("HTTP 404") => Ok(()),
            other => other.map(drop),
        }
    }

    /// Sends one C2D message to `device`; answered once the hub stored it.
    pub(crate) async fn send(
        &self,
        device: &str,
        body: Bytes,
        ack: AckMode,
    ) -> Result<(), CallError> {
        let mut request = self
            .request(
                Method::POST,
                &format!("/devices/{device}/messages/deviceBound"),
            )
            .header(
                CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            )
            .body(body);
        if ack != AckMode::None {
            request = request.header("iothub-ack", HeaderValue::from_static(ack.as_str()));
        }
        call(request, "send").await.map(drop)
    }

    /// Receives one feedback batch (long-polling up to `wait`), completes it and
    /// returns how many of its records are for devices named `{prefix}…`.
    pub(crate) async fn take_feedback(
        &self,
        wait: Duration,
        prefix: &str,
    ) -> Result<u64, CallError> {
        let request = self.request(
            Method::GET,
            &format!("/messages/serviceBound/feedback?wait={}", wait.as_secs()),
        );
        let response = self.execute(request, "feedback").await?;
        if response.status() == StatusCode::NO_CONTENT {
            return Ok(0);
        }
        let lock_token = response
            .headers()
            .get(ETAG)
            .and_then(|v| v.to_str().ok())
            .map(|v| v.trim_matches('"').to_owned())
            .ok_or_else(|| unexpected("feedback", "a batch without an ETag"))?;
        let bytes = response
            .bytes()
            .await
            .map_err(|e| transport("feedback", &e))?;
        let records: Vec<serde_json::Value> =
            serde_json::from_slice(&bytes).map_err(|e| unexpected("feedback", &e.to_string()))?;
        let ours = records
            .iter()
            .filter(|r| {
                r["deviceId"]
                    .as_str()
                    .is_some_and(|d| d.starts_with(prefix))
            })
            .count() as u64;
        let complete = self.request(
            Method::DELETE,
            &format!("/messages/serviceBound/feedback/{lock_token}"),
        );
        call(complete, "complete feedback").await?;
        Ok(ours)
    }

    async fn execute(
        &self,
        request: reqwest::RequestBuilder,
        what: &str,
    ) -> Result<reqwest::Response, CallError> {
        let response = request.send().await.map_err(|e| transport(what, &e))?;
        if response.status().is_success() {
            Ok(response)
        } else {
            Err(refused(what, response).await)
        }
    }
}

/// Sends `request`, reads the whole answer (so the connection is reused) and
/// fails unless it is a 2xx.
async fn call(request: reqwest::RequestBuilder, what: &str) -> Result<Bytes, CallError> {
    let response = request.send().await.map_err(|e| transport(what, &e))?;
    if !response.status().is_success() {
        return Err(refused(what, response).await);
    }
    response.bytes().await.map_err(|e| transport(what, &e))
}

async fn refused(what: &str, response: reqwest::Response) -> CallError {
    let status = response.status().as_u16();
    let name = error_name(response.headers());
    let detail = response
        .text()
        .await
        .unwrap_or_default()
        .chars()
        .take(300)
        .collect();
    CallError {
        kind: format!(
            "{what}: HTTP {status}{}",
            name.map(|n| format!(" {n}")).unwrap_or_default()
        ),
        detail,
    }
}

fn error_name(headers: &HeaderMap) -> Option<String> {
    headers
        .get("iothub-errorcode")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}

fn transport(what: &str, error: &reqwest::Error) -> CallError {
    let kind = if error.is_timeout() {
        "timeout"
    } else {
        "transport"
    };
    CallError {
        kind: format!("{what}: {kind}"),
        detail: error_chain(error),
    }
}

fn unexpected(what: &str, detail: &str) -> CallError {
    CallError {
        kind: format!("{what}: unexpected answer"),
        detail: detail.to_owned(),
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
