//! Feedback over HTTP (in IoT Hub's REST spec, used by the Python service SDK
//! and Courier's CLI): receive a locked batch of records, then complete or
//! abandon it. All need ServiceConnect.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use courier_auth::Right;
use courier_hub::feedback_json::{feedback_json, FEEDBACK_CONTENT_TYPE};

use crate::auth::{self, Caller};
use crate::error::ApiError;
use crate::request::{self, Params};
use crate::timefmt::rfc3339;
use crate::{App, AppState};

/// The feedback routes.
pub(crate) fn routes() -> Router<Arc<App>> {
    Router::new()
        .route("/messages/serviceBound/feedback", get(receive))
        .route("/messages/serviceBound/feedback/{lock}", delete(complete))
        .route(
            "/messages/serviceBound/feedback/{lock}/abandon",
            post(abandon),
        )
}

/// `GET /messages/serviceBound/feedback[?wait=s]`: 200 with a batch, or 204.
async fn receive(State(app): AppState, caller: Caller, uri: Uri) -> Result<Response, ApiError> {
    auth::right(&app, &caller, Right::ServiceConnect)?;
    let wait = request::wait(&uri)?;
    let delivery = if wait.is_zero() {
        app.hub.receive_feedback().await?
    } else {
        app.hub.receive_feedback_wait(wait).await?
    };
    let Some(d) = delivery else {
        return Ok(StatusCode::NO_CONTENT.into_response());
    };
    let body = feedback_json(&d.batch)
        .map_err(|e| ApiError::server(format!("could not encode feedback: {e}")))?;
    let etag = HeaderValue::from_str(&format!("\"{}\"", d.lock_token))
        .map_err(|e| ApiError::server(format!("could not encode the lock token: {e}")))?;
    let enqueued = HeaderValue::from_str(&rfc3339(d.enqueued_time))
        .map_err(|e| ApiError::server(format!("could not encode the time: {e}")))?;
    Ok((
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static(FEEDBACK_CONTENT_TYPE),
            ),
            (header::ETAG, etag),
            (
                header::HeaderName::from_static("iothub-enqueuedtime"),
                enqueued,
            ),
            (
                header::HeaderName::from_static("iothub-deliverycount"),
                HeaderValue::from(d.delivery_count),
            ),
        ],
        body,
    )
        .into_response())
}

/// `DELETE /messages/serviceBound/feedback/{lock}`: 204.
async fn complete(
    State(app): AppState,
    Params(lock): Params<String>,
    caller: Caller,
) -> Result<StatusCode, ApiError> {
    auth::right(&app, &caller, Right::ServiceConnect)?;
    let token = request::lock_token(&lock)?;
    app.hub.complete_feedback(token).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /messages/serviceBound/feedback/{lock}/abandon`: 204.
async fn abandon(
    State(app): AppState,
    Params(lock): Params<String>,
    caller: Caller,
) -> Result<StatusCode, ApiError> {
    auth::right(&app, &caller, Right::ServiceConnect)?;
    let token = request::lock_token(&lock)?;
    app.hub.abandon_feedback(token).await?;
    Ok(StatusCode::NO_CONTENT)
}
