//! One MQTT connection's protocol state, without I/O.
//!
//! [`Connection::handle`] takes one [`Event`] (a packet from the wire, the
//! answer of a hub call, a timer, a kick) and the current time, changes the
//! state and pushes [`Action`]s: packets to send, hub calls to make, the
//! connection to close. The socket loop (`driver.rs`) does the I/O around it;
//! tests drive it directly.
//!
//! The C2D window: up to `max_in_flight` messages are published and not yet
//! PUBACKed. Each holds the hub's lock; when `locked_until` passes without a
//! PUBACK the entry leaves the window (the core has returned the message and
//! counted the delivery) but its packet id stays reserved, so that when the
//! hub delivers the same sequence number again it goes out with DUP=1 and the
//! same packet id.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use courier_core::{Delivery, DeviceId, LockToken, SequenceNumber, Timestamp};
use rumqttc::mqttbytes::v4::{
    ConnAck, ConnectReturnCode, Packet, PubAck, Publish, SubAck, SubscribeReasonCode, UnsubAck,
};
use rumqttc::mqttbytes::QoS;

use crate::topic;
use crate::username;

/// The server keep-alive timeout is this many halves of the client's keep-alive.
const KEEP_ALIVE_TIMEOUT_HALVES: u32 = 3;

/// Limits a connection works within.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// C2D PUBLISHes awaiting PUBACK at most.
    pub(crate) max_in_flight: usize,
    /// The largest client keep-alive honoured; longer ones are capped.
    pub(crate) max_keep_alive: Duration,
    /// Time from accept to CONNECT.
    pub(crate) connect_timeout: Duration,
}

/// What a CONNECT asks, for the driver to authenticate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ConnectAttempt {
    /// The device (client id, equal to the user name's device id).
    pub(crate) device_id: DeviceId,
    /// The host named in the user name.
    pub(crate) host: String,
    /// The SAS token, if any (X.509 devices send none).
    pub(crate) password: Option<String>,
    /// CleanSession.
    pub(crate) clean_session: bool,
}

/// The driver's answer to a successful authentication.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Accepted {
    /// When the SAS token lapses; `None` for certificates.
    pub(crate) token_deadline: Option<Timestamp>,
    /// Whether a stored session was resumed (CONNACK session-present).
    pub(crate) session_present: bool,
    /// The C2D subscription of the resumed session.
    pub(crate) subscription: Option<QoS>,
}

/// Everything that can happen to a connection.
#[derive(Debug)]
pub(crate) enum Event {
    /// A packet arrived.
    Packet(Packet),
    /// Bytes that are no valid packet, or a packet over the size limit.
    Malformed(String),
    /// The first packet was a CONNECT of another protocol or level.
    UnsupportedProtocol(String),
    /// The CONNECT was authenticated.
    Accepted(Accepted),
    /// The CONNECT was refused.
    Refused(ConnectReturnCode, String),
    /// The hub delivered (and locked) a message.
    Delivered(Delivery),
    /// A receive ended without a message.
    ReceiveEnded,
    /// A receive failed (device deleted, hub stopping).
    ReceiveFailed(String),
    /// The hub answered the completion of the message published with this
    /// packet id (success, or LockLost when the lock had already lapsed).
    Completed(u16),
    /// Time passed: connect timeout, keep-alive, token expiry, lock lapses.
    Tick,
    /// The same device connected again elsewhere (IoT Hub 400027).
    Replaced,
    /// The server is shutting down.
    Shutdown,
}

/// What the driver must do.
#[derive(Debug, PartialEq)]
pub(crate) enum Action {
    /// Write a packet.
    Send(Packet),
    /// Authenticate a CONNECT and answer with `Accepted` or `Refused`.
    Authenticate(ConnectAttempt),
    /// Complete the message published with `pkid`.
    Complete {
        /// The packet id, echoed in `Event::Completed`.
        pkid: u16,
        /// The lock to complete.
        lock_token: LockToken,
    },
    /// The session's C2D subscription changed (persist it if CleanSession is 0).
    RememberSubscription(Option<QoS>),
    /// A D2C message was accepted (counted; its body is dropped for now).
    D2cAccepted {
        /// Its topic.
        topic: String,
        /// Payload bytes.
        bytes: usize,
    },
    /// Close the connection after writing what is queued.
    Close(CloseReason),
}

