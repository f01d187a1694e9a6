//! The transport against a scripted broker over an in-memory stream, using
//! rumqttc's codec on the broker side; time is paused where timers matter.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use courier_auth::{ConnectionString, SasToken};
use rumqttc::mqttbytes::v4::{
    ConnAck, Connect, ConnectReturnCode, Packet, PubAck, Publish, SubAck, SubscribeReasonCode,
};
use rumqttc::mqttbytes::QoS;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{renewal, serve};
use crate::credentials::Credentials;
use crate::credentials::Token;
use crate::device::session::{Demand, DeviceConfig, Session, SessionEnd, Settle};
use crate::message::Delivery;
use crate::net::Endpoint;
use crate::{Ack, ClientError, DeviceOptions, Outcome, ReceivedMessage};

const KEY: &str = "vkHC4S2PygsHjOs/d0Ymj3mF0hPk8HJTSPdXl0M0Zqo=";
const DEVICE: &str = "dev1";
/// The connection number the tests' sessions have.
const CONNECTION: u64 = 7;
/// Longest a test may take in (mostly paused) time.
const TEST_LIMIT: Duration = Duration::from_secs(3600);

fn config(options: DeviceOptions) -> DeviceConfig {
    let cs = ConnectionString::for_device("hub.test", DEVICE, KEY);
    DeviceConfig {
        device_id: DEVICE.into(),
        hub_host: "hub.test".into(),
        endpoint: Endpoint::new("hub.test", &options.connectivity, None).expect("endpoint"),
        credentials: Credentials::device(&cs, options.token_lifetime).expect("credentials"),
        options,
    }
}

/// What a test needs around one session.
struct Fixture {
    config: DeviceConfig,
    inbox_tx: mpsc::Sender<ReceivedMessage>,
    inbox_rx: mpsc::Receiver<ReceivedMessage>,
    settle_tx: mpsc::Sender<Settle>,
    settle_rx: mpsc::Receiver<Settle>,
    demand: Demand,
    closing: CancellationToken,
    connected: Arc<AtomicBool>,
}

impl Fixture {
    fn new(options: DeviceOptions) -> Self {
        let (inbox_tx, inbox_rx) = mpsc::channel(usize::from(options.prefetch));
        let (settle_tx, settle_rx) = mpsc::channel(16);
        Self {
            config: config(options),
            inbox_tx,
            inbox_rx,
            settle_tx,
            settle_rx,
            demand: Demand::default(),
            closing: CancellationToken::new(),
            connected: Arc::default(),
        }
    }

    /// The session, and the handles the script drives it with.
    fn split(&mut self) -> (Session<'_>, Handles<'_>) {
        let connected = self.connected.clone();
        let session = Session::new(
            &self.config,
            CONNECTION,
            &self.inbox_tx,
            &mut self.settle_rx,
            &self.demand,
            &self.closing,
            Box::new(move || connected.store(true, Ordering::SeqCst)),
        );
        let handles = Handles {
            inbox: &mut self.inbox_rx,
            settle: &self.settle_tx,
            closing: &self.closing,
            connected: &self.connected,
        };
        (session, handles)
    }
}

/// The application's side of a session under test.
struct Handles<'a> {
    inbox: &'a mut mpsc::Receiver<ReceivedMessage>,
    settle: &'a mpsc::Sender<Settle>,
    closing: &'a CancellationToken,
    connected: &'a AtomicBool,
}

impl Handles<'_> {
    async fn receive(&mut self) -> ReceivedMessage {
        self.inbox.recv().await.expect("a message in the inbox")
    }

    async fn settle(&self, message: &ReceivedMessage, outcome: Outcome) -> Result<(), ClientError> {
        let (reply, answer) = oneshot::channel();
        self.settle
            .send(Settle {
                message: message.clone(),
                outcome,
                reply,
            })
            .await
            .expect("the session takes settlements");
        answer.await.expect("an answer")
    }
}

