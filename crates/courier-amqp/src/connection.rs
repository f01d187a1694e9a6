//! One connection: sniff the header, run fe2o3's acceptor, accept sessions,
//! and route each attach to its link task by address (see the table in the
//! crate doc).

use std::sync::{Arc, Mutex};

use courier_core::{Clock as _, DeviceId};
use courier_hub::device_auth::DeviceAuthenticator;
use courier_hub::SystemClock;
use fe2o3_amqp::acceptor::{
    ConnectionAcceptor, LinkAcceptor, LinkEndpoint, ListenerSessionHandle, SessionAcceptor,
    SupportedReceiverSettleModes,
};
use fe2o3_amqp::types::definitions::{self, AmqpError, ReceiverSettleMode, Role};
use fe2o3_amqp::types::messaging::{Body, Message, TargetArchetype};
use fe2o3_amqp::types::performatives::Attach;
use fe2o3_amqp::types::primitives::Value;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, watch};
use tracing::debug;

use crate::address::{classify, Node};
use crate::identity::{Identities, Need};
use crate::links;
use crate::metrics::Counters;
use crate::sasl::CourierSasl;
use crate::sniff::{sniff, Opening, AMQP_HEADER};
use crate::{ConnectionInfo, Shared};

/// CBS replies waiting for the reply link, per connection.
const CBS_REPLY_QUEUE: usize = 16;

/// How long a TLS client certificate's grant lasts: the connection's life
/// (the certificate cannot lapse mid-connection the way a token does).
const CERTIFICATE_GRANT: courier_core::Timestamp = courier_core::Timestamp(i64::MAX);

/// A CBS reply on its way to the `$cbs` reply link.
pub(crate) type CbsReply = Message<Body<Value>>;

/// What every link task of one connection shares.
pub(crate) struct Conn {
    pub(crate) shared: Arc<Shared>,
    pub(crate) identities: Arc<Identities>,
    pub(crate) cbs_replies: mpsc::Sender<CbsReply>,
    /// Taken by the `$cbs` reply link while it is attached.
    pub(crate) cbs_reply_rx: Mutex<Option<mpsc::Receiver<CbsReply>>>,
    pub(crate) info: ConnectionInfo,
}

struct OpenGuard<'a>(&'a Counters);

impl Drop for OpenGuard<'_> {
    fn drop(&mut self) {
        Counters::sub(&self.0.connections_open);
    }
}

pub(crate) async fn serve<S>(shared: Arc<Shared>, stream: S, info: ConnectionInfo)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let counters = &shared.counters;
    Counters::add(&counters.connections_total);
    Counters::add(&counters.connections_open);
    let _open = OpenGuard(counters);
    let config = &shared.config;
    let identities = Arc::new(Identities::default());

    let sniffed = tokio::time::timeout(config.connect_timeout, sniff(stream)).await;
    let (opening, stream) = match sniffed {
        Ok(Ok(ok)) => ok,
        Ok(Err((e, mut stream))) => {
            debug!(remote = %info.remote, error = %e, "AMQP header refused");
            Counters::add(&counters.protocol_errors);
            // AMQP's answer to a header it does not speak: its own, then close.
            let _ = stream.write_all(&AMQP_HEADER).await;
            return;
        }
        Err(_) => return,
    };
    let accepted = match opening {
        Opening::Amqp => {
            let acceptor = ConnectionAcceptor::builder()
                .container_id("courier")
                .build();
            tokio::time::timeout(config.connect_timeout, acceptor.accept(stream)).await
        }
        Opening::Sasl => {
            let acceptor = ConnectionAcceptor::builder()
                .container_id("courier")
                .sasl_acceptor(CourierSasl {
                    config: config.clone(),
                    identities: identities.clone(),
                })
                .build();
            tokio::time::timeout(config.connect_timeout, acceptor.accept(stream)).await
        }
    };
    let mut connection = match accepted {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            debug!(remote = %info.remote, error = %e, "AMQP open failed");
            Counters::add(&counters.protocol_errors);
            return;
        }
        Err(_) => {
            debug!(remote = %info.remote, "AMQP open timed out");
            return;
        }
    };
    let (cbs_replies, rx) = mpsc::channel(CBS_REPLY_QUEUE);
    let conn = Arc::new(Conn {
        shared: shared.clone(),
        identities,
        cbs_replies,
        cbs_reply_rx: Mutex::new(Some(rx)),
        info,
    });
    let mut shutdown = shared.shutdown.subscribe();
    loop {
        let incoming = tokio::select! {
            s = connection.next_incoming_session() => s,
            _ = shutdown.wait_for(|stop| *stop) => None,
        };
        let Some(incoming) = incoming else { break };
        match SessionAcceptor::new()
            .accept_incoming_session(incoming, &mut connection)
            .await
        {
            Ok(session) => {
                tokio::spawn(serve_session(conn.clone(), session, shutdown.clone()));
            }
            Err(e) => {
                debug!(error = %e, "AMQP begin failed");
                break;
            }
        }
    }
    let _ = connection.close().await;
}

