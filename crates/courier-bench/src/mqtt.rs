//! One bench device on MQTT 3.1.1 over TLS, as an IoT SDK connects: CONNECT
//! with a SAS token, SUBSCRIBE to its C2D topic, then PUBACK every message.
//!
//! Lean on purpose: one task per connection; each read decodes every packet
//! it holds and answers all their PUBACKs with one write; latency samples go
//! to a per-device vector, counters are bumped once per read.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{ConnectReturnCode, Packet, PubAck, Subscribe, SubscribeReasonCode};
use rumqttc::mqttbytes::{Error as CodecError, QoS};
use rumqttc::Connect;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::TlsConnector;

/// Largest packet accepted from the hub.
const MAX_PACKET: usize = 1 << 20;
/// How long the hub gets to answer CONNECT and SUBSCRIBE.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Free space kept in the read buffer: many PUBLISHes per read.
const READ_CHUNK: usize = 32 * 1024;

/// Where and as whom a device connects.
pub(crate) struct DeviceLogin<'a> {
    pub(crate) tls: Arc<ClientConfig>,
    pub(crate) host: &'a str,
    pub(crate) port: u16,
    pub(crate) server_name: ServerName<'static>,
    pub(crate) hub_host_name: &'a str,
    pub(crate) device_id: &'a str,
    pub(crate) token: &'a str,
}

/// Counters every device adds to, read by the progress line.
#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) sent: AtomicU64,
    pub(crate) delivered: AtomicU64,
}

/// What one device saw by the time it was told to stop.
#[derive(Default)]
pub(crate) struct DeviceOutcome {
    /// Send→receive latency of each first delivery, in microseconds.
    pub(crate) latencies: Vec<u32>,
    pub(crate) delivered: u64,
    pub(crate) redelivered: u64,
    /// When the PUBACK of its last message was written.
    pub(crate) last_ack: Option<Instant>,
    /// What ended the connection early, if anything did.
    pub(crate) error: Option<&'static str>,
}

/// A connected, subscribed device.
pub(crate) struct MqttDevice {
    stream: TlsStream<TcpStream>,
    received: BytesMut,
}

impl MqttDevice {
    /// Connects over TLS, sends CONNECT and SUBSCRIBE and waits for their answers.
    pub(crate) async fn connect(login: DeviceLogin<'_>) -> Result<Self, String> {
        let work = async {
            let tcp = TcpStream::connect((login.host, login.port))
                .await
                .map_err(|e| format!("TCP connect to {}:{}: {e}", login.host, login.port))?;
            tcp.set_nodelay(true).map_err(|e| e.to_string())?;
            let stream = TlsConnector::from(login.tls)
                .connect(login.server_name, tcp)
                .await
                .map_err(|e| format!("TLS handshake: {e}"))?;
            let mut device = Self {
                stream,
                received: BytesMut::with_capacity(4096),
            };
            let mut connect = Connect::new(login.device_id);
            // No keep-alive: the bench holds no timer per connection and the
            // hub arms none (a keep-alive of 0 disables it in MQTT 3.1.1).
            connect.keep_alive = 0;
            // Every SDK connects with a persistent session.
            connect.clean_session = false;
            connect.set_login(
                format!(
                    "{}/{}/?api-version=2021-04-12",
                    login.hub_host_name, login.device_id
                ),
                login.token,
            );
            device.send(Packet::Connect(connect)).await?;
            match device.next_packet().await? {
                Packet::ConnAck(ack) if ack.code == ConnectReturnCode::Success => {}
                Packet::ConnAck(ack) => return Err(format!("CONNACK {:?}", ack.code)),
                other => return Err(format!("expected CONNACK, got {other:?}")),
            }
            let filter = format!("devices/{}/messages/devicebound/#", login.device_id);
            let mut subscribe = Subscribe::new(filter, QoS::AtLeastOnce);
            subscribe.pkid = 1;
            device.send(Packet::Subscribe(subscribe)).await?;
            match device.next_packet().await? {
                Packet::SubAck(ack)
                    if ack.return_codes == [SubscribeReasonCode::Success(QoS::AtLeastOnce)] => {}
                other => return Err(format!("expected SUBACK granting QoS 1, got {other:?}")),
            }
            Ok(device)
        };
        tokio::time::timeout(HANDSHAKE_TIMEOUT, work)
            .await
            .map_err(|_| format!("no CONNACK and SUBACK within {HANDSHAKE_TIMEOUT:?}"))?
    }

    async fn send(&mut self, packet: Packet) -> Result<(), String> {
        let mut bytes = BytesMut::new();
        packet
            .write(&mut bytes, MAX_PACKET)
            .map_err(|e| format!("encode: {e}"))?;
        self.stream
            .write_all(&bytes)
            .await
            .map_err(|e| format!("write: {e}"))?;
        self.stream.flush().await.map_err(|e| format!("write: {e}"))
    }

