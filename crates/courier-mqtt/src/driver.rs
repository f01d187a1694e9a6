//! The socket loop around one [`Connection`]: reads large buffers and
//! decodes every whole packet in them, feeds events, performs the actions
//! (hub calls, authentication, session registry) and writes every queued
//! packet in one go.
//!
//! Memory per connection is bounded: the read buffer holds at most one
//! partial packet (≤ `max_packet_size`) plus one read; the write buffer stops
//! growing past [`WRITE_HIGH_WATER`] because then the loop neither reads
//! (no new acknowledgements to queue) nor receives from the hub (no new
//! PUBLISH), and the window caps what was already published.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use bytes::BytesMut;
use courier_core::{Clock, Delivery, DeviceId, ErrorCode, Timestamp};
use courier_hub::SystemClock;
use futures_util::stream::{FuturesUnordered, StreamExt as _};
use rumqttc::mqttbytes::v4::Packet;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::oneshot;
use tokio_util::io::{poll_read_buf, poll_write_buf};
use tracing::{debug, info, warn, Instrument};

use crate::auth;
use crate::connection::{Accepted, Action, CloseReason, Connection, Event, Limits};
use crate::metrics::Counters;
use crate::{ConnectionInfo, Shared};

/// Bytes asked of the socket per read on a busy connection.
const READ_CHUNK: usize = 64 * 1024;
/// The read buffer of a quiet connection: most connections are idle, and
/// every byte of theirs counts against the memory per connection. 1 KiB
/// holds what an idle device sends (PINGREQ, PUBACK, a SUBSCRIBE); a
/// connection whose reads fill the buffer moves to [`READ_CHUNK`].
const READ_START: usize = 1024;
/// Past this many unwritten bytes the loop stops reading and receiving.
const WRITE_HIGH_WATER: usize = 256 * 1024;
/// How long a closing connection may take to write what is queued.
const CLOSE_FLUSH: Duration = Duration::from_secs(5);

type Receive = Pin<Box<dyn Future<Output = Result<Option<Delivery>, courier_hub::Error>> + Send>>;
/// A PUBACKed message's completion, polled by the connection's own task
/// (no task per message): its packet id and the hub's answer.
type Completion = Pin<Box<dyn Future<Output = (u16, Result<(), courier_hub::Error>)> + Send>>;

/// What one poll of the socket did.
enum Io {
    /// A read into the read buffer: bytes read, 0 at end of stream.
    Read(std::io::Result<usize>),
    /// A write from the write buffer.
    Written(std::io::Result<usize>),
}

/// Polls `stream` in both directions at once: writes from `out` while it
/// holds bytes, and reads into `buf` when `readable`; resolves with the
/// first that completes. One stream, without `tokio::io::split`'s halves and
/// the lock they take on every poll.
///
/// A TLS stream may take bytes into its own buffer while the socket is full
/// and report them written; `unflushed` then asks for a flush once `out` is
/// empty, so that a PUBLISH does not wait in that buffer for the next write.
fn socket<'a, S>(
    stream: &'a mut S,
    out: &'a mut BytesMut,
    unflushed: &'a mut bool,
    buf: &'a mut BytesMut,
    readable: bool,
) -> impl Future<Output = Io> + 'a
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    std::future::poll_fn(move |cx| {
        if !out.is_empty() {
            if let Poll::Ready(r) = poll_write_buf(Pin::new(&mut *stream), cx, out) {
                *unflushed = true;
                return Poll::Ready(Io::Written(r));
            }
        } else if *unflushed {
            match Pin::new(&mut *stream).poll_flush(cx) {
                Poll::Ready(Ok(())) => *unflushed = false,
                Poll::Ready(Err(e)) => return Poll::Ready(Io::Written(Err(e))),
                Poll::Pending => {}
            }
        }
        if readable {
            if let Poll::Ready(r) = poll_read_buf(Pin::new(&mut *stream), cx, buf) {
                return Poll::Ready(Io::Read(r));
            }
        }
        Poll::Pending
    })
}