async fn serve_session(
    conn: Arc<Conn>,
    mut session: ListenerSessionHandle,
    mut shutdown: watch::Receiver<bool>,
) {
    // Every link answers with receiver settle mode `first`: uAMQP's service
    // sender asks for `second` and never completes a send otherwise.
    let acceptor = LinkAcceptor::builder()
        .supported_receiver_settle_modes(SupportedReceiverSettleModes::First)
        .fallback_receiver_settle_mode(ReceiverSettleMode::First)
        .build();
    loop {
        let attach = tokio::select! {
            a = session.next_incoming_attach() => a,
            _ = shutdown.wait_for(|stop| *stop) => None,
        };
        let Some(attach) = attach else { break };
        let route = route(&conn, &attach);
        let link = match acceptor.accept_incoming_attach(attach, &mut session).await {
            Ok(link) => link,
            Err(e) => {
                debug!(error = %e, "AMQP attach failed");
                continue;
            }
        };
        match route {
            Ok(route) => links::spawn(conn.clone(), route, link, shutdown.clone()),
            Err(error) => {
                debug!(?error, "AMQP link refused");
                tokio::spawn(refuse(link, error));
            }
        }
    }
    let _ = session.end().await;
}

/// A link's job, decided from its attach.
pub(crate) enum Route {
    /// The client's `$cbs` request link: we receive put-tokens.
    CbsRequests,
    /// The client's `$cbs` reply link: we send answers.
    CbsReplies,
    /// The service's C2D sends.
    ServiceSend(Lease),
    /// The service's feedback receiver.
    Feedback(Lease),
    /// A device's C2D receiver.
    DeviceBound(DeviceId, Lease),
    /// A device's telemetry sender.
    DeviceEvents(DeviceId, Lease),
}

/// What keeps a link authorized: the need and when its current grant lapses.
#[derive(Clone, Debug)]
pub(crate) struct Lease {
    pub(crate) need: Need,
    pub(crate) until: courier_core::Timestamp,
}

fn route(conn: &Conn, attach: &Attach) -> Result<Route, definitions::Error> {
    // The peer's role: a sending peer names the node in its target.
    let we_receive = attach.role == Role::Sender;
    let address = if we_receive {
        attach.target.as_deref().and_then(|t| match t {
            TargetArchetype::Target(t) => t.address.clone(),
            #[allow(unreachable_patterns)]
            _ => None,
        })
    } else {
        attach.source.as_deref().and_then(|s| s.address.clone())
    };
    let address = address.unwrap_or_default();
    let node = classify(&address).ok_or_else(|| {
        definitions::Error::new(
            AmqpError::NotFound,
            format!("AmqpAddressNotFound (404006): Courier serves no node at '{address}'"),
            None,
        )
    })?;
    let wrong_direction = || {
        definitions::Error::new(
            AmqpError::NotAllowed,
            format!(
                "'{address}' cannot be attached as a {}",
                if we_receive { "sender" } else { "receiver" }
            ),
            None,
        )
    };
    let lease = |need: Need| lease(conn, need);
    Ok(match (node, we_receive) {
        (Node::Cbs, true) => Route::CbsRequests,
        (Node::Cbs, false) => Route::CbsReplies,
        (Node::ServiceDevicebound, true) => Route::ServiceSend(lease(Need::Service)?),
        (Node::Feedback, false) => Route::Feedback(lease(Need::Service)?),
        (Node::DeviceBound(id), false) => {
            let lease = lease(Need::Device(id.clone()))?;
            Route::DeviceBound(device_id(id)?, lease)
        }
        (Node::DeviceEvents(id), true) => {
            let lease = lease(Need::Device(id.clone()))?;
            Route::DeviceEvents(device_id(id)?, lease)
        }
        _ => return Err(wrong_direction()),
    })
}

fn device_id(id: String) -> Result<DeviceId, definitions::Error> {
    DeviceId::new(id).map_err(|e| {
        definitions::Error::new(
            AmqpError::NotFound,
            format!("DeviceNotFound (404001): {e}"),
            None,
        )
    })
}

fn lease(conn: &Conn, need: Need) -> Result<Lease, definitions::Error> {
    let config = &conn.shared.config;
    let unauthorized = |why: String| {
        definitions::Error::new(
            AmqpError::UnauthorizedAccess,
            format!("IotHubUnauthorizedAccess (401002): {why}"),
            None,
        )
    };
    let gate = DeviceAuthenticator::new(&config.hub, &config.authenticator, &config.policies);
    if let Need::Device(id) = &need {
        // A policy token may name any device; the link needs a real, enabled one.
        gate.require_enabled(id)
            .map_err(|e| unauthorized(e.to_string()))?;
    }
    let now = SystemClock.now();
    let until = conn.identities.valid_until(&need, now);
    if let (None, Need::Device(id), Some(cert)) = (until, &need, &conn.info.peer_certificate) {
        // An X.509 device: no CBS, its TLS client certificate is its identity
        // for as long as the connection lasts.
        let principal = gate
            .device_by_certificate(id, cert)
            .map_err(|e| unauthorized(e.to_string()))?;
        conn.identities.grant(principal, CERTIFICATE_GRANT);
        return Ok(Lease {
            need,
            until: CERTIFICATE_GRANT,
        });
    }
    let until = until.ok_or_else(|| {
        unauthorized(match &need {
            Need::Service => {
                "no valid token with ServiceConnect on this connection; put one on $cbs first"
                    .into()
            }
            Need::Device(id) => format!(
                "no valid token for device '{id}' on this connection; put one on $cbs first"
            ),
        })
    })?;
    Ok(Lease { need, until })
}

async fn refuse(link: LinkEndpoint, error: definitions::Error) {
    let _ = match link {
        LinkEndpoint::Sender(s) => s.close_with_error(error).await,
        LinkEndpoint::Receiver(r) => r.close_with_error(error).await,
    };
}