/// The hub's side: rumqttc's codec over the other end of the stream.
struct Broker {
    io: DuplexStream,
    buf: BytesMut,
}

impl Broker {
    /// The next packet, or `None` once the client closed the stream.
    async fn read(&mut self) -> Option<Packet> {
        loop {
            match Packet::read(&mut self.buf, usize::MAX) {
                Ok(packet) => return Some(packet),
                Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
                Err(e) => panic!("the client wrote an unreadable packet: {e}"),
            }
            match self.io.read_buf(&mut self.buf).await {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            }
        }
    }

    /// The next packet other than PINGREQ (those are answered).
    async fn next(&mut self) -> Packet {
        loop {
            match self.read().await.expect("the client is still connected") {
                Packet::PingReq => self.write(Packet::PingResp).await,
                other => return other,
            }
        }
    }

    async fn write(&mut self, packet: Packet) {
        let mut out = BytesMut::new();
        packet.write(&mut out, usize::MAX).expect("encodes");
        self.io.write_all(&out).await.expect("the client reads");
    }

    /// Reads the CONNECT and answers `code`.
    async fn connect(&mut self, code: ConnectReturnCode, session_present: bool) -> Connect {
        let Packet::Connect(connect) = self.next().await else {
            panic!("the first packet is not CONNECT");
        };
        self.write(Packet::ConnAck(ConnAck::new(code, session_present)))
            .await;
        connect
    }

    /// Reads the SUBSCRIBE and grants QoS 1.
    async fn suback(&mut self) {
        let Packet::Subscribe(subscribe) = self.next().await else {
            panic!("expected SUBSCRIBE");
        };
        assert_eq!(subscribe.filters.len(), 1);
        assert_eq!(
            subscribe.filters[0].path,
            "devices/dev1/messages/devicebound/#"
        );
        assert_eq!(subscribe.filters[0].qos, QoS::AtLeastOnce);
        self.write(Packet::SubAck(SubAck::new(
            subscribe.pkid,
            vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)],
        )))
        .await;
    }

    /// CONNECT, CONNACK, SUBSCRIBE, SUBACK.
    async fn accept(&mut self) -> Connect {
        let connect = self.connect(ConnectReturnCode::Success, false).await;
        self.suback().await;
        connect
    }

    async fn publish(&mut self, pkid: u16, dup: bool, bag: &str, body: &str) {
        let qos = if pkid == 0 {
            QoS::AtMostOnce
        } else {
            QoS::AtLeastOnce
        };
        let mut publish = Publish::new(
            format!("devices/dev1/messages/devicebound/{bag}"),
            qos,
            body.as_bytes().to_vec(),
        );
        publish.pkid = pkid;
        publish.dup = dup;
        self.write(Packet::Publish(publish)).await;
    }

    async fn expect_puback(&mut self, pkid: u16) {
        assert_eq!(self.next().await, Packet::PubAck(PubAck::new(pkid)));
    }

    /// The client's DISCONNECT, then the end of the stream.
    async fn expect_disconnect(&mut self) {
        assert_eq!(self.next().await, Packet::Disconnect);
        assert_eq!(self.read().await, None);
    }
}

fn pipe() -> (DuplexStream, Broker) {
    let (client, broker) = tokio::io::duplex(1 << 20);
    (
        client,
        Broker {
            io: broker,
            buf: BytesMut::new(),
        },
    )
}

