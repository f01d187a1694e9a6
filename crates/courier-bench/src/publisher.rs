//! Broker mode's stand-in for the service: an MQTT connection that publishes
//! QoS 1 messages to the devices' C2D topics, with a window of PUBLISHes in
//! flight, flat out or paced to a target rate.
//!
//! Lean like the devices: one task per connection, every PUBLISH that is due
//! encoded into one buffer and written at once, PUBACKs counted per read, no
//! per-message allocation (topic and body buffers are reused).

use std::fmt::Write as _;
use std::net::IpAddr;
use std::sync::atomic::Ordering;
use std::time::Instant;

use bytes::{BufMut as _, BytesMut};
use rumqttc::mqttbytes::v4::Packet;
use rumqttc::mqttbytes::Error as CodecError;
use rumqttc::Connect;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::job::SendJob;
use crate::socket::{Connection, Endpoint, MAX_PACKET};

/// Free space kept in the read buffer.
const READ_CHUNK: usize = 16 * 1024;

/// One connected publisher.
pub(crate) struct Publisher {
    connection: Connection,
}

impl Publisher {
    /// Connects as client `client_id` with a clean session: a publisher needs
    /// no state kept for it, only its PUBACKs.
    pub(crate) async fn connect(
        endpoint: &Endpoint,
        source: Option<IpAddr>,
        client_id: &str,
    ) -> Result<Self, String> {
        let mut connect = Connect::new(client_id);
        connect.keep_alive = 0;
        connect.clean_session = true;
        Ok(Self {
            connection: Connection::open(endpoint, source, connect).await?,
        })
    }

    /// Publishes until every message is taken and acknowledged; returns when
    /// its last PUBACK arrived (`None` if none did).
    /// `window`: unacknowledged PUBLISHes on the connection.
    pub(crate) async fn run(self, job: SendJob, window: u32) -> Option<Instant> {
        let mut connection = self.connection;
        let mut out = BytesMut::with_capacity(4096);
        let mut topic = String::with_capacity(160);
        let mut body = vec![0_u8; job.body_bytes.max(8)];
        let mut in_flight = 0_u32;
        let mut packet_id = 0_u16;
        // A message taken but not yet due (rate mode).
        let mut waiting: Option<u64> = None;
        let mut exhausted = false;
        let mut last_ack = None;
        loop {
            let now = Instant::now();
            while in_flight < window {
                let number = match waiting.take() {
                    Some(number) => number,
                    None if exhausted => break,
                    None => match job.take() {
                        Some(number) => number,
                        None => {
                            exhausted = true;
                            break;
                        }
                    },
                };
                if job.due(number).is_some_and(|due| due > now) {
                    waiting = Some(number);
                    break;
                }
                let Some(device) = job.device(number) else {
                    break;
                };
                topic.clear();
                let _ = write!(
                    topic,
                    "devices/{device}/messages/devicebound/%24.mid={number}\
                     &%24.to=%2Fdevices%2F{device}%2Fmessages%2Fdevicebound"
                );
                let stamp = job.stamp();
                body[..8].copy_from_slice(&stamp.to_le_bytes());
                packet_id = packet_id.checked_add(1).unwrap_or(1);
                if encode_publish_qos1(&mut out, &topic, packet_id, &body).is_err() {
                    job.errors.add("publish: cannot encode PUBLISH", 1);
                    continue;
                }
                in_flight += 1;
            }
            if !out.is_empty() {
                let written = async {
                    connection.stream.write_all(&out).await?;
                    connection.stream.flush().await
                };
                if written.await.is_err() {
                    job.errors
                        .add("publish: write failed", u64::from(in_flight.max(1)));
                    return last_ack;
                }
                out.clear();
            }
            if in_flight == 0 && waiting.is_none() && exhausted {
                connection.close().await;
                return last_ack;
            }
            if connection.received.capacity() - connection.received.len() < READ_CHUNK / 2 {
                connection.received.reserve(READ_CHUNK);
            }
            let next_due = waiting.and_then(|number| job.due(number));
            tokio::select! {
                read = connection.stream.read_buf(&mut connection.received) => match read {
                    Ok(0) | Err(_) => {
                        job.errors.add("publish: connection lost", u64::from(in_flight.max(1)));
                        return last_ack;
                    }
                    Ok(_) => {}
                },
                () = tokio::time::sleep_until(next_due.unwrap_or(now).into()), if next_due.is_some() => continue,
            }
            let mut acked = 0_u32;
            let decoded = loop {
                match Packet::read(&mut connection.received, MAX_PACKET) {
                    Ok(Packet::PubAck(_)) => acked += 1,
                    Ok(Packet::PingResp) => {}
                    Ok(_) => break Err("publish: unexpected packet from the broker"),
                    Err(CodecError::InsufficientBytes(_)) => break Ok(()),
                    Err(_) => break Err("publish: malformed packet from the broker"),
                }
            };
            if acked > 0 {
                // A QoS 1 server acknowledges in order (MQTT 3.1.1 §4.6), so a
                // count is enough: no per-packet-id bookkeeping.
                in_flight = in_flight.saturating_sub(acked);
                job.counters
                    .sent
                    .fetch_add(u64::from(acked), Ordering::Relaxed);
                last_ack = Some(Instant::now());
            }
            if let Err(error) = decoded {
                job.errors.add(error, u64::from(in_flight.max(1)));
                return last_ack;
            }
        }
    }
}

