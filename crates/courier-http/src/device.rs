//! The device API (IoT Hub's HTTPS C2D polling, wire spec §4.1): receive,
//! complete, reject and abandon. The lock token comes from the path; `If-Match`
//! and `IfMatch` headers and any request body are ignored, since SDKs differ.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;

use crate::auth::{self, Caller};
use crate::error::ApiError;
use crate::headers::delivery_headers;
use crate::request::{self, Params};
use crate::{App, AppState};

/// The device API's routes.
pub(crate) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/devices/{id}/messages/deviceBound", get(receive))
        .route(
            "/devices/{id}/messages/deviceBound/{lock}",
            delete(complete_or_reject),
        )
        .route(
            "/devices/{id}/messages/deviceBound/{lock}/abandon",
            post(abandon),
        )
}

/// `GET /devices/{id}/messages/deviceBound[?wait=s]`: 200 with the next message, or 204.
async fn receive(
    State(app): AppState,
    Params(id): Params<String>,
    caller: Caller,
    uri: Uri,
) -> Result<Response, ApiError> {
    auth::device(&app, &caller, &id)?;
    let id = request::device_id(&id)?;
    let wait = request::wait(&uri)?;
    let delivery = if wait.is_zero() {
        app.hub.receive(&id).await?
    } else {
        app.hub.receive_wait(&id, wait).await?
    };
    Ok(match delivery {
        None => StatusCode::NO_CONTENT.into_response(),
        Some(d) => {
            let headers = delivery_headers(&d);
            (StatusCode::OK, headers, d.message.body.clone()).into_response()
        }
    })
}

/// `DELETE /devices/{id}/messages/deviceBound/{lock}[?reject]`: 204.
async fn complete_or_reject(
    State(app): AppState,
    Params((id, lock)): Params<(String, String)>,
    caller: Caller,
    uri: Uri,
) -> Result<StatusCode, ApiError> {
    auth::device(&app, &caller, &id)?;
    let id = request::device_id(&id)?;
    let token = request::lock_token(&lock)?;
    if request::is_reject(&uri) {
        app.hub.reject(&id, token).await?;
    } else {
        app.hub.complete(&id, token).await?;
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /devices/{id}/messages/deviceBound/{lock}/abandon`: 204.
async fn abandon(
    State(app): AppState,
    Params((id, lock)): Params<(String, String)>,
    caller: Caller,
) -> Result<StatusCode, ApiError> {
    auth::device(&app, &caller, &id)?;
    let id = request::device_id(&id)?;
    let token = request::lock_token(&lock)?;
    app.hub.abandon(&id, token).await?;
    Ok(StatusCode::NO_CONTENT)
}
