//! The service's C2D send link (`/messages/devicebound`, wire spec §3.7):
//! each transfer's `to` names the device; the outcome is Accepted once the
//! message is durable, or Rejected with IoT Hub's condition and code.
//! Transfers are handled one at a time, so the link's credit (fe2o3's
//! default window) bounds what a sender can make the head hold.

use std::sync::Arc;

use courier_core::{DeviceId, ErrorCode};
use fe2o3_amqp::link::Receiver;
use fe2o3_amqp::types::messaging::Body;
use fe2o3_amqp::types::primitives::Value;
use tokio::sync::watch;
use tracing::debug;

use super::{hub_error, lapsed, stopping, token_lapsed};
use crate::connection::{Conn, Lease};
use crate::convert::c2d_from_service;
use crate::metrics::Counters;

pub(super) async fn run(
    conn: Arc<Conn>,
    mut link: Receiver,
    lease: Lease,
    mut stop: watch::Receiver<bool>,
) {
    let lapse = lapsed(&conn, lease);
    tokio::pin!(lapse);
    loop {
        let delivery = tokio::select! {
            d = link.recv::<Body<Value>>() => d,
            () = &mut lapse => {
                let _ = link.close_with_error(token_lapsed()).await;
                return;
            }
            () = stopping(&mut stop) => break,
        };
        let delivery = match delivery {
            Ok(d) => d,
            Err(e) => {
                debug!(error = %e, "service send link ended");
                return;
            }
        };
        let (info, message) = delivery.into_parts();
        let settled = match send(&conn, message).await {
            Ok(()) => {
                Counters::add(&conn.shared.counters.c2d_sent);
                link.accept(info).await
            }
            Err(error) => link.reject(info, error).await,
        };
        if settled.is_err() {
            return;
        }
    }
    let _ = link.close().await;
}

async fn send(
    conn: &Conn,
    message: fe2o3_amqp::types::messaging::Message<Body<Value>>,
) -> Result<(), fe2o3_amqp::types::definitions::Error> {
    let (device, message) = c2d_from_service(message)
        .map_err(|e| hub_error(ErrorCode::ArgumentInvalid, &e.to_string()))?;
    let id =
        DeviceId::new(device).map_err(|e| hub_error(ErrorCode::ArgumentInvalid, &e.to_string()))?;
    conn.shared
        .config
        .hub
        .send(&id, message)
        .await
        .map(|_| ())
        .map_err(|e| hub_error(e.code(), &e.to_string()))
}