/// Why a connection ends.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CloseReason {
    /// DISCONNECT.
    #[error("client disconnected")]
    Disconnect,
    /// No CONNECT in time.
    #[error("no CONNECT within the connect timeout")]
    ConnectTimeout,
    /// No packet for 1.5 × keep-alive.
    #[error("keep-alive timeout: nothing received for {0:?}")]
    KeepAlive(Duration),
    /// The SAS token lapsed (IoT Hub disconnects MQTT at token expiry).
    #[error("the SAS token expired; reconnect with a fresh token")]
    TokenExpired,
    /// The device connected again (IoT Hub 400027 ConnectionForcefullyClosedOnNewConnection).
    #[error("400027 ConnectionForcefullyClosedOnNewConnection: the device connected again")]
    Replaced,
    /// The server stops.
    #[error("server shutting down")]
    Shutdown,
    /// CONNECT refused with a CONNACK return code.
    #[error("CONNECT refused: {0}")]
    Refused(String),
    /// The hub failed a call the connection needs.
    #[error("hub call failed: {0}")]
    Hub(String),
    /// The peer broke the protocol.
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl CloseReason {
    /// Whether the peer broke the protocol (counted in `protocol_errors`).
    pub(crate) fn is_protocol_error(&self) -> bool {
        matches!(self, CloseReason::Protocol(_))
    }
}

/// A published message awaiting its PUBACK.
#[derive(Clone, Debug)]
struct InFlight {
    sequence_number: SequenceNumber,
    lock_token: LockToken,
    locked_until: Timestamp,
    /// PUBACK received, completion under way: the lock timer no longer applies.
    completing: bool,
}

/// The state of an authenticated connection.
#[derive(Debug)]
struct Session {
    device_id: DeviceId,
    keep_alive_timeout: Option<Duration>,
    last_received: Timestamp,
    token_deadline: Option<Timestamp>,
    subscription: Option<QoS>,
    receiving: bool,
    window: BTreeMap<u16, InFlight>,
    /// Lapsed messages' packet ids, kept for a redelivery with DUP=1.
    lapsed: VecDeque<(SequenceNumber, u16)>,
    next_pkid: u16,
}

#[derive(Debug)]
enum Phase {
    AwaitingConnect {
        deadline: Timestamp,
    },
    Authenticating {
        device_id: DeviceId,
        keep_alive_timeout: Option<Duration>,
    },
    Connected(Box<Session>),
    Closed,
}

/// One connection's protocol state.
#[derive(Debug)]
pub(crate) struct Connection {
    limits: Limits,
    phase: Phase,
    /// What the session had in flight, unacknowledged, when it closed.
    left_locked: Vec<LockToken>,
}

fn unacknowledged(s: &Session) -> Vec<LockToken> {
    s.window
        .values()
        .filter(|f| !f.completing)
        .map(|f| f.lock_token)
        .collect()
}

impl Connection {
    /// A connection accepted at `now`, waiting for CONNECT.
    pub(crate) fn new(now: Timestamp, limits: Limits) -> Self {
        let limits = Limits {
            // Packet ids are 16 bits and lapsed ids stay reserved; keep plenty free.
            max_in_flight: limits.max_in_flight.clamp(1, 4096),
            ..limits
        };
        Connection {
            limits,
            phase: Phase::AwaitingConnect {
                deadline: now.saturating_add(limits.connect_timeout),
            },
            left_locked: Vec::new(),
        }
    }

    /// The authenticated device, if any.
    pub(crate) fn device_id(&self) -> Option<&DeviceId> {
        match &self.phase {
            Phase::Connected(s) => Some(&s.device_id),
            Phase::Authenticating { device_id, .. } => Some(device_id),
            _ => None,
        }
    }

