//! Courier's HTTPS heads: IoT Hub's device API (C2D receive, complete, reject,
//! abandon), the service API (C2D send, purge, feedback, hub info) and the
//! registry API (devices, statistics), as one axum [`Router`].
//!
//! The contract is `docs/http-api.md`; paths, headers, status codes, JSON
//! shapes and error bodies are IoT Hub's, so the official SDKs work
//! unchanged. This crate translates HTTP ↔ hub calls and checks who may make
//! them. It must not decide a message's fate (the hub does), hold state of its
//! own, or touch TLS and sockets (the server serves the router and inserts
//! [`PeerCertificate`] per connection).

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tower::ServiceExt as _;

mod auth;
mod device;
mod error;
mod feedback;
mod headers;
mod json;
mod registry;
mod request;
mod service;
mod timefmt;

/// The OpenAPI 3.0 description of every route, served at `GET /openapi.json`.
const OPENAPI_JSON: &str = include_str!("openapi.json");

/// Smallest request body limit, whatever the hub's message size limit.
const MIN_BODY_LIMIT: usize = 1024 * 1024;

/// What the HTTPS heads need from the server.
#[derive(Clone)]
pub struct HttpConfig {
    /// The hub's canonical host name (reported by `GET /courier/hub`).
    pub host_name: String,
    /// The hub engine.
    pub hub: courier_hub::Hub,
    /// Checks SAS tokens against the hub's host names.
    pub authenticator: Arc<courier_auth::Authenticator>,
    /// The hub's shared access policies.
    pub policies: Arc<Vec<courier_auth::Policy>>,
    /// Courier's version (reported by `GET /courier/hub`).
    pub version: &'static str,
}

/// The TLS client certificate of the connection (leaf DER), inserted as a
/// request extension by the server's TLS listener.
#[derive(Clone, Debug, Default)]
pub struct PeerCertificate(pub Option<Arc<Vec<u8>>>);

/// Shared by every handler.
pub(crate) struct App {
    pub(crate) host_name: String,
    pub(crate) hub: courier_hub::Hub,
    pub(crate) authenticator: Arc<courier_auth::Authenticator>,
    pub(crate) policies: Arc<Vec<courier_auth::Policy>>,
    pub(crate) version: &'static str,
}

/// Handler state.
pub(crate) type AppState = State<Arc<App>>;

/// Courier's HTTPS API as a router, ready to serve.
pub fn router(config: HttpConfig) -> Router {
    let body_limit = body_limit(config.hub.settings().limits.max_message_size);
    let app = Arc::new(App {
        host_name: config.host_name,
        hub: config.hub,
        authenticator: config.authenticator,
        policies: config.policies,
        version: config.version,
    });
    let routes = Router::new()
        .route("/health", get(health))
        .route("/openapi.json", get(openapi))
        .merge(device::routes())
        .merge(service::routes())
        .merge(feedback::routes())
        .merge(registry::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(app);
    // Routing is case-sensitive, so the case-insensitive segments are
    // normalized before the inner router sees the request.
    Router::new().fallback_service(routes.map_request(normalize_path))
}

/// The request body limit: generous against the hub's own message limit
/// (which the hub enforces exactly, with properties counted), so that the
/// hub's 413001 is what a client normally sees.
fn body_limit(max_message_size: u32) -> usize {
    usize::try_from(max_message_size)
        .unwrap_or(usize::MAX)
        .saturating_mul(4)
        .max(MIN_BODY_LIMIT)
}

/// Rewrites `devicebound`/`serviceBound` in any case to the spelling the
/// routes use. Only those positions are touched: device ids are case-sensitive.
fn normalize_path(mut req: Request) -> Request {
    let Some(path) = normalized(req.uri().path()) else {
        return req;
    };
    let path_and_query = match req.uri().query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    let mut parts = req.uri().clone().into_parts();
    if let Ok(pq) = path_and_query.parse() {
        parts.path_and_query = Some(pq);
        if let Ok(uri) = Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
    req
}

/// The path with its bound segment respelled, or `None` if nothing changes.
fn normalized(path: &str) -> Option<String> {
    let mut segments: Vec<&str> = path.split('/').collect();
    // A leading '/' makes segments[0] empty.
    let (index, canonical) = match segments.as_slice() {
        ["", "devices", _, "messages", bound, ..] => (4, bound_word(bound, "deviceBound")?),
        ["", "messages", bound, ..] => (2, bound_word(bound, "serviceBound")?),
        _ => return None,
    };
    segments[index] = canonical;
    Some(segments.join("/"))
}

fn bound_word(segment: &str, canonical: &'static str) -> Option<&'static str> {
    (segment != canonical && segment.eq_ignore_ascii_case(canonical)).then_some(canonical)
}

/// `GET /health`: no auth, for load balancers and `courier status`.
async fn health() -> &'static str {
    "ok"
}

/// `GET /openapi.json`: no auth.
async fn openapi() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        )],
        OPENAPI_JSON,
    )
        .into_response()
}

async fn not_found(method: Method, uri: Uri) -> error::ApiError {
    error::ApiError::new(
        courier_core::ErrorCode::NotFound,
        format!(
            "no such endpoint: {method} {}; see GET /openapi.json",
            uri.path()
        ),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> error::ApiError {
    error::ApiError::custom(
        StatusCode::METHOD_NOT_ALLOWED,
        405000,
        "MethodNotAllowed",
        format!(
            "{method} is not allowed on {}; the Allow header lists what is",
            uri.path()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bound_segments_are_respelled_only_in_their_position() {
        assert_eq!(
            normalized("/devices/dev1/messages/devicebound/abc"),
            Some("/devices/dev1/messages/deviceBound/abc".into())
        );
        assert_eq!(normalized("/devices/dev1/messages/deviceBound"), None);
        assert_eq!(
            normalized("/messages/servicebound/feedback"),
            Some("/messages/serviceBound/feedback".into())
        );
        // A device called "devicebound" keeps its case.
        assert_eq!(normalized("/devices/devicebound"), None);
        assert_eq!(normalized("/devices/Devicebound/commands"), None);
    }

    #[test]
    fn body_limit_is_four_times_the_message_limit_and_at_least_one_mebibyte() {
        assert_eq!(body_limit(64 * 1024), MIN_BODY_LIMIT);
        assert_eq!(body_limit(1024 * 1024), 4 * 1024 * 1024);
    }
}