/// Runs the session against `script` and returns how it ended.
async fn drive<F>(session: Session<'_>, client: DuplexStream, script: F) -> SessionEnd
where
    F: std::future::Future<Output = ()>,
{
    let run = serve(session, client, "Mqtt");
    let (end, ()) = tokio::time::timeout(TEST_LIMIT, async { tokio::join!(run, script) })
        .await
        .expect("the test finished in time");
    end
}

const BAG: &str = "%24.mid=m-1&%24.to=%2Fdevices%2Fdev1%2Fmessages%2Fdevicebound&%24.cid=c-1&%24.ct=application%2Fjson&iothub-ack=full&color=red&a%20b=c%26d";

#[tokio::test(start_paused = true)]
async fn connect_subscribe_receive_complete_and_close() {
    let mut fx = Fixture::new(DeviceOptions::new().keep_alive(Duration::from_secs(30)));
    let (session, mut app) = fx.split();
    let (client, mut broker) = pipe();
    let script = async {
        let connect = broker.connect(ConnectReturnCode::Success, false).await;
        assert_eq!(connect.client_id, "dev1");
        assert!(!connect.clean_session);
        assert_eq!(connect.keep_alive, 30);
        let login = connect.login.expect("a user name and password");
        assert!(login.username.starts_with(
            "hub.test/dev1/?api-version=2021-04-12&DeviceClientType=courier-client%2F"
        ));
        let token = SasToken::parse(&login.password).expect("the password is a SAS token");
        assert_eq!(token.resource, "hub.test/devices/dev1");
        assert!(token.is_signed_by(KEY));
        assert!(!app.connected.load(Ordering::SeqCst), "not before SUBACK");
        broker.suback().await;

        broker.publish(9, false, BAG, "hello").await;
        let m = app.receive().await;
        assert!(app.connected.load(Ordering::SeqCst));
        assert_eq!(m.body_str(), Some("hello"));
        assert_eq!(m.message_id.as_deref(), Some("m-1"));
        assert_eq!(m.correlation_id.as_deref(), Some("c-1"));
        assert_eq!(m.content_type.as_deref(), Some("application/json"));
        assert_eq!(m.to.as_deref(), Some("/devices/dev1/messages/devicebound"));
        assert_eq!(m.ack, Some(Ack::Full));
        assert_eq!(m.property("color"), Some("red"));
        assert_eq!(m.property("a b"), Some("c&d"));
        assert_eq!(
            m.delivery,
            Delivery::Mqtt {
                connection: CONNECTION,
                packet_id: 9
            }
        );

        assert!(matches!(
            app.settle(&m, Outcome::Reject).await,
            Err(ClientError::NotSupported { .. })
        ));
        app.settle(&m, Outcome::Complete).await.expect("completed");
        broker.expect_puback(9).await;
        let again = app.settle(&m, Outcome::Complete).await;
        assert!(
            matches!(&again, Err(ClientError::LockLost(e)) if e.code == 412002),
            "{again:?}"
        );

        // After PUBACKs, a PINGREQ round trip comes before the DISCONNECT,
        // so that the hub has read them when the connection closes.
        app.closing.cancel();
        assert_eq!(broker.read().await, Some(Packet::PingReq));
        tokio::time::sleep(Duration::from_secs(1)).await;
        broker.write(Packet::PingResp).await;
        broker.expect_disconnect().await;
    };
    let end = drive(session, client, script).await;
    assert!(matches!(end, SessionEnd::Closed), "{end:?}");
}

#[tokio::test(start_paused = true)]
async fn a_dup_of_an_unacknowledged_packet_id_is_not_delivered_twice() {
    let mut fx = Fixture::new(DeviceOptions::new());
    let (session, mut app) = fx.split();
    let (client, mut broker) = pipe();
    let script = async {
        broker.accept().await;
        broker.publish(3, false, "%24.mid=first", "one").await;
        // The hub's lock lapsed and it resends the same packet id with DUP.
        broker.publish(3, true, "%24.mid=first", "one").await;
        broker.publish(4, false, "%24.mid=second", "two").await;
        let first = app.receive().await;
        assert_eq!(first.message_id.as_deref(), Some("first"));
        let second = app.receive().await;
        assert_eq!(second.message_id.as_deref(), Some("second"));
        assert!(app.inbox.try_recv().is_err(), "the DUP was not delivered");

        app.settle(&first, Outcome::Complete).await.expect("ok");
        broker.expect_puback(3).await;
        // Once acknowledged, a packet id may carry a redelivery: delivered.
        broker.publish(3, true, "%24.mid=first", "one").await;
        let redelivered = app.receive().await;
        assert_eq!(redelivered.message_id.as_deref(), Some("first"));
        app.settle(&redelivered, Outcome::Complete)
            .await
            .expect("ok");
        broker.expect_puback(3).await;

        // QoS 0: nothing to acknowledge, completing is a no-op.
        broker.publish(0, false, "%24.mid=q0", "zero").await;
        let q0 = app.receive().await;
        assert_eq!(
            q0.delivery,
            Delivery::Mqtt {
                connection: CONNECTION,
                packet_id: 0
            }
        );
        app.settle(&q0, Outcome::Complete).await.expect("ok");

        // A message from an earlier connection has lost its lock.
        let mut stale = second.clone();
        stale.delivery = Delivery::Mqtt {
            connection: CONNECTION - 1,
            packet_id: 4,
        };
        assert!(matches!(
            app.settle(&stale, Outcome::Complete).await,
            Err(ClientError::LockLost(_))
        ));

        app.closing.cancel();
        // No PUBACK for the QoS 0 message nor the stale one.
        broker.expect_disconnect().await;
    };
    let end = drive(session, client, script).await;
    assert!(matches!(end, SessionEnd::Closed), "{end:?}");
}

#[tokio::test(start_paused = true)]
async fn pings_when_idle_and_times_out_without_pingresp() {
    let mut fx = Fixture::new(DeviceOptions::new().keep_alive(Duration::from_secs(10)));
    let (session, _app) = fx.split();
    let (client, mut broker) = pipe();
    let start = Instant::now();
    let script = async {
        broker.accept().await;
        assert_eq!(broker.read().await, Some(Packet::PingReq));
        assert_eq!(start.elapsed().as_secs(), 10);
        broker.write(Packet::PingResp).await;
        assert_eq!(broker.read().await, Some(Packet::PingReq));
        assert_eq!(start.elapsed().as_secs(), 20);
        // No answer this time: the client gives up after the keep-alive.
        assert_eq!(broker.read().await, None);
    };
    let end = drive(session, client, script).await;
    assert!(
        matches!(end, SessionEnd::Failed(ClientError::Timeout { .. })),
        "{end:?}"
    );
    assert_eq!(start.elapsed().as_secs(), 30);
}

#[tokio::test(start_paused = true)]
async fn a_full_inbox_stops_reading_but_settlements_and_pings_go_on() {
    let options = DeviceOptions::new()
        .prefetch(1)
        .keep_alive(Duration::from_secs(10));
    let mut fx = Fixture::new(options);
    let (session, mut app) = fx.split();
    let (client, mut broker) = pipe();
    let script = async {
        broker.accept().await;
        for pkid in 1..=3 {
            broker
                .publish(pkid, false, &format!("%24.mid=m{pkid}"), "x")
                .await;
        }
        let first = app.receive().await;
        app.settle(&first, Outcome::Complete).await.expect("ok");
        broker.expect_puback(1).await;
        // The client reads nothing while the inbox is full, PINGRESPs
        // included; that must not count as a silent hub.
        for _ in 0..4 {
            assert_eq!(broker.read().await, Some(Packet::PingReq));
            broker.write(Packet::PingResp).await;
        }
        for pkid in 2..=3 {
            let m = app.receive().await;
            assert_eq!(m.message_id, Some(format!("m{pkid}")));
            app.settle(&m, Outcome::Complete).await.expect("ok");
            broker.expect_puback(pkid).await;
        }
        app.closing.cancel();
        broker.expect_disconnect().await;
    };
    let end = drive(session, client, script).await;
    assert!(matches!(end, SessionEnd::Closed), "{end:?}");
}

#[tokio::test(start_paused = true)]
async fn the_token_is_renewed_by_reconnecting() {
    let options = DeviceOptions::new().token_lifetime(Duration::from_secs(4));
    let mut fx = Fixture::new(options);
    let (session, _app) = fx.split();
    let (client, mut broker) = pipe();
    let start = Instant::now();
    let script = async {
        broker.accept().await;
        broker.expect_disconnect().await;
    };
    let end = drive(session, client, script).await;
    assert!(matches!(end, SessionEnd::RenewToken), "{end:?}");
    // 85 % of the 3 to 4 s left until `se`, the expiry in whole seconds.
    let elapsed = start.elapsed();
    assert!(
        elapsed >= Duration::from_millis(2550) && elapsed <= Duration::from_millis(3400),
        "{elapsed:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn renewal_waits_for_delivered_messages_to_be_completed() {
    let options = DeviceOptions::new()
        .token_lifetime(Duration::from_secs(1000))
        .keep_alive(Duration::from_secs(1000));
    let mut fx = Fixture::new(options);
    let (session, mut app) = fx.split();
    let (client, mut broker) = pipe();
    let start = Instant::now();
    let script = async {
        broker.accept().await;
        broker.publish(5, false, "%24.mid=held", "x").await;
        let held = app.receive().await;
        // Past the renewal time (850 s) the connection stays while the
        // message is held, and goes as soon as it is completed.
        tokio::time::sleep(Duration::from_secs(900)).await;
        app.settle(&held, Outcome::Complete).await.expect("ok");
        broker.expect_puback(5).await;
        broker.expect_disconnect().await;
        assert_eq!(start.elapsed().as_secs(), 900);
    };
    let end = drive(session, client, script).await;
    assert!(matches!(end, SessionEnd::RenewToken), "{end:?}");
}

#[tokio::test(start_paused = true)]
async fn renewal_does_not_wait_past_the_token_expiry() {
    let options = DeviceOptions::new()
        .token_lifetime(Duration::from_secs(1000))
        .keep_alive(Duration::from_secs(1000));
    let mut fx = Fixture::new(options);
    let (session, mut app) = fx.split();
    let (client, mut broker) = pipe();
    let start = Instant::now();
    let script = async {
        broker.accept().await;
        broker.publish(5, false, "%24.mid=held", "x").await;
        let _held = app.receive().await;
        broker.expect_disconnect().await;
        // `se` is whole seconds, less the 30 s margin: between 969 and 970 s.
        let at = start.elapsed();
        assert!(
            at >= Duration::from_secs(969) && at <= Duration::from_secs(970),
            "{at:?}"
        );
    };
    let end = drive(session, client, script).await;
    assert!(matches!(end, SessionEnd::RenewToken), "{end:?}");
}

#[tokio::test]
async fn refused_connacks_are_typed_errors() {
    for (code, unauthorized) in [
        (ConnectReturnCode::NotAuthorized, true),
        (ConnectReturnCode::BadUserNamePassword, true),
        (ConnectReturnCode::ServiceUnavailable, false),
    ] {
        let mut fx = Fixture::new(DeviceOptions::new());
        let (session, _app) = fx.split();
        let (client, mut broker) = pipe();
        let script = async {
            broker.connect(code, false).await;
            assert_eq!(broker.read().await, None);
        };
        let end = drive(session, client, script).await;
        match end {
            SessionEnd::Failed(e @ ClientError::Unauthorized(_)) if unauthorized => {
                assert_eq!(e.code(), Some(401002));
            }
            SessionEnd::Failed(ClientError::Network(_)) if !unauthorized => {}
            other => panic!("{code:?} ended as {other:?}"),
        }
    }
}

#[tokio::test]
async fn a_refused_subscription_fails_the_connection() {
    let mut fx = Fixture::new(DeviceOptions::new());
    let (session, _app) = fx.split();
    let (client, mut broker) = pipe();
    let script = async {
        broker.connect(ConnectReturnCode::Success, false).await;
        let Packet::Subscribe(subscribe) = broker.next().await else {
            panic!("expected SUBSCRIBE");
        };
        broker
            .write(Packet::SubAck(SubAck::new(
                subscribe.pkid,
                vec![SubscribeReasonCode::Failure],
            )))
            .await;
        assert_eq!(broker.read().await, None);
    };
    let end = drive(session, client, script).await;
    assert!(
        matches!(end, SessionEnd::Failed(ClientError::Protocol(_))),
        "{end:?}"
    );
    assert!(!fx.connected.load(Ordering::SeqCst));
}

#[tokio::test]
async fn a_resumed_session_may_deliver_before_the_suback() {
    let mut fx = Fixture::new(DeviceOptions::new());
    let (session, mut app) = fx.split();
    let (client, mut broker) = pipe();
    let script = async {
        broker.connect(ConnectReturnCode::Success, true).await;
        broker.publish(1, true, "%24.mid=early", "x").await;
        let early = app.receive().await;
        assert_eq!(early.message_id.as_deref(), Some("early"));
        broker.suback().await;
        app.settle(&early, Outcome::Complete).await.expect("ok");
        broker.expect_puback(1).await;
        app.closing.cancel();
        broker.expect_disconnect().await;
    };
    let end = drive(session, client, script).await;
    assert!(matches!(end, SessionEnd::Closed), "{end:?}");
    assert!(fx.connected.load(Ordering::SeqCst));
}

#[tokio::test]
async fn the_hub_closing_the_socket_is_a_network_failure() {
    let mut fx = Fixture::new(DeviceOptions::new());
    let (session, _app) = fx.split();
    let (client, mut broker) = pipe();
    let script = async move {
        broker.accept().await;
        drop(broker);
    };
    let end = drive(session, client, script).await;
    assert!(
        matches!(end, SessionEnd::Failed(ClientError::Network(_))),
        "{end:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_silent_hub_times_the_connect_out() {
    let mut fx = Fixture::new(DeviceOptions::new().operation_timeout(Duration::from_secs(5)));
    let (session, _app) = fx.split();
    let (client, mut broker) = pipe();
    let script = async {
        assert!(matches!(broker.next().await, Packet::Connect(_)));
        assert_eq!(broker.read().await, None);
    };
    let end = drive(session, client, script).await;
    assert!(
        matches!(
            end,
            SessionEnd::Failed(ClientError::Timeout {
                operation: "MQTT CONNECT",
                ..
            })
        ),
        "{end:?}"
    );
}

#[tokio::test]
async fn an_oversized_packet_is_refused() {
    let mut fx = Fixture::new(DeviceOptions::new());
    let (session, _app) = fx.split();
    let (client, mut broker) = pipe();
    let script = async {
        broker.accept().await;
        let body = "x".repeat(super::MAX_PACKET);
        broker.publish(1, false, "%24.mid=big", &body).await;
        assert_eq!(broker.read().await, None);
    };
    let end = drive(session, client, script).await;
    assert!(
        matches!(end, SessionEnd::Failed(ClientError::Protocol(_))),
        "{end:?}"
    );
}

#[test]
fn renewal_stays_clear_of_the_whole_second_expiry() {
    let now = std::time::UNIX_EPOCH + Duration::from_millis(1_000_000_600);
    let token = |lifetime: Duration| Token {
        value: String::new(),
        expires_at: now + lifetime,
        renew_at: Some(now + lifetime.mul_f64(0.85)),
    };
    // 4 s from x.6 s: the hub closes at `se` = 3.4 s from now, where 85 %
    // would renew; renew at 85 % of the 3.4 s instead.
    let (at, latest) = renewal(&token(Duration::from_secs(4)), now).expect("renewable");
    assert_eq!(at, latest);
    assert_eq!(at, Duration::from_millis(2890));
    // An hour: renew at 85 %, wait for held messages up to 30 s before `se`.
    let (at, latest) = renewal(&token(Duration::from_secs(3600)), now).expect("renewable");
    assert_eq!(at, Duration::from_secs(3060));
    assert_eq!(latest, Duration::from_millis(3_569_400));
    let fixed = Token {
        renew_at: None,
        ..token(Duration::from_secs(60))
    };
    assert_eq!(renewal(&fixed, now), None);
}
