//! One bench device on MQTT 3.1.1, as an IoT SDK connects: CONNECT with a
//! persistent session (with a SAS token on the hub, anonymously on a plain
//! broker), SUBSCRIBE QoS 1 to its C2D topic, then PUBACK every message.
//!
//! Lean on purpose: one task per connection; each read decodes every packet
//! it holds and answers all their PUBACKs with one write; latency samples go
//! to a per-device vector, counters are bumped once per read.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{Packet, PubAck, Subscribe, SubscribeReasonCode};
use rumqttc::mqttbytes::{Error as CodecError, QoS};
use rumqttc::Connect;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::watch;

use crate::socket::{Connection, Endpoint, HANDSHAKE_TIMEOUT, MAX_PACKET};

/// Free space kept in the read buffer: many PUBLISHes per read.
const READ_CHUNK: usize = 32 * 1024;

/// Where and as whom a device connects.
pub(crate) struct DeviceLogin<'a> {
    pub(crate) endpoint: &'a Endpoint,
    /// The loopback address to connect from, when the run spreads connections.
    pub(crate) source: Option<IpAddr>,
    pub(crate) device_id: &'a str,
    /// User name and password: IoT Hub's `{host}/{id}/?api-version=…` and a
    /// SAS token on the hub; `None` (anonymous) on a plain broker.
    pub(crate) credentials: Option<(String, &'a str)>,
    /// Connect once with a clean session first, so that a session a plain
    /// broker kept from an earlier run (and its queued messages) is gone; the
    /// hub needs no such step (its bench devices are created afresh).
    pub(crate) clear_old_session: bool,
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

impl DeviceOutcome {
    /// An empty outcome with room for `expected` latency samples.
    pub(crate) fn expecting(expected: usize) -> Self {
        Self {
            latencies: Vec::with_capacity(expected),
            ..Self::default()
        }
    }
}

/// A connected, subscribed device.
pub(crate) struct MqttDevice {
    connection: Connection,
}

impl MqttDevice {
    /// Connects, sends CONNECT and SUBSCRIBE and waits for their answers.
    pub(crate) async fn connect(login: DeviceLogin<'_>) -> Result<Self, String> {
        let connect = |clean_session| {
            let mut connect = Connect::new(login.device_id);
            // No keep-alive: the bench holds no timer per connection and the
            // server arms none (a keep-alive of 0 disables it in MQTT 3.1.1).
            connect.keep_alive = 0;
            connect.clean_session = clean_session;
            if let Some((user_name, password)) = &login.credentials {
                connect.set_login(user_name.clone(), *password);
            }
            connect
        };
        if login.clear_old_session {
            Connection::open(login.endpoint, login.source, connect(true))
                .await?
                .close()
                .await;
        }
        // Every SDK connects with a persistent session.
        let mut connection = Connection::open(login.endpoint, login.source, connect(false)).await?;
        let filter = format!("devices/{}/messages/devicebound/#", login.device_id);
        let mut subscribe = Subscribe::new(filter, QoS::AtLeastOnce);
        subscribe.pkid = 1;
        let subscribed = async {
            connection.send(Packet::Subscribe(subscribe)).await?;
            match connection.next_packet().await? {
                Packet::SubAck(ack)
                    if ack.return_codes == [SubscribeReasonCode::Success(QoS::AtLeastOnce)] =>
                {
                    Ok(())
                }
                other => Err(format!("expected SUBACK granting QoS 1, got {other:?}")),
            }
        };
        tokio::time::timeout(HANDSHAKE_TIMEOUT, subscribed)
            .await
            .map_err(|_| format!("no SUBACK within {HANDSHAKE_TIMEOUT:?}"))??;
        Ok(Self { connection })
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
        let mut outcome = DeviceOutcome::expecting(expected);
        let mut acks = BytesMut::with_capacity(256);
        let connection = &mut self.connection;
        loop {
            if connection.received.capacity() - connection.received.len() < READ_CHUNK / 2 {
                connection.received.reserve(READ_CHUNK);
            }
            tokio::select! {
                biased;
                _ = stop.changed() => break,
                read = connection.stream.read_buf(&mut connection.received) => match read {
                    Ok(0) => { outcome.error = Some("mqtt: the server closed the connection"); break; }
                    Err(_) => { outcome.error = Some("mqtt: read failed"); break; }
                    Ok(_) => {}
                },
            }
            let now = u64::try_from(epoch.elapsed().as_nanos()).unwrap_or(u64::MAX);
            let mut first_deliveries = 0_u64;
            let decoded = loop {
                match Packet::read(&mut connection.received, MAX_PACKET) {
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
                    Ok(_) => break Err("mqtt: unexpected packet from the server"),
                    Err(CodecError::InsufficientBytes(_)) => break Ok(()),
                    Err(_) => break Err("mqtt: malformed packet from the server"),
                }
            };
            if !acks.is_empty() {
                let written = async {
                    connection.stream.write_all(&acks).await?;
                    connection.stream.flush().await
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
            self.connection.close().await;
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
