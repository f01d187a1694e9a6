//! The service API: C2D send (a Courier convenience with IoT Hub's header
//! vocabulary), purge (IoT Hub's), and Courier's hub info. All need ServiceConnect.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::{delete, get, post};
use axum::Router;
use courier_auth::Right;
use courier_core::C2dMessage;

use crate::auth::{self, Caller};
use crate::error::ApiError;
use crate::headers::message_properties;
use crate::json::{self, HubInfoJson, HubLimitsJson, PurgeJson, SendReceiptJson};
use crate::request::{self, Body, Params};
use crate::timefmt::{now, rfc3339};
use crate::{App, AppState};

/// The service API's routes.
pub(crate) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/devices/{id}/messages/deviceBound", post(send))
        .route("/devices/{id}/commands", delete(purge))
        .route("/courier/hub", get(hub_info))
}

/// `POST /devices/{id}/messages/deviceBound`: 200 with the receipt, once durable.
async fn send(
    State(app): AppState,
    Params(id): Params<String>,
    caller: Caller,
    headers: HeaderMap,
    Body(body): Body,
) -> Result<Response, ApiError> {
    auth::right(&app, &caller, Right::ServiceConnect)?;
    let id = request::device_id(&id)?;
    let properties = message_properties(&headers, now())?;
    let message = C2dMessage {
        properties,
        body: body.to_vec(),
    };
    let message_id = message.properties.message_id.clone();
    let receipt = app.hub.send(&id, message).await?;
    json::response(
        StatusCode::OK,
        &SendReceiptJson {
            device_id: id.as_str(),
            message_id: message_id.as_deref(),
            sequence_number: receipt.sequence_number.0,
            enqueued_time_utc: rfc3339(receipt.enqueued_time),
            expiry_time_utc: rfc3339(receipt.expiry_time),
        },
    )
}

/// `DELETE /devices/{id}/commands`: 200 with how many messages were removed.
async fn purge(
    State(app): AppState,
    Params(id): Params<String>,
    caller: Caller,
) -> Result<Response, ApiError> {
    auth::right(&app, &caller, Right::ServiceConnect)?;
    let id = request::device_id(&id)?;
    let purged = app.hub.purge(&id).await?;
    json::response(
        StatusCode::OK,
        &PurgeJson {
            total_messages_purged: purged,
            device_id: id.as_str(),
            module_id: None,
        },
    )
}

/// `GET /courier/hub`: counters and hub-wide limits.
async fn hub_info(State(app): AppState, caller: Caller) -> Result<Response, ApiError> {
    auth::right(&app, &caller, Right::ServiceConnect)?;
    let stats = app.hub.stats().await?;
    json::response(
        StatusCode::OK,
        &HubInfoJson {
            host_name: &app.host_name,
            version: app.version,
            device_count: stats.devices,
            queued_messages: stats.queued_messages,
            pending_feedback_records: stats.pending_feedback_records,
            limits: HubLimitsJson::new(&app.hub.settings().limits),
        },
    )
}
