//! The service's feedback link (`/messages/serviceBound/feedback`, wire spec
//! §3.8): one locked batch at a time, as one message; accepted (or rejected)
//! → complete, released/modified → abandon. A batch whose lock lapses before
//! the service settles it is forgotten here; the core offers it again.

use std::sync::Arc;

use courier_hub::feedback_json::feedback_json;
use fe2o3_amqp::link::Sender;
use fe2o3_amqp::types::messaging::Outcome;
use fe2o3_amqp::Sendable;
use tokio::sync::watch;
use tracing::debug;

use super::{lapsed, stopping, token_lapsed};
use crate::connection::{Conn, Lease};
use crate::convert::feedback_message;
use crate::metrics::Counters;

/// How long a batch may wait for the service's disposition (IoT Hub's feedback lock).
const FEEDBACK_LOCK: std::time::Duration = std::time::Duration::from_secs(60);

pub(super) async fn run(
    conn: Arc<Conn>,
    mut link: Sender,
    lease: Lease,
    mut stop: watch::Receiver<bool>,
) {
    let hub = conn.shared.config.hub.clone();
    let hub_name = hub.settings().hub_name.clone();
    let lapse = lapsed(&conn, lease);
    tokio::pin!(lapse);
    loop {
        let batch = tokio::select! {
            b = hub.receive_feedback_wait(conn.shared.config.poll_interval) => b,
            _ = link.on_detach() => return,
            () = &mut lapse => {
                let _ = link.close_with_error(token_lapsed()).await;
                return;
            }
            () = stopping(&mut stop) => break,
        };
        let d = match batch {
            Ok(Some(d)) => d,
            Ok(None) => continue,
            Err(e) => {
                debug!(error = %e, "hub feedback receive failed");
                break;
            }
        };
        let json = match feedback_json(&d.batch) {
            Ok(json) => json,
            Err(e) => {
                debug!(error = %e, "feedback batch could not be encoded");
                let _ = hub.abandon_feedback(d.lock_token).await;
                break;
            }
        };
        let sendable = Sendable::builder()
            .message(feedback_message(&d, &hub_name, json))
            .build();
        let sent = tokio::time::timeout(FEEDBACK_LOCK, async {
            let fut = link.send_batchable(sendable).await?;
            Counters::add(&conn.shared.counters.feedback_delivered);
            fut.await
        })
        .await;
        let result = match sent {
            Ok(Ok(Outcome::Accepted(_) | Outcome::Rejected(_))) => {
                hub.complete_feedback(d.lock_token).await
            }
            Ok(Ok(_)) => hub.abandon_feedback(d.lock_token).await,
            Ok(Err(e)) => {
                debug!(error = %e, "feedback transfer failed");
                let _ = hub.abandon_feedback(d.lock_token).await;
                return;
            }
            Err(_) => Ok(()),
        };
        if let Err(e) = result {
            debug!(error = %e, "settling a feedback batch failed");
        }
    }
    let _ = link.close().await;
}