    /// Whether the connection has ended.
    pub(crate) fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    /// Lock tokens of messages published and neither acknowledged nor lapsed:
    /// what the connection leaves locked at the hub when it ends.
    pub(crate) fn unacknowledged(&self) -> Vec<LockToken> {
        match &self.phase {
            Phase::Connected(s) => unacknowledged(s),
            _ => self.left_locked.clone(),
        }
    }

    /// Messages published and not yet settled.
    pub(crate) fn in_flight(&self) -> usize {
        match &self.phase {
            Phase::Connected(s) => s.window.len(),
            _ => 0,
        }
    }

    /// When the next `Event::Tick` is due, if any timer runs.
    pub(crate) fn next_deadline(&self) -> Option<Timestamp> {
        match &self.phase {
            Phase::AwaitingConnect { deadline } => Some(*deadline),
            Phase::Connected(s) => {
                let keep_alive = s
                    .keep_alive_timeout
                    .map(|t| s.last_received.saturating_add(t));
                let lock = s
                    .window
                    .values()
                    .filter(|f| !f.completing)
                    .map(|f| f.locked_until)
                    .min();
                [keep_alive, s.token_deadline, lock]
                    .into_iter()
                    .flatten()
                    .min()
            }
            Phase::Authenticating { .. } | Phase::Closed => None,
        }
    }

    /// Whether a receive should start now; if so the connection counts it as
    /// started and expects `Delivered`, `ReceiveEnded` or `ReceiveFailed`.
    /// The driver asks only while its write buffer drains (backpressure).
    pub(crate) fn start_receive(&mut self) -> bool {
        let max = self.limits.max_in_flight;
        match &mut self.phase {
            Phase::Connected(s)
                if s.subscription.is_some() && !s.receiving && s.window.len() < max =>
            {
                s.receiving = true;
                true
            }
            _ => false,
        }
    }

    /// Applies `event` at `now`, pushing what must be done onto `out`.
    pub(crate) fn handle(&mut self, now: Timestamp, event: Event, out: &mut Vec<Action>) {
        if self.is_closed() {
            return;
        }
        match event {
            Event::Packet(packet) => self.packet(now, packet, out),
            Event::Malformed(why) => self.protocol_error(why, out),
            Event::UnsupportedProtocol(what) => {
                self.refuse(ConnectReturnCode::RefusedProtocolVersion, what, out);
            }
            Event::Accepted(accepted) => self.accepted(now, accepted, out),
            Event::Refused(code, why) => self.refuse(code, why, out),
            Event::Delivered(delivery) => self.delivered(delivery, out),
            Event::ReceiveEnded => {
                if let Phase::Connected(s) = &mut self.phase {
                    s.receiving = false;
                }
            }
            Event::ReceiveFailed(why) => self.close(CloseReason::Hub(why), out),
            Event::Completed(pkid) => {
                // Whatever the answer, the message has left this connection:
                // completed, or (LockLost) already redelivered or expired.
                if let Phase::Connected(s) = &mut self.phase {
                    s.window.remove(&pkid);
                }
            }
            Event::Tick => self.tick(now, out),
            Event::Replaced => self.close(CloseReason::Replaced, out),
            Event::Shutdown => self.close(CloseReason::Shutdown, out),
        }
    }

    fn close(&mut self, reason: CloseReason, out: &mut Vec<Action>) {
        if let Phase::Connected(s) = &self.phase {
            self.left_locked = unacknowledged(s);
        }
        self.phase = Phase::Closed;
        out.push(Action::Close(reason));
    }

    /// CONNACK with a refusal code, then close.
    fn refuse(&mut self, code: ConnectReturnCode, why: String, out: &mut Vec<Action>) {
        out.push(Action::Send(Packet::ConnAck(ConnAck::new(code, false))));
        self.close(CloseReason::Refused(why), out);
    }

    fn protocol_error(&mut self, why: impl Into<String>, out: &mut Vec<Action>) {
        self.close(CloseReason::Protocol(why.into()), out);
    }

