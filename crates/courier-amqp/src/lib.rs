//! Courier's AMQP 1.0 head, speaking IoT Hub's conventions (wire spec §3):
//! SASL ANONYMOUS / `MSSBCBS` followed by CBS put-token on `$cbs`, SASL
//! PLAIN, or (X.509 devices) the TLS client certificate the server passes in
//! [`ConnectionInfo`]; the service's C2D send link (`/messages/devicebound`) and feedback
//! link (`/messages/serviceBound/feedback`); each device's C2D receive link
//! (`/devices/{id}/messages/devicebound`) and telemetry link
//! (`/devices/{id}/messages/events`).
//!
//! The head translates wire ↔ hub calls. It must not decide a message's fate:
//! locks, redelivery, delivery counts, dead-lettering and feedback are the
//! core's. It does not touch TLS or WebSocket framing: the server hands it an
//! unwrapped stream.
//!
//! # Decision: fe2o3-amqp's acceptor, not hand-written framing
//!
//! The AMQP engine (framing, SASL exchange, open/begin/attach handshakes,
//! flow control, heartbeats) is fe2o3-amqp's `acceptor`, observed working with
//! the Node (rhea) and Python (uAMQP) SDKs (`shared/spec/amqp-server-notes.md`)
//! given what this crate adds: TLS outside fe2o3 (the SDKs start TLS at once);
//! a header sniff choosing the SASL or the plain acceptor on one port
//! (`sniff.rs`); a SASL acceptor offering `MSSBCBS`, `ANONYMOUS` and `PLAIN`
//! (`sasl.rs`); CBS as application code (`links/cbs.rs`); per-link routing on
//! the attach's address (`connection.rs`); receiver settle mode `first` for
//! every link (uAMQP senders ask for `second` and hang on an unsettled answer).
//! Known limit: fe2o3 numbers delivery tags itself (4 bytes); the .NET SDKs
//! need 16-byte GUID tags (wire spec §0 item 10), which needs a patched fe2o3.
//!
//! # Who handles what
//!
//! | AMQP frame / event | handled by | Courier's part |
//! |---|---|---|
//! | protocol header | `sniff.rs` | SASL or plain acceptor; anything else closes the connection |
//! | sasl-mechanisms, -init, -outcome | fe2o3 acceptor | `sasl.rs`: mechanism list, PLAIN's identity |
//! | open, close, empty frames | fe2o3 connection engine | `connection.rs` closes on shutdown |
//! | begin, end | fe2o3 session engine | `connection.rs` accepts every session |
//! | attach | `connection.rs` (`next_incoming_attach`) | address → node, identity check per link; refusal = accept then detach with an error |
//! | flow | fe2o3 link engine | the peer's credit bounds `links/device.rs` and `links/feedback.rs` |
//! | transfer (in) | fe2o3 receiver link | `links/cbs.rs` put-token, `links/service.rs` → `Hub::send`, `links/telemetry.rs` |
//! | transfer (out) | fe2o3 sender link | `links/device.rs` C2D, `links/feedback.rs` batches, CBS replies |
//! | disposition (in) | fe2o3 session engine → the delivery's outcome | accepted → complete, rejected → reject, released/modified → abandon |
//! | disposition (out) | fe2o3 receiver link | Accepted, or Rejected with IoT Hub's condition and code |
//! | detach | link tasks | a link whose token lapsed is detached (`amqp:unauthorized-access`) |

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

mod address;
mod connection;
mod convert;
mod identity;
mod links;
mod metrics;
mod sasl;
mod sniff;

pub use metrics::AmqpMetrics;

/// What the AMQP head needs from the server.
#[derive(Clone)]
pub struct AmqpConfig {
    /// The hub engine.
    pub hub: courier_hub::Hub,
    /// Checks SAS tokens against the hub's host names.
    pub authenticator: Arc<courier_auth::Authenticator>,
    /// The hub's shared access policies.
    pub policies: Arc<Vec<courier_auth::Policy>>,
    /// C2D transfers awaiting the device's disposition per link (default 16).
    pub max_in_flight: usize,
    /// Time from accept to an open connection (default 10 s).
    pub connect_timeout: Duration,
    /// How long the feedback receive link waits on the hub before looking
    /// again (default 30 s). Device links wait without a deadline.
    pub poll_interval: Duration,
}

impl AmqpConfig {
    /// Defaults for `hub`.
    pub fn new(
        hub: courier_hub::Hub,
        authenticator: Arc<courier_auth::Authenticator>,
        policies: Arc<Vec<courier_auth::Policy>>,
    ) -> Self {
        AmqpConfig {
            hub,
            authenticator,
            policies,
            max_in_flight: 16,
            connect_timeout: Duration::from_secs(10),
            poll_interval: Duration::from_secs(30),
        }
    }
}

/// How the connection reached the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// AMQP over TLS (5671).
    Tls,
    /// AMQP over WebSockets (`/$iothub/websocket` on 443, subprotocol `AMQPWSB10`).
    WebSocket,
    /// Plain TCP (tests, or TLS terminated in front).
    Plain,
}

/// Facts about an accepted connection.
#[derive(Clone, Debug)]
pub struct ConnectionInfo {
    /// The peer's address.
    pub remote: SocketAddr,
    /// The TLS client certificate (leaf DER), if the peer sent one: an X.509
    /// device's identity, which needs no SASL and no CBS (wire spec §1.6).
    pub peer_certificate: Option<Arc<Vec<u8>>>,
    /// The transport.
    pub transport: Transport,
}

/// State shared by every connection of the head.
pub(crate) struct Shared {
    pub(crate) config: AmqpConfig,
    pub(crate) counters: metrics::Counters,
    pub(crate) shutdown: watch::Sender<bool>,
}

/// The AMQP head: serves connections the server accepted.
#[derive(Clone)]
pub struct AmqpHead {
    shared: Arc<Shared>,
}

impl AmqpHead {
    /// A head over `config`.
    pub fn new(config: AmqpConfig) -> Self {
        let (shutdown, _) = watch::channel(false);
        AmqpHead {
            shared: Arc::new(Shared {
                config,
                counters: metrics::Counters::default(),
                shutdown,
            }),
        }
    }

    /// Serves one already-accepted connection (TLS or WebSocket already unwrapped) until it ends.
    pub async fn serve_connection<S>(&self, stream: S, info: ConnectionInfo)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        connection::serve(self.shared.clone(), stream, info).await;
    }

    /// Closes every connection (server shutdown).
    pub fn shutdown(&self) {
        self.shared.shutdown.send_replace(true);
    }

    /// The head's counters.
    pub fn metrics(&self) -> AmqpMetrics {
        self.shared.counters.snapshot()
    }
}