    async fn next_packet(&mut self) -> Result<Packet, String> {
        loop {
            match Packet::read(&mut self.received, MAX_PACKET) {
                Ok(packet) => return Ok(packet),
                Err(CodecError::InsufficientBytes(_)) => {}
                Err(e) => return Err(format!("malformed packet from the hub: {e}")),
            }
            match self.stream.read_buf(&mut self.received).await {
                Ok(0) => return Err("the hub closed the connection".into()),
                Ok(_) => {}
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    }

    /// Receives and PUBACKs messages until `stop` changes, then disconnects.
    ///
    /// A message's body starts with its send time in nanoseconds since `epoch`
    /// (little-endian u64), so latency needs no clock shared with the hub.
    pub(crate) async fn receive(
        mut self,
        epoch: Instant,
        expected: usize,
        counters: Arc<Counters>,
        mut stop: watch::Receiver<bool>,
    ) -> DeviceOutcome {
        let mut outcome = DeviceOutcome {
            latencies: Vec::with_capacity(expected),
            ..DeviceOutcome::default()
        };
        let mut acks = BytesMut::with_capacity(256);
        loop {
            if self.received.capacity() - self.received.len() < READ_CHUNK / 2 {
                self.received.reserve(READ_CHUNK);
            }
            tokio::select! {
                biased;
                _ = stop.changed() => break,
                read = self.stream.read_buf(&mut self.received) => match read {
                    Ok(0) => { outcome.error = Some("mqtt: the hub closed the connection"); break; }
                    Err(_) => { outcome.error = Some("mqtt: read failed"); break; }
                    Ok(_) => {}
                },
            }
            let now = u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
            let mut first_deliveries = 0_u64;
            let decoded = loop {
                match Packet::read(&mut self.received, MAX_PACKET) {
                    Ok(Packet::Publish(publish)) => {
                        if publish.qos != QoS::AtMostOnce
                            && PubAck::new(publish.pkid).write(&mut acks).is_err()
                        {
                            break Err("mqtt: cannot encode PUBACK");
                        }
                        if publish.dup {
                            outcome.redelivered += 1;
                        } else {
                            first_deliveries += 1;
                            outcome
                                .latencies
                                .push(latency_micros(&publish.payload, now));
                        }
                    }
                    Ok(Packet::PingResp) => {}
                    Ok(_) => break Err("mqtt: unexpected packet from the hub"),
                    Err(CodecError::InsufficientBytes(_)) => break Ok(()),
                    Err(_) => break Err("mqtt: malformed packet from the hub"),
                }
            };
            if !acks.is_empty() {
                let written = async {
                    self.stream.write_all(&acks).await?;
                    self.stream.flush().await
                };
                if written.await.is_err() {
                    outcome.error = Some("mqtt: write failed");
                    break;
                }
                acks.clear();
                outcome.last_ack = Some(Instant::now());
            }
            if first_deliveries > 0 {
                outcome.delivered += first_deliveries;
                counters
                    .delivered
                    .fetch_add(first_deliveries, Ordering::Relaxed);
            }
            if let Err(error) = decoded {
                outcome.error = Some(error);
                break;
            }
        }
        if outcome.error.is_none() {
            let _ = self.send(Packet::Disconnect).await;
            let _ = self.stream.shutdown().await;
        }
        outcome
    }
}

/// Microseconds from the timestamp at the start of `body` to `now` (both in
/// nanoseconds since the run's epoch); 0 if the body is too short.
pub(crate) fn latency_micros(body: &[u8], now_nanos: u64) -> u32 {
    let Some(stamp) = body.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()) else {
        return 0;
    };
    let sent = u64::from_le_bytes(stamp);
    u32::try_from(now_nanos.saturating_sub(sent) / 1000).unwrap_or(u32::MAX)
}

/// A body of `len` bytes (at least 8) starting with `sent_nanos`.
pub(crate) fn stamped_body(len: usize, sent_nanos: u64) -> Vec<u8> {
    let mut body = vec![0_u8; len.max(8)];
    body[..8].copy_from_slice(&sent_nanos.to_le_bytes());
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_is_read_back_from_the_body() {
        let body = stamped_body(64, 5_000_000);
        assert_eq!(body.len(), 64);
        assert_eq!(latency_micros(&body, 5_750_000), 750);
        // A clock that did not move, or a short body, gives 0 rather than a wrap.
        assert_eq!(latency_micros(&body, 4_000_000), 0);
        assert_eq!(latency_micros(&body[..7], 9_000_000), 0);
    }
}
