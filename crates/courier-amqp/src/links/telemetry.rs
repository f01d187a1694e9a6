//! A device's telemetry link (`/devices/{id}/messages/events`): each transfer
//! is accepted and counted, and its body dropped; where D2C messages go is a
//! later decision (as in the MQTT head).

use std::sync::Arc;

use courier_core::DeviceId;
use fe2o3_amqp::link::Receiver;
use fe2o3_amqp::types::messaging::Body;
use fe2o3_amqp::types::primitives::Value;
use tokio::sync::watch;
use tracing::debug;

use super::{lapsed, stopping, token_lapsed};
use crate::connection::{Conn, Lease};
use crate::metrics::Counters;

pub(super) async fn run(
    conn: Arc<Conn>,
    mut link: Receiver,
    device: DeviceId,
    lease: Lease,
    mut stop: watch::Receiver<bool>,
) {
    // The device counts as connected (`connectionState`) while a link is attached.
    let _presence = conn.shared.config.hub.connection_opened(&device);
    let lapse = lapsed(&conn, lease);
    tokio::pin!(lapse);
    loop {
        tokio::select! {
            d = link.recv::<Body<Value>>() => match d {
                Ok(d) => {
                    if link.accept(&d).await.is_err() {
                        break;
                    }
                    Counters::add(&conn.shared.counters.d2c_accepted);
                }
                Err(e) => {
                    debug!(error = %e, "telemetry link ended");
                    return;
                }
            },
            () = &mut lapse => {
                let _ = link.close_with_error(token_lapsed()).await;
                return;
            }
            () = stopping(&mut stop) => break,
        }
    }
    let _ = link.close().await;
}
