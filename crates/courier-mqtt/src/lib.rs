//! Courier's MQTT 3.1.1 head, speaking IoT Hub's conventions (wire spec §2):
//! CONNECT with the device id as client id, `{host}/{deviceId}/?…` as user
//! name and a SAS token (or a self-signed client certificate) as credentials;
//! C2D as QoS 1 PUBLISHes on `devices/{id}/messages/devicebound/{bag}` after
//! the device subscribes to `devices/{id}/messages/devicebound/#`; PUBACK as
//! complete; D2C PUBLISHes on `devices/{id}/messages/events/…`.
//!
//! The head translates wire ↔ hub calls. It must not decide a message's fate:
//! redelivery after a lapsed lock, delivery counts, dead-lettering and
//! feedback are the core's. What it does keep is per-connection protocol
//! state (`connection.rs`: a state machine without I/O, driven by events) and,
//! in memory, each device's persistent-session subscription (CleanSession 0).
//! It does not touch TLS or WebSocket framing: the server hands it an
//! unwrapped stream.
//!
//! D2C: telemetry is accepted (PUBACK at QoS 1), counted in
//! [`MqttMetrics::d2c_accepted`] and logged at debug level, and its body is
//! dropped; where device-to-cloud messages go is a later decision. Will
//! messages are ignored for the same reason. Modules (client id
//! `{device}/{module}`) are refused with CONNACK 2 (identifier rejected) for
//! now; twin and method topics are refused per filter with SUBACK 0x80.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;

mod auth;
mod connection;
mod driver;
mod metrics;
mod session;
mod topic;
mod username;

pub use metrics::MqttMetrics;

/// The topic functions, for `benches/topic.rs` only: not part of the API.
#[doc(hidden)]
pub mod bench_api {
    use courier_core::{Delivery, Timestamp};

    /// The C2D PUBLISH topic `devices/{id}/messages/devicebound/{bag}`.
    pub fn c2d_topic(device_id: &str, delivery: &Delivery) -> String {
        crate::topic::c2d_topic(device_id, delivery)
    }

    /// `ts` in .NET's round-trip format, as `%24.exp` carries it.
    pub fn dotnet_round_trip(ts: Timestamp) -> String {
        crate::topic::dotnet_round_trip(ts)
    }

    /// Whether `topic` is device `device_id`'s D2C topic.
    pub fn is_d2c_topic(topic: &str, device_id: &str) -> bool {
        crate::topic::is_d2c_topic(topic, device_id)
    }
}

/// What the MQTT head needs from the server.
#[derive(Clone)]
pub struct MqttConfig {
    /// The hub engine.
    pub hub: courier_hub::Hub,
    /// Checks SAS tokens and the user name's host against the hub's host names.
    pub authenticator: Arc<courier_auth::Authenticator>,
    /// The hub's shared access policies (DeviceConnect tokens).
    pub policies: Arc<Vec<courier_auth::Policy>>,
    /// C2D PUBLISHes awaiting PUBACK per connection (default 16).
    pub max_in_flight: usize,
    /// Largest packet accepted from a client, in bytes (default 512 KiB).
    pub max_packet_size: usize,
    /// Largest client keep-alive honoured (IoT Hub: 1177 s); the server
    /// closes after 1.5 × the keep-alive without traffic, so at most ~1766 s.
    pub max_keep_alive: Duration,
    /// Time from accept to CONNECT (default 10 s).
    pub connect_timeout: Duration,
}

impl MqttConfig {
    /// IoT Hub's limits for `hub`.
    pub fn new(
        hub: courier_hub::Hub,
        authenticator: Arc<courier_auth::Authenticator>,
        policies: Arc<Vec<courier_auth::Policy>>,
    ) -> Self {
        MqttConfig {
            hub,
            authenticator,
            policies,
            max_in_flight: 16,
            max_packet_size: 512 * 1024,
            max_keep_alive: Duration::from_secs(1177),
            connect_timeout: Duration::from_secs(10),
        }
    }
}

/// How the connection reached the server.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    /// MQTT over TLS (8883).
    Tls,
    /// MQTT over WebSockets (`/$iothub/websocket` on 443).
    WebSocket,
    /// Plain TCP (tests, or TLS terminated in front).
    Plain,
}

/// Facts about an accepted connection.
#[derive(Clone, Debug)]
pub struct ConnectionInfo {
    /// The peer's address.
    pub remote: SocketAddr,
    /// The TLS client certificate (leaf DER), if the peer sent one.
    pub peer_certificate: Option<Arc<Vec<u8>>>,
    /// The transport.
    pub transport: Transport,
}

/// State shared by every connection of the head.
pub(crate) struct Shared {
    pub(crate) config: MqttConfig,
    pub(crate) sessions: session::Sessions,
    pub(crate) counters: metrics::Counters,
    pub(crate) shutdown: watch::Sender<bool>,
}

/// The MQTT head: serves connections the server accepted.
#[derive(Clone)]
pub struct MqttHead {
    shared: Arc<Shared>,
}

impl MqttHead {
    /// A head over `config`.
    pub fn new(config: MqttConfig) -> Self {
        let (shutdown, _) = watch::channel(false);
        MqttHead {
            shared: Arc::new(Shared {
                config,
                sessions: session::Sessions::default(),
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
        driver::serve(self.shared.clone(), stream, info).await;
    }

    /// Closes every connection (server shutdown).
    pub fn shutdown(&self) {
        self.shared.shutdown.send_replace(true);
    }

    /// The head's counters.
    pub fn metrics(&self) -> MqttMetrics {
        self.shared.counters.snapshot()
    }
}