/// Appends a QoS 1 PUBLISH (no DUP, no retain) to `out`.
fn encode_publish_qos1(
    out: &mut BytesMut,
    topic: &str,
    packet_id: u16,
    payload: &[u8],
) -> Result<(), &'static str> {
    let topic_len = u16::try_from(topic.len()).map_err(|_| "topic longer than 65,535 bytes")?;
    let mut remaining = 2 + topic.len() + 2 + payload.len();
    if remaining > MAX_PACKET {
        return Err("packet too large");
    }
    out.reserve(remaining + 5);
    out.put_u8(0x32);
    loop {
        // Variable-length integer: 7 bits per byte, high bit = more follows.
        let byte = (remaining % 128) as u8;
        remaining /= 128;
        if remaining == 0 {
            out.put_u8(byte);
            break;
        }
        out.put_u8(byte | 0x80);
    }
    out.put_u16(topic_len);
    out.put_slice(topic.as_bytes());
    out.put_u16(packet_id);
    out.put_slice(payload);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::mqttbytes::QoS;

    #[test]
    fn publishes_decode_as_the_codec_reads_them() {
        let mut out = BytesMut::new();
        let topic = "devices/bench-7/messages/devicebound/%24.mid=42";
        for (packet_id, body_len) in [(1_u16, 8_usize), (65_535, 200), (9, 20_000)] {
            let body: Vec<u8> = (0..body_len).map(|i| i as u8).collect();
            encode_publish_qos1(&mut out, topic, packet_id, &body).unwrap();
            match Packet::read(&mut out, MAX_PACKET).unwrap() {
                Packet::Publish(publish) => {
                    assert_eq!(publish.qos, QoS::AtLeastOnce);
                    assert!(!publish.dup && !publish.retain);
                    assert_eq!(publish.pkid, packet_id);
                    assert_eq!(publish.topic, topic);
                    assert_eq!(&publish.payload[..], &body[..]);
                }
                other => panic!("not a PUBLISH: {other:?}"),
            }
            assert!(out.is_empty());
        }
    }

    #[test]
    fn oversized_publishes_are_refused() {
        let mut out = BytesMut::new();
        let long_topic = "t".repeat(70_000);
        assert!(encode_publish_qos1(&mut out, &long_topic, 1, b"12345678").is_err());
        assert!(encode_publish_qos1(&mut out, "t", 1, &vec![0; MAX_PACKET]).is_err());
        assert!(out.is_empty());
    }
}