    fn packet(&mut self, now: Timestamp, packet: Packet, out: &mut Vec<Action>) {
        match &mut self.phase {
            Phase::AwaitingConnect { .. } => match packet {
                Packet::Connect(connect) => self.connect(connect, out),
                other => self.protocol_error(
                    format!(
                        "the first packet must be CONNECT, got {:?}",
                        packet_name(&other)
                    ),
                    out,
                ),
            },
            Phase::Authenticating { .. } => {
                // The driver answers Authenticate before feeding the next packet.
                self.protocol_error("packet before the CONNECT was answered", out);
            }
            Phase::Connected(session) => {
                session.last_received = now;
                self.connected_packet(packet, out);
            }
            Phase::Closed => {}
        }
    }

    fn connect(&mut self, connect: rumqttc::mqttbytes::v4::Connect, out: &mut Vec<Action>) {
        if connect.protocol != rumqttc::mqttbytes::Protocol::V4 {
            return self.refuse(
                ConnectReturnCode::RefusedProtocolVersion,
                "only MQTT 3.1.1 (protocol level 4) is served".into(),
                out,
            );
        }
        if connect.client_id.contains('/') {
            return self.refuse(
                ConnectReturnCode::BadClientId,
                format!(
                    "client id '{}' is a module identity; Courier serves devices only",
                    connect.client_id
                ),
                out,
            );
        }
        let device_id = match DeviceId::new(connect.client_id.clone()) {
            Ok(id) => id,
            Err(e) => {
                return self.refuse(
                    ConnectReturnCode::BadClientId,
                    format!("client id must be the device id: {e}"),
                    out,
                )
            }
        };
        let (user, password) = match connect.login {
            Some(login) => (login.username, login.password),
            None => (String::new(), String::new()),
        };
        let parsed = match username::parse(&user) {
            Ok(u) => u,
            Err(e) => {
                return self.refuse(ConnectReturnCode::BadUserNamePassword, e.to_string(), out)
            }
        };
        if parsed.module_id.is_some() || parsed.device_id != device_id.as_str() {
            return self.refuse(ConnectReturnCode::BadUserNamePassword,
                format!(
                    "user name '{user}' does not name client id '{device_id}' as {{host}}/{{deviceId}}/"
                ),
                out,
            );
        }
        let host = parsed.host.to_owned();
        let keep_alive_timeout = (connect.keep_alive > 0).then(|| {
            Duration::from_secs(u64::from(connect.keep_alive)).min(self.limits.max_keep_alive)
                * KEEP_ALIVE_TIMEOUT_HALVES
                / 2
        });
        self.phase = Phase::Authenticating {
            device_id: device_id.clone(),
            keep_alive_timeout,
        };
        out.push(Action::Authenticate(ConnectAttempt {
            device_id,
            host,
            password: (!password.is_empty()).then_some(password),
            clean_session: connect.clean_session,
        }));
    }

    fn accepted(&mut self, now: Timestamp, accepted: Accepted, out: &mut Vec<Action>) {
        let Phase::Authenticating {
            device_id,
            keep_alive_timeout,
        } = &self.phase
        else {
            return;
        };
        self.phase = Phase::Connected(Box::new(Session {
            device_id: device_id.clone(),
            keep_alive_timeout: *keep_alive_timeout,
            last_received: now,
            token_deadline: accepted.token_deadline,
            subscription: accepted.subscription,
            receiving: false,
            window: BTreeMap::new(),
            lapsed: VecDeque::new(),
            next_pkid: 1,
        }));
        out.push(Action::Send(Packet::ConnAck(ConnAck::new(
            ConnectReturnCode::Success,
            accepted.session_present,
        ))));
    }