/// Serves one connection until it ends.
pub(crate) async fn serve<S>(shared: Arc<Shared>, stream: S, info: ConnectionInfo)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let span = tracing::info_span!("mqtt", remote = %info.remote, device = tracing::field::Empty);
    Counters::add(&shared.counters.connections_total);
    Counters::add(&shared.counters.connections_open);
    let mut driver = Driver::new(shared.clone(), info);
    driver.run(stream).instrument(span).await;
    driver.detach();
    shared
        .counters
        .connections_open
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
}

/// The connection registered with the session registry.
struct Attachment {
    device_id: DeviceId,
    id: u64,
    clean_session: bool,
    /// Keeps the device `Connected` in the registry while this lives.
    _presence: courier_hub::ConnectionGuard,
}

struct Driver {
    shared: Arc<Shared>,
    info: ConnectionInfo,
    conn: Connection,
    out: BytesMut,
    actions: Vec<Action>,
    events: VecDeque<Event>,
    receive: Option<Receive>,
    completions: FuturesUnordered<Completion>,
    replaced: Option<oneshot::Receiver<()>>,
    attachment: Option<Attachment>,
}

fn now() -> Timestamp {
    SystemClock.now()
}

/// Awaits the future in `slot`, or never when there is none.
async fn maybe<F: Future + Unpin>(slot: &mut Option<F>) -> F::Output {
    match slot {
        Some(f) => f.await,
        None => std::future::pending().await,
    }
}

impl Driver {
    fn new(shared: Arc<Shared>, info: ConnectionInfo) -> Self {
        let limits = Limits {
            max_in_flight: shared.config.max_in_flight,
            max_keep_alive: shared.config.max_keep_alive,
            connect_timeout: shared.config.connect_timeout,
        };
        Driver {
            conn: Connection::new(now(), limits),
            shared,
            info,
            out: BytesMut::new(),
            actions: Vec::new(),
            events: VecDeque::new(),
            receive: None,
            completions: FuturesUnordered::new(),
            replaced: None,
            attachment: None,
        }
    }

