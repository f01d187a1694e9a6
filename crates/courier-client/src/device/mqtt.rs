//! The device's MQTT 3.1.1 transport (wire spec §2), over TLS (8883) or a
//! WebSocket (`mqtt` on 443): CONNECT with the SAS token as password,
//! SUBSCRIBE to `devices/{id}/messages/devicebound/#` at QoS 1, each C2D
//! PUBLISH into the inbox with its properties decoded from the topic, and
//! PUBACK when the application completes it.
//!
//! One task serves the socket: it reads packets unless a message waits for
//! room in the inbox (backpressure), writes what is queued, answers
//! settlements, sends PINGREQ when idle and renews the token by
//! reconnecting (MQTT has no way to present a new token in place).

mod bag;
#[cfg(test)]
mod tests;
mod wire;

use std::collections::HashSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::v4::{Packet, PubAck, Publish, Subscribe};
use rumqttc::mqttbytes::QoS;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::session::{Session, SessionEnd, Settle};
use crate::credentials::Token;
use crate::message::Delivery;
use crate::net::BoxStream;
use crate::{ClientError, Outcome, ReceivedMessage};

/// Largest packet accepted from the hub (MQTT remaining length): a 256 KiB
/// body, the longest topic MQTT can carry, and the packet id.
const MAX_PACKET: usize = 256 * 1024 + 2 + 65_535 + 2;
/// Free space asked of the read buffer before each read.
const READ_CHUNK: usize = 16 * 1024;
/// Past this many unwritten bytes, settlements wait (no new PUBACKs queue up).
const WRITE_HIGH_WATER: usize = 64 * 1024;
/// The packet id of the one SUBSCRIBE each connection sends.
const SUBSCRIBE_PKID: u16 = 1;
/// Longest wait for the last packets (DISCONNECT, PUBACKs) to go out.
const CLOSE_FLUSH: Duration = Duration::from_secs(5);
/// Most time left between a renewal and the token's expiry.
const EXPIRY_MARGIN: Duration = Duration::from_secs(30);

/// Serves one connection (see `Session` for the contract).
pub(crate) async fn run(session: Session<'_>, websocket: bool) -> SessionEnd {
    let endpoint = &session.config.endpoint;
    let timeout = session.config.options.operation_timeout;
    let connect = async {
        if websocket {
            let ws = endpoint.connect_ws("mqtt", timeout).await?;
            Ok::<BoxStream, ClientError>(Box::new(ws))
        } else {
            let port = endpoint.connectivity.ports.mqtt;
            let tls = endpoint.connect_tls(port, timeout).await?;
            Ok::<BoxStream, ClientError>(Box::new(tls))
        }
    };
    let stream = tokio::select! {
        stream = connect => match stream {
            Ok(stream) => stream,
            Err(e) => return SessionEnd::Failed(e),
        },
        () = session.closing.cancelled() => return SessionEnd::Closed,
    };
    let transport = if websocket { "MqttWs" } else { "Mqtt" };
    serve(session, stream, transport).await
}

/// Speaks MQTT over an open byte stream until the connection ends.
async fn serve<S>(session: Session<'_>, stream: S, transport: &'static str) -> SessionEnd
where
    S: AsyncRead + AsyncWrite + Send + Unpin,
{
    let config = session.config;
    let token = match config.credentials.token(SystemTime::now()) {
        Ok(token) => token,
        Err(e) => return SessionEnd::Failed(e),
    };
    let connect = wire::connect(
        &config.hub_host,
        &config.device_id,
        token.as_ref().map(|t| t.value.as_str()),
        config.options.keep_alive,
    );
    let (reader, writer) = tokio::io::split(stream);
    let mut link = Link::new(session, reader, writer, transport, token.as_ref());
    let end = match link.send(&Packet::Connect(connect)) {
        Ok(()) => link.run().await,
        Err(e) => SessionEnd::Failed(e),
    };
    for reply in link.acked.drain(..) {
        let _ = reply.send(Err(ClientError::lock_lost_locally(
            "the connection closed before the acknowledgement was sent",
        )));
    }
    end
}