    fn connected_packet(&mut self, packet: Packet, out: &mut Vec<Action>) {
        let Phase::Connected(s) = &mut self.phase else {
            return;
        };
        match packet {
            Packet::Subscribe(subscribe) => {
                let own = topic::c2d_filter(s.device_id.as_str());
                let mut codes = Vec::with_capacity(subscribe.filters.len());
                for filter in subscribe.filters {
                    if filter.path == own {
                        // IoT Hub grants at most QoS 1 (a QoS 2 request gets 1).
                        let granted = match filter.qos {
                            QoS::AtMostOnce => QoS::AtMostOnce,
                            QoS::AtLeastOnce | QoS::ExactlyOnce => QoS::AtLeastOnce,
                        };
                        s.subscription = Some(granted);
                        out.push(Action::RememberSubscription(Some(granted)));
                        codes.push(SubscribeReasonCode::Success(granted));
                    } else {
                        // Twin, methods, other devices, wildcards: refused, session kept.
                        codes.push(SubscribeReasonCode::Failure);
                    }
                }
                out.push(Action::Send(Packet::SubAck(SubAck::new(
                    subscribe.pkid,
                    codes,
                ))));
            }
            Packet::Unsubscribe(unsubscribe) => {
                let own = topic::c2d_filter(s.device_id.as_str());
                if unsubscribe.topics.contains(&own) {
                    s.subscription = None;
                    out.push(Action::RememberSubscription(None));
                }
                out.push(Action::Send(Packet::UnsubAck(UnsubAck::new(
                    unsubscribe.pkid,
                ))));
            }
            Packet::Publish(publish) => {
                if publish.qos == QoS::ExactlyOnce {
                    return self.protocol_error("QoS 2 PUBLISH is not supported", out);
                }
                if !topic::is_d2c_topic(&publish.topic, s.device_id.as_str()) {
                    let why = format!("PUBLISH to unsupported topic '{}'", publish.topic);
                    return self.protocol_error(why, out);
                }
                out.push(Action::D2cAccepted {
                    topic: publish.topic,
                    bytes: publish.payload.len(),
                });
                if publish.qos == QoS::AtLeastOnce {
                    out.push(Action::Send(Packet::PubAck(PubAck::new(publish.pkid))));
                }
            }
            Packet::PubAck(ack) => {
                if let Some(f) = s.window.get_mut(&ack.pkid) {
                    if !f.completing {
                        f.completing = true;
                        out.push(Action::Complete {
                            pkid: ack.pkid,
                            lock_token: f.lock_token,
                        });
                    }
                }
                // An unknown id acknowledges a lapsed or already settled
                // message: the hub has moved on, nothing to do.
            }
            Packet::PingReq => out.push(Action::Send(Packet::PingResp)),
            Packet::Disconnect => self.close(CloseReason::Disconnect, out),
            Packet::Connect(_) => self.protocol_error("second CONNECT on the connection", out),
            other => {
                let why = format!("unexpected {} from a client", packet_name(&other));
                self.protocol_error(why, out);
            }
        }
    }

    fn delivered(&mut self, delivery: Delivery, out: &mut Vec<Action>) {
        let Phase::Connected(s) = &mut self.phase else {
            return;
        };
        s.receiving = false;
        let Some(qos) = s.subscription else {
            // Unsubscribed meanwhile: the lock lapses and the message returns.
            return;
        };
        let seq = delivery.sequence_number;
        let again = s
            .window
            .iter()
            .find(|(_, f)| f.sequence_number == seq)
            .map(|(pkid, _)| *pkid)
            .or_else(|| {
                let i = s.lapsed.iter().position(|(q, _)| *q == seq)?;
                s.lapsed.remove(i).map(|(_, pkid)| pkid)
            });
        let (pkid, dup) = match again {
            Some(pkid) => (pkid, true),
            None => (s.allocate_pkid(), delivery.delivery_count > 0),
        };
        let topic = topic::c2d_topic(s.device_id.as_str(), &delivery);
        let at_most_once = qos == QoS::AtMostOnce;
        let entry = InFlight {
            sequence_number: seq,
            lock_token: delivery.lock_token,
            locked_until: delivery.locked_until,
            completing: at_most_once,
        };
        if topic.len() > usize::from(u16::MAX) {
            // MQTT cannot carry it. Holding it until the lock lapses lets the
            // core count the attempts and dead-letter it, as for any device
            // that never settles a message.
            tracing::warn!(
                sequence_number = seq.0,
                topic_bytes = topic.len(),
                "C2D message properties exceed the MQTT topic limit of 65535 bytes; not published"
            );
            s.window.insert(
                pkid,
                InFlight {
                    completing: false,
                    ..entry
                },
            );
            return;
        }
        let mut publish =
            Publish::from_bytes(topic, qos, Bytes::copy_from_slice(&delivery.message.body));
        publish.dup = dup && qos == QoS::AtLeastOnce;
        publish.pkid = if qos == QoS::AtMostOnce { 0 } else { pkid };
        s.window.insert(pkid, entry);
        out.push(Action::Send(Packet::Publish(publish)));
        if at_most_once {
            // Nobody will acknowledge it: it is delivered once written.
            out.push(Action::Complete {
                pkid,
                lock_token: delivery.lock_token,
            });
        }
    }