    async fn run<S>(&mut self, stream: S)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let mut stream = stream;
        // Whether bytes went to the stream since its last flush.
        let mut unflushed = false;
        let mut read_buf = BytesMut::with_capacity(READ_START);
        // Whether the last read filled all the space it was given: then the
        // peer is sending faster than we read, and the buffer grows.
        let mut busy = false;
        let mut shutdown = self.shared.shutdown.subscribe();
        if *shutdown.borrow_and_update() {
            self.feed(Event::Shutdown);
        }
        // Set when the socket is gone: nothing more can be written to it.
        let mut peer_gone = false;
        // One timer for the connection's deadlines (connect, keep-alive, token,
        // locks), moved only when a deadline comes earlier than the one it
        // is set for. A later deadline (keep-alive moves with every packet)
        // leaves it where it is: it then fires early, the Tick finds nothing
        // due, and it is set again. No timer is made or moved per packet.
        let timer = tokio::time::sleep(Duration::ZERO);
        tokio::pin!(timer);
        let mut armed: Option<Timestamp> = None;
        while !self.conn.is_closed() {
            if self.receive.is_none()
                && self.out.len() < WRITE_HIGH_WATER
                && self.conn.start_receive()
            {
                self.start_receive();
            }
            match self.conn.next_deadline() {
                Some(due) if armed.is_none_or(|at| due < at) => {
                    let wait = due.since(now());
                    timer.as_mut().reset(tokio::time::Instant::now() + wait);
                    armed = Some(due);
                }
                Some(_) => {}
                None => armed = None,
            }
            let readable = self.out.len() < WRITE_HIGH_WATER;
            let want = if busy { READ_CHUNK } else { READ_START };
            if read_buf.capacity() - read_buf.len() < want / 4 {
                read_buf.reserve(want);
            }
            let space = read_buf.capacity() - read_buf.len();
            tokio::select! {
                io = socket(&mut stream, &mut self.out, &mut unflushed, &mut read_buf, readable) => match io {
                    Io::Read(Ok(0)) => {
                        debug!(in_flight = self.conn.in_flight(), "peer closed the connection");
                        peer_gone = true;
                        break;
                    }
                    Io::Read(Ok(n)) => {
                        busy = n == space;
                        self.decode(&mut read_buf);
                    }
                    Io::Read(Err(e)) => {
                        debug!(error = %e, "read failed");
                        peer_gone = true;
                        break;
                    }
                    Io::Written(Ok(_)) => {}
                    Io::Written(Err(e)) => {
                        debug!(error = %e, "write failed");
                        peer_gone = true;
                        break;
                    }
                },
                delivered = maybe(&mut self.receive) => {
                    self.receive = None;
                    self.feed(match delivered {
                        Ok(Some(delivery)) => Event::Delivered(delivery),
                        Ok(None) => Event::ReceiveEnded,
                        Err(e) => Event::ReceiveFailed(e.to_string()),
                    });
                }
                Some((pkid, result)) = self.completions.next(), if !self.completions.is_empty() => {
                    self.completed(pkid, result);
                }
                () = &mut timer, if armed.is_some() => {
                    armed = None;
                    self.feed(Event::Tick);
                }
                _ = maybe(&mut self.replaced) => {
                    self.replaced = None;
                    self.feed(Event::Replaced);
                }
                _ = shutdown.changed() => self.feed(Event::Shutdown),
            }
        }
        // Completions of messages the device already PUBACKed must reach the
        // store even though the connection is over: devices (the Node and
        // Python SDKs among them) acknowledge and disconnect at once.
        let drain = async {
            while let Some((pkid, result)) = self.completions.next().await {
                self.completed(pkid, result);
            }
        };
        if tokio::time::timeout(CLOSE_FLUSH, drain).await.is_err() {
            warn!("completions still pending after {CLOSE_FLUSH:?} at close; their messages return when their locks lapse");
        }
        // Messages published and never acknowledged go back to the queue now,
        // for the device's next connection, instead of when their locks
        // lapse. Release keeps the delivery count as it is: the delivery
        // already counted (every-delivery mode) or, as with a lapsed lock,
        // does not count (abandon-only mode).
        if let Some(device) = self.attachment.as_ref().map(|a| a.device_id.clone()) {
            let hub = self.shared.config.hub.clone();
            let tokens = self.conn.unacknowledged();
            let release = async {
                for token in tokens {
                    if let Err(e) = hub.release(&device, token).await {
                        debug!(error = %e, "releasing an unacknowledged message at close");
                    }
                }
            };
            if tokio::time::timeout(CLOSE_FLUSH, release).await.is_err() {
                warn!("releasing unacknowledged messages took longer than {CLOSE_FLUSH:?}; the rest return when their locks lapse");
            }
        }
        if peer_gone {
            return;
        }
        // Closing: CONNACK refusals and the last acknowledgements go out first.
        let flush = async {
            stream.write_all_buf(&mut self.out).await?;
            stream.shutdown().await
        };
        if let Ok(Err(e)) = tokio::time::timeout(CLOSE_FLUSH, flush).await {
            debug!(error = %e, "could not flush before closing");
        }
    }

    /// Feeds every whole packet in `buf` to the connection.
    fn decode(&mut self, buf: &mut BytesMut) {
        let max = self.shared.config.max_packet_size;
        while !self.conn.is_closed() {
            match Packet::read(buf, max) {
                Ok(packet) => self.feed(Event::Packet(packet)),
                Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => return,
                Err(
                    e @ (rumqttc::mqttbytes::Error::InvalidProtocol
                    | rumqttc::mqttbytes::Error::InvalidProtocolLevel(_)),
                ) if self.conn.device_id().is_none() => {
                    self.feed(Event::UnsupportedProtocol(format!(
                        "only MQTT 3.1.1 (protocol level 4) is served: {e}"
                    )));
                }
                Err(rumqttc::mqttbytes::Error::PayloadSizeLimitExceeded(size)) => {
                    self.feed(Event::Malformed(format!(
                        "packet of {size} bytes exceeds the limit of {max} bytes"
                    )));
                }
                Err(e) => self.feed(Event::Malformed(format!("malformed packet: {e}"))),
            }
        }
    }

    fn start_receive(&mut self) {
        let Some(a) = &self.attachment else {
            return;
        };
        let hub = self.shared.config.hub.clone();
        let id = a.device_id.clone();
        // Parked in the engine until a message comes or the device is
        // deleted or disabled; dropped with the connection.
        self.receive = Some(Box::pin(async move { hub.receive_parked(&id).await }));
    }

    fn completed(&mut self, pkid: u16, result: Result<(), courier_hub::Error>) {
        match &result {
            Ok(()) => Counters::add(&self.shared.counters.c2d_completed),
            Err(e) if e.code() == ErrorCode::DeviceMessageLockLost => {
                debug!(pkid, "PUBACK after the lock lapsed; the hub already redelivered or expired the message");
            }
            Err(e) => warn!(pkid, error = %e, "completing a PUBACKed message failed"),
        }
        self.feed(Event::Completed(pkid));
    }

    /// Applies `event` and everything it leads to.
    fn feed(&mut self, event: Event) {
        self.events.push_back(event);
        while let Some(event) = self.events.pop_front() {
            let now = now();
            self.conn.handle(now, event, &mut self.actions);
            let actions = std::mem::take(&mut self.actions);
            for action in actions {
                self.perform(now, action);
            }
        }
    }

    fn perform(&mut self, now: Timestamp, action: Action) {
        match action {
            Action::Send(packet) => {
                if matches!(packet, Packet::Publish(_)) {
                    Counters::add(&self.shared.counters.c2d_published);
                }
                if let Err(e) = packet.write(&mut self.out, usize::MAX) {
                    warn!(error = %e, "could not encode a packet");
                    self.events
                        .push_back(Event::Malformed(format!("could not encode: {e}")));
                }
            }
            Action::Authenticate(attempt) => {
                let cert = self.info.peer_certificate.as_deref().map(Vec::as_slice);
                let answer = match auth::authenticate(&self.shared.config, &attempt, cert, now) {
                    Ok(token_deadline) => {
                        let attached = self
                            .shared
                            .sessions
                            .attach(attempt.device_id.as_str(), attempt.clean_session);
                        tracing::Span::current().record("device", attempt.device_id.as_str());
                        self.replaced = Some(attached.replaced);
                        self.attachment = Some(Attachment {
                            device_id: attempt.device_id.clone(),
                            id: attached.id,
                            clean_session: attempt.clean_session,
                            _presence: self.shared.config.hub.connection_opened(&attempt.device_id),
                        });
                        info!(
                            clean_session = attempt.clean_session,
                            session_present = attached.resumed.is_some(),
                            "device connected"
                        );
                        Event::Accepted(Accepted {
                            token_deadline,
                            session_present: attached.resumed.is_some(),
                            subscription: attached.resumed.and_then(|s| s.subscription),
                        })
                    }
                    Err((code, why)) => Event::Refused(code, why),
                };
                self.events.push_back(answer);
            }
            Action::Complete { pkid, lock_token } => {
                if let Some(a) = &self.attachment {
                    let hub = self.shared.config.hub.clone();
                    let id = a.device_id.clone();
                    self.completions.push(Box::pin(async move {
                        (pkid, hub.complete(&id, lock_token).await)
                    }));
                }
            }
            Action::RememberSubscription(subscription) => {
                if let Some(a) = self.attachment.as_ref().filter(|a| !a.clean_session) {
                    self.shared
                        .sessions
                        .remember(a.device_id.as_str(), a.id, subscription);
                }
            }
            Action::D2cAccepted { topic, bytes } => {
                Counters::add(&self.shared.counters.d2c_accepted);
                debug!(%topic, bytes, "D2C message accepted (body dropped)");
            }
            Action::Close(reason) => self.log_close(&reason),
        }
    }

    fn log_close(&self, reason: &CloseReason) {
        let device = self.conn.device_id().map(DeviceId::as_str);
        if reason.is_protocol_error() {
            Counters::add(&self.shared.counters.protocol_errors);
            warn!(remote = %self.info.remote, device, %reason, "closing MQTT connection");
        } else {
            info!(remote = %self.info.remote, device, %reason, "closing MQTT connection");
        }
    }

    fn detach(&mut self) {
        if let Some(a) = self.attachment.take() {
            self.shared.sessions.detach(a.device_id.as_str(), a.id);
        }
    }
}
