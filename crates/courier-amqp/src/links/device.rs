//! A device's C2D link (`/devices/{id}/messages/devicebound`, wire spec
//! §3.4–3.6): locks messages from the hub and transfers them as the peer's
//! credit allows; the peer's disposition settles the lock (accepted →
//! complete, rejected → reject, released/modified → abandon).
//!
//! Bounds: at most `max_in_flight` unsettled transfers per link, and at most
//! one locked message waiting for credit. A message whose lock lapses before
//! credit arrives is not sent (the core redelivers it); a transfer whose lock
//! lapses before the peer settles it is forgotten here (the core has already
//! made it available again, and a late disposition's hub call fails with
//! lock lost, which is logged). When the link ends, unsettled locks are
//! abandoned so that the messages return at once.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use courier_core::{DeviceId, LockToken};
use fe2o3_amqp::link::{SendError, Sender};
use fe2o3_amqp::types::messaging::Outcome;
use fe2o3_amqp::Sendable;
use futures_util::future::{Fuse, FusedFuture, FutureExt};
use futures_util::stream::{FuturesUnordered, StreamExt};
use tokio::sync::watch;
use tracing::debug;

use super::{deadline, lapsed, stopping, token_lapsed};
use crate::connection::{Conn, Lease};
use crate::convert::device_message;
use crate::metrics::Counters;

/// How long a closing link waits for dispositions already on their way.
const CLOSE_DRAIN: Duration = Duration::from_secs(2);

/// What the peer did with one transfer; `None` if its lock lapsed first.
type Settled = (LockToken, Option<Result<Outcome, SendError>>);

pub(super) async fn run(
    conn: Arc<Conn>,
    mut link: Sender,
    id: DeviceId,
    lease: Lease,
    mut stop: watch::Receiver<bool>,
) {
    let hub = conn.shared.config.hub.clone();
    // The device counts as connected (`connectionState`) while a link is attached.
    let _presence = hub.connection_opened(&id);
    let config = &conn.shared.config;
    let lapse = lapsed(&conn, lease);
    tokio::pin!(lapse);
    let mut in_flight = FuturesUnordered::new();
    let mut locked: HashSet<LockToken> = HashSet::new();
    let mut lapsed_token = false;
    // The pending receive lives across loop turns: dropping it when another
    // branch wins could drop a message the hub has just locked for it, which
    // would then stay invisible until its lock lapses.
    let receive = Fuse::terminated();
    tokio::pin!(receive);
    loop {
        if receive.is_terminated() && in_flight.len() < config.max_in_flight.max(1) {
            // Parked in the engine until a message comes or the device is
            // deleted or disabled; dropped with the link.
            receive.set(hub.receive_parked(&id).fuse());
        }
        tokio::select! {
            d = &mut receive, if !receive.is_terminated() => {
                let delivery = match d {
                    Ok(Some(d)) => d,
                    Ok(None) => continue,
                    Err(e) => {
                        debug!(error = %e, "hub receive failed");
                        break;
                    }
                };
                let token = delivery.lock_token;
                let sendable = Sendable::builder().message(device_message(&delivery)).build();
                // Waits for credit, but not past the lock.
                let sent = tokio::time::timeout_at(
                    deadline(delivery.locked_until),
                    link.send_batchable(sendable),
                )
                .await;
                match sent {
                    Ok(Ok(fut)) => {
                        Counters::add(&conn.shared.counters.c2d_delivered);
                        locked.insert(token);
                        let until = deadline(delivery.locked_until);
                        in_flight.push(async move {
                            (token, tokio::time::timeout_at(until, fut).await.ok())
                        });
                    }
                    Ok(Err(e)) => {
                        debug!(error = %e, "C2D transfer failed");
                        let _ = hub.abandon(&id, token).await;
                        break;
                    }
                    Err(_) => debug!(device = %id, "no credit before the lock lapsed"),
                }
            }
            Some(settled) = in_flight.next(), if !in_flight.is_empty() => {
                let settled: Settled = settled;
                locked.remove(&settled.0);
                settle(&conn, &id, settled).await;
            }
            _ = link.on_detach() => break,
            () = &mut lapse => {
                lapsed_token = true;
                break;
            }
            () = stopping(&mut stop) => break,
        }
    }
    // Dispositions the peer sent before it went are honoured first: a
    // device may accept a message and close at once, and abandoning that
    // message instead would deliver it again.
    let drain = async {
        while let Some(settled) = in_flight.next().await {
            let settled: Settled = settled;
            locked.remove(&settled.0);
            settle(&conn, &id, settled).await;
        }
    };
    let _ = tokio::time::timeout(CLOSE_DRAIN, drain).await;
    for token in locked {
        let _ = hub.abandon(&id, token).await;
    }
    let _ = if lapsed_token {
        link.close_with_error(token_lapsed()).await
    } else {
        link.close().await
    };
}

async fn settle(conn: &Conn, id: &DeviceId, (token, outcome): Settled) {
    let hub = &conn.shared.config.hub;
    let result = match outcome {
        Some(Ok(Outcome::Accepted(_))) => {
            let r = hub.complete(id, token).await;
            if r.is_ok() {
                Counters::add(&conn.shared.counters.c2d_completed);
            }
            r
        }
        Some(Ok(Outcome::Rejected(_))) => hub.reject(id, token).await,
        // No SDK sends modified; treat it as abandon (wire spec §3.6).
        Some(Ok(Outcome::Released(_) | Outcome::Modified(_))) | Some(Err(_)) => {
            hub.abandon(id, token).await
        }
        #[allow(unreachable_patterns)]
        Some(Ok(_)) => hub.abandon(id, token).await,
        None => Ok(()),
    };
    if let Err(e) = result {
        debug!(device = %id, error = %e, "settling a C2D delivery failed");
    }
}