/// How far the connection has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// CONNECT sent.
    AwaitingConnAck,
    /// CONNACK received, SUBSCRIBE sent.
    AwaitingSubAck,
    /// Subscribed; `connected()` reported.
    Up,
}

/// One connection's state around its socket halves.
struct Link<'a, S> {
    session: Session<'a>,
    transport: &'static str,
    reader: ReadHalf<S>,
    writer: WriteHalf<S>,
    /// Bytes read and not yet decoded: at most one partial packet plus a read.
    read_buf: BytesMut,
    /// Encoded packets not yet written.
    out: BytesMut,
    /// Written but maybe still buffered by TLS or the WebSocket.
    needs_flush: bool,
    /// Settlements whose PUBACK is queued, answered once it is flushed.
    acked: Vec<oneshot::Sender<Result<(), ClientError>>>,
    /// QoS 1 packet ids delivered on this connection and not yet PUBACKed.
    unacked: HashSet<u16>,
    /// A decoded message waiting for room in the inbox; reading stops meanwhile.
    pending: Option<ReceivedMessage>,
    phase: Phase,
    /// When the CONNACK or SUBACK must have come.
    handshake_deadline: Instant,
    keep_alive: Duration,
    /// How long a PINGREQ may go unanswered.
    ping_wait: Duration,
    last_sent: Instant,
    /// When the oldest unanswered PINGREQ went out.
    ping_sent: Option<Instant>,
    /// PINGREQs sent and not answered yet.
    pings_unanswered: u32,
    /// Whether any PUBACK went out on this connection.
    pubacks_sent: bool,
    /// When to reconnect with a fresh token, and the latest moment for it.
    renew: Option<(Instant, Instant)>,
    /// Past the renewal time, waiting for delivered messages to be completed.
    renewing: bool,
}

/// What one step of writing did.
enum Written {
    /// Some queued bytes went to the stream.
    Some,
    /// Nothing was queued, and the stream has flushed everything.
    Flushed,
}

/// Writes some of `out`, or flushes once it is all written (TLS and the
/// WebSocket buffer until flushed).
async fn write_some<W: AsyncWrite + Unpin>(
    writer: &mut W,
    out: &mut BytesMut,
) -> std::io::Result<Written> {
    if out.is_empty() {
        writer.flush().await?;
        Ok(Written::Flushed)
    } else {
        writer.write_buf(out).await?;
        Ok(Written::Some)
    }
}

/// When to reconnect with a fresh token, counted from `now`, and the latest
/// moment that reconnection may wait for held messages to be completed.
///
/// The hub ends the connection at `se`, the expiry in whole seconds (up to a
/// second before `expires_at`), so both stay a margin before it: 15 % of what
/// is left, at most [`EXPIRY_MARGIN`]. `None` when the token cannot be renewed.
fn renewal(token: &Token, now: SystemTime) -> Option<(Duration, Duration)> {
    let renew_at = token.renew_at?;
    let se = token
        .expires_at
        .duration_since(UNIX_EPOCH)
        .map_or(UNIX_EPOCH, |d| {
            UNIX_EPOCH + Duration::from_secs(d.as_secs())
        });
    let left = se.duration_since(now).unwrap_or_default();
    let latest = left - EXPIRY_MARGIN.min(left.mul_f64(0.15));
    let at = renew_at.duration_since(now).unwrap_or_default().min(latest);
    Some((at, latest))
}

