//! The registry API (IoT Hub's): create, replace, read, list and delete
//! devices, and the statistics. Status codes are exactly what the SDKs insist
//! on: PUT 200 (msrest raises on 201), DELETE 204.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use courier_auth::Right;
use courier_core::IfMatch;
use courier_hub::DeviceInfo;

use crate::auth::{self, Caller};
use crate::error::ApiError;
use crate::json::{self, DeviceJson, RegistryStatisticsJson, ServiceStatisticsJson};
use crate::request::{self, Body, Params};
use crate::{App, AppState};

/// The registry's routes.
pub(crate) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route(
            "/devices/{id}",
            get(get_device).put(put_device).delete(delete_device),
        )
        .route("/devices", get(list_devices))
        // The Node service SDK's `Registry.list()` asks for `/devices/`.
        .route("/devices/", get(list_devices))
        .route("/statistics/devices", get(registry_statistics))
        .route("/statistics/service", get(service_statistics))
}

/// The `If-Match` header as the registry reads it (quoted or not, `*`).
fn if_match(headers: &HeaderMap) -> Result<IfMatch, ApiError> {
    let value = headers
        .get(header::IF_MATCH)
        .map(|v| {
            v.to_str()
                .map_err(|_| ApiError::argument("If-Match header is not ASCII"))
        })
        .transpose()?;
    Ok(IfMatch::from_header(value))
}

/// A device as JSON, with its etag also as the quoted `ETag` header.
fn device_response(info: &DeviceInfo) -> Result<Response, ApiError> {
    let mut response = json::response(StatusCode::OK, &DeviceJson::new(info))?;
    let etag = HeaderValue::from_str(&format!("\"{}\"", info.device.etag()))
        .map_err(|e| ApiError::server(format!("could not encode the etag: {e}")))?;
    response.headers_mut().insert(header::ETAG, etag);
    Ok(response)
}

/// `PUT /devices/{id}`: create (no If-Match), create or replace (`*`), or
/// replace that version (an etag). Always 200.
async fn put_device(
    State(app): AppState,
    Params(id): Params<String>,
    caller: Caller,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Response, ApiError> {
    auth::right(&app, &caller, Right::RegistryWrite)?;
    let id = request::device_id(&id)?;
    let if_match = if_match(&headers)?;
    let spec = json::device_spec(&body)?;
    let info = app.hub.put_device(id, spec, if_match).await?;
    device_response(&info)
}

/// `GET /devices/{id}`.
async fn get_device(
    State(app): AppState,
    Params(id): Params<String>,
    caller: Caller,
) -> Result<Response, ApiError> {
    auth::right(&app, &caller, Right::RegistryRead)?;
    let id = request::device_id(&id)?;
    let info = app.hub.get_device(&id).await?;
    device_response(&info)
}

/// `DELETE /devices/{id}`: 204; the device's queue goes with it.
async fn delete_device(
    State(app): AppState,
    Params(id): Params<String>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    auth::right(&app, &caller, Right::RegistryWrite)?;
    let id = request::device_id(&id)?;
    app.hub.delete_device(&id, if_match(&headers)?).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /devices[?top=n]`.
async fn list_devices(
    State(app): AppState,
    caller: Caller,
    uri: Uri,
) -> Result<Response, ApiError> {
    auth::right(&app, &caller, Right::RegistryRead)?;
    let top = request::top(&uri)?;
    let devices = app.hub.list_devices(top).await?;
    let json: Vec<DeviceJson<'_>> = devices.iter().map(DeviceJson::new).collect();
    json::response(StatusCode::OK, &json)
}

/// `GET /statistics/devices`.
async fn registry_statistics(State(app): AppState, caller: Caller) -> Result<Response, ApiError> {
    auth::right(&app, &caller, Right::RegistryRead)?;
    let stats = app.hub.stats().await?;
    json::response(
        StatusCode::OK,
        &RegistryStatisticsJson {
            total_device_count: stats.devices,
            enabled_device_count: stats.enabled_devices,
            disabled_device_count: stats.devices.saturating_sub(stats.enabled_devices),
        },
    )
}

/// `GET /statistics/service`. Service SDK clients (e.g. .NET's `ServiceClient`)
/// hold only a ServiceConnect policy, so either right will do.
async fn service_statistics(State(app): AppState, caller: Caller) -> Result<Response, ApiError> {
    auth::any_right(&app, &caller, &[Right::ServiceConnect, Right::RegistryRead])?;
    // Devices with a live MQTT (or AMQP) connection; HTTP polling is no
    // connection, as in IoT Hub.
    json::response(
        StatusCode::OK,
        &ServiceStatisticsJson {
            connected_device_count: app.hub.connected_device_count(),
        },
    )
}
