//! The service's C2D send link (`/messages/devicebound`, wire spec §3.7):
//! each transfer's `to` names the device; the outcome is Accepted once the
//! message is durable, or Rejected with IoT Hub's condition and code.
//!
//! Transfers are pipelined: each one received becomes a hub send at once,
//! while earlier ones wait for their commit, so a sender with many messages
//! unsettled shares one `fdatasync` among them (the engine's group commit).
//! Outcomes that are ready together go out as one disposition. What the head
//! holds is bounded by the link credit, and by [`MAX_PENDING`] besides.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use courier_core::{DeviceId, ErrorCode};
use fe2o3_amqp::link::delivery::DeliveryInfo;
use fe2o3_amqp::link::Receiver;
use fe2o3_amqp::types::definitions;
use fe2o3_amqp::types::messaging::{Body, Message};
use fe2o3_amqp::types::primitives::Value;
use futures_util::stream::{FuturesUnordered, StreamExt as _};
use futures_util::FutureExt as _;
use tokio::sync::watch;
use tracing::debug;

use super::{hub_error, lapsed, stopping, token_lapsed};
use crate::connection::{Conn, Lease};
use crate::convert::c2d_from_service;
use crate::metrics::Counters;

/// Sends of one link waiting for their commit, at most; past this the link
/// stops taking transfers until some are answered.
const MAX_PENDING: usize = 256;

type Outcome = Result<(), definitions::Error>;
type Pending = Pin<Box<dyn Future<Output = (DeliveryInfo, Outcome)> + Send>>;

pub(super) async fn run(
    conn: Arc<Conn>,
    mut link: Receiver,
    lease: Lease,
    mut stop: watch::Receiver<bool>,
) {
    let lapse = lapsed(&conn, lease);
    tokio::pin!(lapse);
    let mut pending: FuturesUnordered<Pending> = FuturesUnordered::new();
    loop {
        tokio::select! {
            // `recv` is cancel-safe: a transfer is never lost when another branch wins.
            delivery = link.recv::<Body<Value>>(), if pending.len() < MAX_PENDING => {
                match delivery {
                    Ok(delivery) => {
                        let (info, message) = delivery.into_parts();
                        let conn = conn.clone();
                        pending.push(Box::pin(async move { (info, send(&conn, message).await) }));
                    }
                    Err(e) => {
                        // Sends already handed to the hub still complete there; their
                        // outcomes can no longer reach the sender.
                        debug!(error = %e, pending = pending.len(), "service send link ended");
                        return;
                    }
                }
            }
            Some(first) = pending.next(), if !pending.is_empty() => {
                if settle(&conn, &link, first, &mut pending).await.is_err() {
                    return;
                }
            }
            () = &mut lapse => {
                let _ = link.close_with_error(token_lapsed()).await;
                return;
            }
            () = stopping(&mut stop) => break,
        }
    }
    // Shutting down: answer what the hub already took, then close.
    while let Some(first) = pending.next().await {
        if settle(&conn, &link, first, &mut pending).await.is_err() {
            return;
        }
    }
    let _ = link.close().await;
}

/// Settles `first` and every other outcome already ready: the accepted ones
/// in one disposition, each refusal in its own (it carries its own error).
async fn settle(
    conn: &Conn,
    link: &Receiver,
    first: (DeliveryInfo, Outcome),
    pending: &mut FuturesUnordered<Pending>,
) -> Result<(), fe2o3_amqp::link::DispositionError> {
    let mut accepted = Vec::new();
    let mut next = Some(first);
    while let Some((info, outcome)) = next {
        match outcome {
            Ok(()) => accepted.push(info),
            Err(error) => link.reject(info, error).await?,
        }
        next = pending.next().now_or_never().flatten();
    }
    Counters::add_n(&conn.shared.counters.c2d_sent, accepted.len());
    match accepted.len() {
        0 => Ok(()),
        1 => link.accept(accepted.remove(0)).await,
        _ => link.accept_all(accepted).await,
    }
}

async fn send(conn: &Conn, message: Message<Body<Value>>) -> Outcome {
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