impl<'a, S> Link<'a, S>
where
    S: AsyncRead + AsyncWrite + Send + Unpin,
{
    fn new(
        session: Session<'a>,
        reader: ReadHalf<S>,
        writer: WriteHalf<S>,
        transport: &'static str,
        token: Option<&Token>,
    ) -> Self {
        let options = &session.config.options;
        let now = Instant::now();
        let wall = SystemTime::now();
        let renew = token
            .and_then(|t| renewal(t, wall))
            .map(|(at, latest)| (now + at, now + latest));
        Self {
            transport,
            reader,
            writer,
            read_buf: BytesMut::with_capacity(READ_CHUNK),
            out: BytesMut::with_capacity(1024),
            needs_flush: false,
            acked: Vec::new(),
            unacked: HashSet::new(),
            pending: None,
            phase: Phase::AwaitingConnAck,
            handshake_deadline: now + options.operation_timeout,
            keep_alive: options.keep_alive,
            ping_wait: options.keep_alive.min(options.operation_timeout),
            last_sent: now,
            ping_sent: None,
            pings_unanswered: 0,
            pubacks_sent: false,
            renew,
            renewing: false,
            session,
        }
    }

    /// Queues `packet` for writing.
    fn send(&mut self, packet: &Packet) -> Result<(), ClientError> {
        packet
            .write(&mut self.out, usize::MAX)
            .map_err(|e| ClientError::InvalidArgument(format!("cannot encode a packet: {e}")))?;
        self.last_sent = Instant::now();
        Ok(())
    }

    async fn run(&mut self) -> SessionEnd {
        let closing = self.session.closing;
        loop {
            if self.renewing && self.unacked.is_empty() {
                return self.close(SessionEnd::RenewToken).await;
            }
            let deadline = self.next_deadline();
            let reading = self.pending.is_none();
            tokio::select! {
                biased;
                () = closing.cancelled() => return self.close(SessionEnd::Closed).await,
                io = write_some(&mut self.writer, &mut self.out), if self.needs_flush || !self.out.is_empty() => {
                    match io {
                        Err(e) => {
                            return SessionEnd::Failed(ClientError::Network(format!(
                                "writing to the hub: {e}"
                            )))
                        }
                        Ok(Written::Some) => self.needs_flush = true,
                        Ok(Written::Flushed) => {
                            self.needs_flush = false;
                            for reply in self.acked.drain(..) {
                                let _ = reply.send(Ok(()));
                            }
                        }
                    }
                }
                request = self.session.settlements.recv(), if self.out.len() < WRITE_HIGH_WATER => {
                    match request {
                        Some(request) => {
                            if let Err(e) = self.settle(request) {
                                return SessionEnd::Failed(e);
                            }
                        }
                        // Every sender is gone: the client was dropped.
                        None => return self.close(SessionEnd::Closed).await,
                    }
                }
                permit = self.session.inbox.reserve(), if !reading => {
                    let Ok(permit) = permit else {
                        // The receiving side is gone: the client was dropped.
                        return self.close(SessionEnd::Closed).await;
                    };
                    if let Some(message) = self.pending.take() {
                        permit.send(message);
                    }
                    // A PINGRESP may have waited unread behind the message.
                    if self.ping_sent.is_some() {
                        self.ping_sent = Some(Instant::now());
                    }
                    if let Err(e) = self.process() {
                        return SessionEnd::Failed(e);
                    }
                }
                () = tokio::time::sleep_until(deadline.unwrap_or_else(Instant::now)), if deadline.is_some() => {
                    match self.on_timer(Instant::now()) {
                        Ok(None) => {}
                        Ok(Some(end)) => return self.close(end).await,
                        Err(e) => return SessionEnd::Failed(e),
                    }
                }
                read = self.reader.read_buf(&mut self.read_buf), if reading => {
                    match read {
                        Ok(0) => {
                            return SessionEnd::Failed(ClientError::Network(
                                "the hub closed the connection".into(),
                            ))
                        }
                        Ok(_) => {
                            if let Err(e) = self.process() {
                                return SessionEnd::Failed(e);
                            }
                        }
                        Err(e) => {
                            return SessionEnd::Failed(ClientError::Network(format!(
                                "reading from the hub: {e}"
                            )))
                        }
                    }
                    if self.read_buf.capacity() - self.read_buf.len() < READ_CHUNK / 4 {
                        // Decoded packets were copied out, so this reclaims
                        // the buffer's own space rather than growing it.
                        self.read_buf.reserve(READ_CHUNK);
                    }
                }
            }
        }
    }

    /// The earliest timer: handshake, ping answer, next ping, token renewal.
    fn next_deadline(&self) -> Option<Instant> {
        let handshake = (self.phase != Phase::Up).then_some(self.handshake_deadline);
        let ping_answer = self
            .ping_sent
            .filter(|_| self.pending.is_none())
            .map(|sent| sent + self.ping_wait);
        let next_ping = (self.phase != Phase::AwaitingConnAck && !self.keep_alive.is_zero())
            .then(|| self.last_sent + self.keep_alive);
        let renew = self
            .renew
            .map(|(at, latest)| if self.renewing { latest } else { at });
        [handshake, ping_answer, next_ping, renew]
            .into_iter()
            .flatten()
            .min()
    }

    /// Acts on every timer due at `now`; `Some` ends the connection cleanly.
    fn on_timer(&mut self, now: Instant) -> Result<Option<SessionEnd>, ClientError> {
        let timeout = self.session.config.options.operation_timeout;
        if self.phase != Phase::Up && self.handshake_deadline <= now {
            let operation = match self.phase {
                Phase::AwaitingConnAck => "MQTT CONNECT",
                _ => "MQTT SUBSCRIBE",
            };
            return Err(ClientError::Timeout {
                operation,
                after: timeout,
            });
        }
        if self.pending.is_none()
            && self
                .ping_sent
                .is_some_and(|sent| sent + self.ping_wait <= now)
        {
            return Err(ClientError::Timeout {
                operation: "MQTT keep-alive (PINGRESP)",
                after: self.ping_wait,
            });
        }
        if let Some((at, latest)) = self.renew {
            if latest <= now || (at <= now && self.unacked.is_empty()) {
                return Ok(Some(SessionEnd::RenewToken));
            }
            if at <= now && !self.renewing {
                tracing::debug!(
                    device = %self.session.config.device_id,
                    unacked = self.unacked.len(),
                    "token renewal due; waiting for delivered messages to be completed first"
                );
                self.renewing = true;
            }
        }
        if self.phase != Phase::AwaitingConnAck
            && !self.keep_alive.is_zero()
            && self.last_sent + self.keep_alive <= now
        {
            self.send(&Packet::PingReq)?;
            self.ping_sent.get_or_insert(now);
            self.pings_unanswered = self.pings_unanswered.saturating_add(1);
        }
        Ok(None)
    }

    /// Decodes and handles every whole packet read, until one message has to
    /// wait for room in the inbox.
    fn process(&mut self) -> Result<(), ClientError> {
        while self.pending.is_none() {
            let packet = match Packet::read(&mut self.read_buf, MAX_PACKET) {
                Ok(packet) => packet,
                Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => return Ok(()),
                Err(rumqttc::mqttbytes::Error::PayloadSizeLimitExceeded(size)) => {
                    return Err(ClientError::Protocol(format!(
                        "the hub sent a packet of {size} bytes; at most {MAX_PACKET} are accepted"
                    )))
                }
                Err(e) => {
                    return Err(ClientError::Protocol(format!(
                        "unreadable packet from the hub: {e}"
                    )))
                }
            };
            // Any packet shows the hub alive, and answers come in order.
            self.ping_sent = None;
            self.packet(packet)?;
        }
        Ok(())
    }

    fn packet(&mut self, packet: Packet) -> Result<(), ClientError> {
        match (self.phase, packet) {
            (Phase::AwaitingConnAck, Packet::ConnAck(ack)) => {
                if let Some(e) = wire::connack_error(ack.code) {
                    return Err(e);
                }
                tracing::debug!(
                    device = %self.session.config.device_id,
                    session_present = ack.session_present,
                    "MQTT connected; subscribing"
                );
                let filter = bag::c2d_filter(&self.session.config.device_id);
                let mut subscribe = Subscribe::new(filter, QoS::AtLeastOnce);
                subscribe.pkid = SUBSCRIBE_PKID;
                self.send(&Packet::Subscribe(subscribe))?;
                self.phase = Phase::AwaitingSubAck;
                self.handshake_deadline =
                    Instant::now() + self.session.config.options.operation_timeout;
                Ok(())
            }
            (Phase::AwaitingConnAck, other) => Err(ClientError::Protocol(format!(
                "expected CONNACK, the hub sent {other:?}"
            ))),
            (Phase::AwaitingSubAck, Packet::SubAck(ack)) if ack.pkid == SUBSCRIBE_PKID => {
                let granted = wire::suback_grant(&ack.return_codes)?;
                tracing::debug!(device = %self.session.config.device_id, ?granted, "subscribed to C2D");
                self.phase = Phase::Up;
                self.session.connected();
                Ok(())
            }
            // A resumed session may deliver before the SUBACK.
            (_, Packet::Publish(publish)) => self.publish(publish),
            (_, Packet::PingResp) => {
                self.pings_unanswered = self.pings_unanswered.saturating_sub(1);
                Ok(())
            }
            (_, other) => Err(ClientError::Protocol(format!(
                "unexpected packet from the hub: {other:?}"
            ))),
        }
    }

    fn publish(&mut self, publish: Publish) -> Result<(), ClientError> {
        let packet_id = match publish.qos {
            QoS::AtMostOnce => 0,
            QoS::AtLeastOnce => {
                if !self.unacked.insert(publish.pkid) {
                    if publish.dup {
                        // The hub resends a message its lock lost while the
                        // application still holds the first copy: completing
                        // that copy PUBACKs this packet id, which settles the
                        // hub's current delivery.
                        tracing::debug!(
                            pkid = publish.pkid,
                            "redelivery of a message not yet completed; not delivered twice"
                        );
                        return Ok(());
                    }
                    tracing::warn!(
                        pkid = publish.pkid,
                        "the hub reused a packet id that is not acknowledged yet; delivering the new message"
                    );
                }
                publish.pkid
            }
            QoS::ExactlyOnce => {
                return Err(ClientError::Protocol(
                    "the hub sent a QoS 2 PUBLISH on a QoS 1 subscription".into(),
                ))
            }
        };
        let device_id = &self.session.config.device_id;
        let Some(bag) = bag::c2d_bag(&publish.topic, device_id) else {
            // Only the C2D filter is subscribed; nothing else can be handed
            // to the application, and leaving it unacknowledged would only
            // bring it back.
            tracing::warn!(topic = %publish.topic, "PUBLISH on a topic this client never subscribed to; acknowledged and dropped");
            if packet_id != 0 {
                self.unacked.remove(&packet_id);
                self.send(&Packet::PubAck(PubAck::new(packet_id)))?;
                self.pubacks_sent = true;
            }
            return Ok(());
        };
        // A copy, so that the read buffer's space is reused instead of being
        // held by messages waiting in the inbox.
        let body = Bytes::copy_from_slice(&publish.payload);
        let mut message = ReceivedMessage::new(
            body,
            Delivery::Mqtt {
                connection: self.session.connection,
                packet_id,
            },
        );
        bag::decode_into(bag, &mut message);
        match self.session.inbox.try_send(message) {
            Ok(()) => {}
            // Closed is noticed by the reserve in the loop, which closes the connection.
            Err(TrySendError::Full(message) | TrySendError::Closed(message)) => {
                self.pending = Some(message);
            }
        }
        Ok(())
    }

    /// Answers one settlement: a PUBACK for a completion of a message this
    /// connection delivered, an error for anything else.
    ///
    /// PUBACKs go out when the application completes, not in arrival order:
    /// IoT Hub accepts that (its C and Java SDKs do it), and holding a later
    /// completion behind an earlier message the application still works on
    /// would stall it.
    fn settle(&mut self, request: Settle) -> Result<(), ClientError> {
        let answer = match (&request.message.delivery, request.outcome) {
            (Delivery::Mqtt { packet_id: 0, .. }, Outcome::Complete) => Ok(()),
            (
                Delivery::Mqtt {
                    connection,
                    packet_id,
                },
                Outcome::Complete,
            ) => {
                if *connection != self.session.connection {
                    Err(ClientError::lock_lost_locally(
                        "the message came on an earlier MQTT connection; the hub delivers it again",
                    ))
                } else if self.unacked.remove(packet_id) {
                    self.send(&Packet::PubAck(PubAck::new(*packet_id)))?;
                    self.pubacks_sent = true;
                    self.acked.push(request.reply);
                    return Ok(());
                } else {
                    Err(ClientError::lock_lost_locally(
                        "the message was already completed",
                    ))
                }
            }
            (Delivery::Mqtt { .. }, outcome) => Err(ClientError::NotSupported {
                operation: outcome.as_str(),
                transport: self.transport,
                why: "MQTT can only acknowledge (complete) a message; use AMQP or HTTPS to reject or abandon",
            }),
            _ => Err(ClientError::InvalidArgument(
                "the message was not received over MQTT".into(),
            )),
        };
        let _ = request.reply.send(answer);
        Ok(())
    }

    /// Sends DISCONNECT (once connected), writes what is queued and closes
    /// the stream, within a short time; then reports `end`.
    async fn close(&mut self, end: SessionEnd) -> SessionEnd {
        let limit = CLOSE_FLUSH.min(self.session.config.options.operation_timeout);
        if self.phase != Phase::AwaitingConnAck {
            if self.pubacks_sent {
                match tokio::time::timeout(limit, self.confirm_read()).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::debug!(error = %e, "no PINGRESP before DISCONNECT"),
                    Err(_) => tracing::debug!("no PINGRESP before DISCONNECT in time"),
                }
            }
            // Encoding a DISCONNECT cannot fail.
            let _ = self.send(&Packet::Disconnect);
        }
        let flush = async {
            self.writer.write_all_buf(&mut self.out).await?;
            self.writer.flush().await
        };
        match tokio::time::timeout(limit, flush).await {
            Ok(Ok(())) => {
                for reply in self.acked.drain(..) {
                    let _ = reply.send(Ok(()));
                }
                let _ = tokio::time::timeout(limit, self.writer.shutdown()).await;
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "could not write the last packets"),
            Err(_) => tracing::debug!("the last packets did not go out in time"),
        }
        end
    }

    /// A PINGREQ round trip before DISCONNECT, so that the hub has read
    /// every PUBACK when the connection closes: MQTT does not acknowledge a
    /// PUBACK, and a hub may drop a completion still under way when the
    /// connection ends right behind it. Messages that arrive meanwhile are
    /// not delivered; unacknowledged, the hub delivers them again.
    async fn confirm_read(&mut self) -> std::io::Result<()> {
        let _ = self.send(&Packet::PingReq);
        let mut awaited = self.pings_unanswered.saturating_add(1);
        self.writer.write_all_buf(&mut self.out).await?;
        self.writer.flush().await?;
        for reply in self.acked.drain(..) {
            let _ = reply.send(Ok(()));
        }
        self.pending = None;
        while awaited > 0 {
            match Packet::read(&mut self.read_buf, MAX_PACKET) {
                Ok(Packet::PingResp) => awaited -= 1,
                Ok(_) => {}
                Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {
                    if self.reader.read_buf(&mut self.read_buf).await? == 0 {
                        return Err(std::io::ErrorKind::UnexpectedEof.into());
                    }
                }
                Err(e) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        e.to_string(),
                    ))
                }
            }
        }
        Ok(())
    }
}