    fn tick(&mut self, now: Timestamp, out: &mut Vec<Action>) {
        let max = self.limits.max_in_flight;
        match &mut self.phase {
            Phase::AwaitingConnect { deadline } if *deadline <= now => {
                self.close(CloseReason::ConnectTimeout, out);
            }
            Phase::Connected(s) => {
                if let Some(t) = s.keep_alive_timeout {
                    if s.last_received.saturating_add(t) <= now {
                        return self.close(CloseReason::KeepAlive(t), out);
                    }
                }
                if s.token_deadline.is_some_and(|d| d <= now) {
                    return self.close(CloseReason::TokenExpired, out);
                }
                let lapsed: Vec<u16> = s
                    .window
                    .iter()
                    .filter(|(_, f)| !f.completing && f.locked_until <= now)
                    .map(|(pkid, _)| *pkid)
                    .collect();
                for pkid in lapsed {
                    if let Some(f) = s.window.remove(&pkid) {
                        s.lapsed.push_back((f.sequence_number, pkid));
                    }
                }
                // Remember a bounded number of lapsed ids; the oldest are the
                // least likely to come back (dead-lettered or expired).
                while s.lapsed.len() > max * 4 {
                    s.lapsed.pop_front();
                }
            }
            _ => {}
        }
    }
}

impl Session {
    /// The next packet id in 1..=65535 not in the window nor reserved for a redelivery.
    fn allocate_pkid(&mut self) -> u16 {
        // Connection::new caps the window and the lapsed list keeps at most
        // four windows, so a free id always exists.
        debug_assert!(self.window.len() + self.lapsed.len() < usize::from(u16::MAX));
        loop {
            let id = self.next_pkid;
            self.next_pkid = if id == u16::MAX { 1 } else { id + 1 };
            let reserved =
                self.window.contains_key(&id) || self.lapsed.iter().any(|(_, p)| *p == id);
            if !reserved {
                return id;
            }
        }
    }
}

/// A packet's name for log lines.
fn packet_name(packet: &Packet) -> &'static str {
    match packet {
        Packet::Connect(_) => "CONNECT",
        Packet::ConnAck(_) => "CONNACK",
        Packet::Publish(_) => "PUBLISH",
        Packet::PubAck(_) => "PUBACK",
        Packet::PubRec(_) => "PUBREC",
        Packet::PubRel(_) => "PUBREL",
        Packet::PubComp(_) => "PUBCOMP",
        Packet::Subscribe(_) => "SUBSCRIBE",
        Packet::SubAck(_) => "SUBACK",
        Packet::Unsubscribe(_) => "UNSUBSCRIBE",
        Packet::UnsubAck(_) => "UNSUBACK",
        Packet::PingReq => "PINGREQ",
        Packet::PingResp => "PINGRESP",
        Packet::Disconnect => "DISCONNECT",
    }
}

#[cfg(test)]
#[path = "connection_tests.rs"]
mod tests;
