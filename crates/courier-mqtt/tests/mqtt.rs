//! The MQTT head over an in-memory stream (`tokio::io::duplex`) against a
//! real hub on a temporary write-ahead log. The client writes and reads raw
//! MQTT 3.1.1 packets through the same codec, so every flag (DUP, packet id,
//! session-present, return codes) is visible. Waits are on events, each
//! bounded by a generous timeout; lock lapses use a 1 s lock timeout.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use courier_auth::{Authenticator, Policy, Right, Rights};
use courier_core::{
    AckMode, Authentication, AuthenticationType, C2dMessage, DeviceId, DeviceSpec, DeviceStatus,
    HubSettings, IfMatch, MessageProperties, Outcome, QueueLimits, X509Thumbprint,
};
use courier_hub::{Hub, HubOptions, HubTask, SystemClock};
use courier_mqtt::{ConnectionInfo, MqttConfig, MqttHead, Transport};
use courier_store::{WalOptions, WalStore};
use rumqttc::mqttbytes::v4::{
    ConnAck, Connect, ConnectReturnCode, Login, Packet, PubAck, Publish, Subscribe,
    SubscribeReasonCode,
};
use rumqttc::mqttbytes::QoS;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

const HOST: &str = "hub.courier.test";
const WAIT: Duration = Duration::from_secs(15);

struct Fixture {
    _dir: tempfile::TempDir,
    /// The key of policy `device` (DeviceConnect).
    policy_key: String,
    hub: Hub,
    task: HubTask,
    head: MqttHead,
}

impl Fixture {
    async fn new(limits: QueueLimits) -> Self {
        Self::with(limits, |_| {}).await
    }

    async fn with(limits: QueueLimits, tune: impl FnOnce(&mut MqttConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = WalStore::open(dir.path(), WalOptions::default()).unwrap();
        let settings = HubSettings {
            hub_name: "hub".into(),
            limits,
            feedback: courier_core::FeedbackSettings {
                batch_window: Duration::from_millis(10),
                ..Default::default()
            },
            ..Default::default()
        };
        let (hub, task, _) = Hub::open(
            Arc::new(store),
            settings,
            Arc::new(SystemClock),
            HubOptions::default(),
        )
        .unwrap();
        let policy_key = courier_auth::generate_key(&mut rand::thread_rng());
        let policies = vec![Policy {
            key_name: "device".into(),
            primary_key: policy_key.clone(),
            secondary_key: courier_auth::generate_key(&mut rand::thread_rng()),
            rights: Rights::empty().with(Right::DeviceConnect),
        }];
        let mut config = MqttConfig::new(
            hub.clone(),
            Arc::new(Authenticator::new(vec![HOST.into()])),
            Arc::new(policies),
        );
        tune(&mut config);
        Fixture {
            _dir: dir,
            policy_key,
            hub,
            task,
            head: MqttHead::new(config),
        }
    }

    async fn device(&self, id: &str, status: DeviceStatus) -> String {
        let spec = DeviceSpec {
            status,
            ..Default::default()
        };
        self.hub
            .put_device(DeviceId::new(id).unwrap(), spec, IfMatch::Absent)
            .await
            .unwrap();
        let creds = self.hub.device_credentials(id).unwrap();
        creds.authentication.symmetric_key.unwrap().primary_key
    }

    async fn send(&self, id: &str, message: C2dMessage) {
        self.hub
            .send(&DeviceId::new(id).unwrap(), message)
            .await
            .unwrap();
    }

    fn open(&self) -> Client {
        self.open_with_certificate(None)
    }

    /// A connection whose TLS layer presented `cert` (leaf DER).
    fn open_with_certificate(&self, cert: Option<Vec<u8>>) -> Client {
        let (client, server) = tokio::io::duplex(64 * 1024);
        let head = self.head.clone();
        let info = ConnectionInfo {
            remote: SocketAddr::from(([127, 0, 0, 1], 50000)),
            peer_certificate: cert.map(Arc::new),
            transport: Transport::Tls,
        };
        tokio::spawn(async move { head.serve_connection(server, info).await });
        Client {
            stream: client,
            buf: BytesMut::new(),
        }
    }

    /// A connected client of `id` (CONNACK checked), with the given CleanSession.
    async fn connect(&self, id: &str, key: &str, clean: bool) -> (Client, ConnAck) {
        let mut c = self.open();
        c.send(connect(id, &token(id, key, 3600), clean)).await;
        let ack = c.connack().await;
        assert_eq!(ack.code, ConnectReturnCode::Success);
        (c, ack)
    }

    async fn feedback(&self) -> Vec<(Option<String>, Outcome)> {
        let d = self
            .hub
            .receive_feedback_wait(WAIT)
            .await
            .unwrap()
            .expect("a feedback batch");
        self.hub.complete_feedback(d.lock_token).await.unwrap();
        d.batch
            .records
            .iter()
            .map(|r| (r.original_message_id.clone(), r.status))
            .collect()
    }

    async fn queued(&self, id: &str) -> usize {
        let info = self
            .hub
            .get_device(&DeviceId::new(id).unwrap())
            .await
            .unwrap();
        info.cloud_to_device_message_count
    }

    async fn stop(self) {
        self.head.shutdown();
        self.hub.shutdown().await;
        self.task.await.unwrap();
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(id: &str, key: &str, lifetime_secs: u64) -> String {
    courier_auth::generate_token(
        &format!("{HOST}/devices/{id}"),
        key,
        None,
        now_unix() + lifetime_secs,
    )
    .unwrap()
}

/// A CONNECT shaped like the Node SDK's.
fn connect(id: &str, password: &str, clean_session: bool) -> Packet {
    Packet::Connect(Connect {
        protocol: rumqttc::mqttbytes::Protocol::V4,
        keep_alive: 180,
        client_id: id.into(),
        clean_session,
        last_will: None,
        login: Some(Login {
            username: format!("{HOST}/{id}/?api-version=2021-04-12&DeviceClientType=azure-iot-device%2F1.18.4%20(node%20v20.20.2%3B%20Debian%2012%3B%20x64)"),
            password: password.into(),
        }),
    })
}

fn subscribe_c2d(id: &str) -> Packet {
    Packet::Subscribe(Subscribe::new(
        format!("devices/{id}/messages/devicebound/#"),
        QoS::AtLeastOnce,
    ))
}

struct Client {
    stream: DuplexStream,
    buf: BytesMut,
}

impl Client {
    async fn send(&mut self, packet: Packet) {
        let mut out = BytesMut::new();
        packet.write(&mut out, usize::MAX).unwrap();
        self.stream.write_all(&out).await.unwrap();
    }

    /// The next packet, or `None` when the server closed the connection.
    async fn next(&mut self) -> Option<Packet> {
        tokio::time::timeout(WAIT, async {
            loop {
                match Packet::read(&mut self.buf, usize::MAX) {
                    Ok(p) => return Some(p),
                    Err(rumqttc::mqttbytes::Error::InsufficientBytes(_)) => {}
                    Err(e) => panic!("server sent a malformed packet: {e}"),
                }
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
        .expect("the server answers within the timeout")
    }

    async fn connack(&mut self) -> ConnAck {
        match self.next().await {
            Some(Packet::ConnAck(a)) => a,
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    async fn publish(&mut self) -> Publish {
        match self.next().await {
            Some(Packet::Publish(p)) => p,
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }

    async fn subscribe(&mut self, id: &str) {
        self.send(subscribe_c2d(id)).await;
        match self.next().await {
            Some(Packet::SubAck(a)) => {
                assert_eq!(
                    a.return_codes,
                    vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]
                )
            }
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    async fn closed(&mut self) {
        assert!(
            self.next().await.is_none(),
            "the server should close the connection"
        );
    }
}

fn limits(lock_timeout: Duration, max_delivery_count: u32) -> QueueLimits {
    QueueLimits {
        lock_timeout,
        max_delivery_count,
        ..Default::default()
    }
}

fn message(id: &str, ack: AckMode) -> C2dMessage {
    C2dMessage {
        properties: MessageProperties {
            message_id: Some(id.into()),
            ack,
            ..Default::default()
        },
        body: id.as_bytes().to_vec(),
    }
}

#[tokio::test]
async fn a_message_arrives_with_its_properties_byte_for_byte_and_puback_completes_it() {
    let fx = Fixture::new(QueueLimits::default()).await;
    let key = fx.device("dev-1", DeviceStatus::Enabled).await;
    let body: Vec<u8> = (0..=255u8).collect();
    fx.send(
        "dev-1",
        C2dMessage {
            properties: MessageProperties {
                message_id: Some("mid 1".into()),
                correlation_id: Some("corr/1".into()),
                content_type: Some("application/json".into()),
                content_encoding: Some("utf-8".into()),
                ack: AckMode::Positive,
                application: vec![
                    ("color".into(), "red & blue=purple".into()),
                    ("grüße".into(), "50%+".into()),
                ],
                ..Default::default()
            },
            body: body.clone(),
        },
    )
    .await;
    let (mut c, ack) = fx.connect("dev-1", &key, false).await;
    assert!(!ack.session_present);
    c.subscribe("dev-1").await;
    let p = c.publish().await;
    assert_eq!(
        p.topic,
        "devices/dev-1/messages/devicebound/%24.mid=mid%201&%24.to=%2Fdevices%2Fdev-1%2Fmessages%2Fdevicebound&%24.cid=corr%2F1&%24.ct=application%2Fjson&%24.ce=utf-8&iothub-ack=positive&color=red%20%26%20blue%3Dpurple&gr%C3%BC%C3%9Fe=50%25%2B"
    );
    assert_eq!(&p.payload[..], &body[..]);
    assert_eq!((p.qos, p.dup), (QoS::AtLeastOnce, false));
    c.send(Packet::PubAck(PubAck::new(p.pkid))).await;
    assert_eq!(
        fx.feedback().await,
        vec![(Some("mid 1".into()), Outcome::Completed)]
    );
    assert_eq!(fx.queued("dev-1").await, 0);
    let m = fx.head.metrics();
    assert_eq!((m.connections_total, m.c2d_published), (1, 1));
    fx.stop().await;
}

#[tokio::test]
async fn several_messages_are_in_flight_at_once() {
    let fx = Fixture::new(QueueLimits::default()).await;
    let key = fx.device("dev-1", DeviceStatus::Enabled).await;
    for i in 0..5 {
        fx.send("dev-1", message(&format!("m{i}"), AckMode::None))
            .await;
    }
    let (mut c, _) = fx.connect("dev-1", &key, true).await;
    c.subscribe("dev-1").await;
    let mut ids = Vec::new();
    for i in 0..5 {
        let p = c.publish().await;
        assert_eq!(&p.payload[..], format!("m{i}").as_bytes());
        ids.push(p.pkid);
    }
    ids.dedup();
    assert_eq!(ids.len(), 5, "distinct packet ids");
    for id in ids {
        c.send(Packet::PubAck(PubAck::new(id))).await;
    }
    c.send(Packet::Disconnect).await;
    c.closed().await;
    fx.stop().await;
}

#[tokio::test]
async fn pubacks_sent_just_before_the_device_goes_away_still_complete() {
    // As many as the hub keeps in flight on one connection.
    const IN_FLIGHT: usize = 5;
    let fx = Fixture::new(QueueLimits::default()).await;
    let key = fx.device("dev-1", DeviceStatus::Enabled).await;
    for i in 0..IN_FLIGHT {
        fx.send("dev-1", message(&format!("m{i}"), AckMode::Positive))
            .await;
    }
    let (mut c, _) = fx.connect("dev-1", &key, true).await;
    c.subscribe("dev-1").await;
    let mut acks = BytesMut::new();
    for _ in 0..IN_FLIGHT {
        let p = c.publish().await;
        Packet::PubAck(PubAck::new(p.pkid))
            .write(&mut acks, usize::MAX)
            .unwrap();
    }
    // Every PUBACK in one write, then the socket is gone: no DISCONNECT, no
    // chance for the hub to answer.
    c.stream.write_all(&acks).await.unwrap();
    drop(c);
    let mut completed = 0;
    while completed < IN_FLIGHT {
        let batch = fx.feedback().await;
        assert!(
            batch.iter().all(|(_, o)| *o == Outcome::Completed),
            "{batch:?}"
        );
        completed += batch.len();
    }
    assert_eq!(fx.queued("dev-1").await, 0);
    fx.stop().await;
}

#[tokio::test]
async fn a_withheld_puback_redelivers_with_dup_and_the_same_packet_id() {
    let fx = Fixture::new(limits(Duration::from_secs(1), 10)).await;
    let key = fx.device("dev-1", DeviceStatus::Enabled).await;
    fx.send("dev-1", message("m1", AckMode::Full)).await;
    let (mut c, _) = fx.connect("dev-1", &key, true).await;
    c.subscribe("dev-1").await;
    let first = c.publish().await;
    assert!(!first.dup);
    // No PUBACK: the lock lapses after 1 s and the core returns the message.
    let again = c.publish().await;
    assert!(again.dup);
    assert_eq!(again.pkid, first.pkid);
    assert_eq!(again.topic, first.topic);
    c.send(Packet::PubAck(PubAck::new(again.pkid))).await;
    assert_eq!(
        fx.feedback().await,
        vec![(Some("m1".into()), Outcome::Completed)]
    );
    fx.stop().await;
}

#[tokio::test]
async fn the_max_delivery_count_dead_letters_with_feedback() {
    let fx = Fixture::new(limits(Duration::from_secs(1), 2)).await;
    let key = fx.device("dev-1", DeviceStatus::Enabled).await;
    fx.send("dev-1", message("m1", AckMode::Negative)).await;
    let (mut c, _) = fx.connect("dev-1", &key, true).await;
    c.subscribe("dev-1").await;
    let first = c.publish().await;
    let second = c.publish().await;
    assert_eq!((first.dup, second.dup), (false, true));
    // The second lapse reaches the count of 2: the core dead-letters it.
    assert_eq!(
        fx.feedback().await,
        vec![(Some("m1".into()), Outcome::DeliveryCountExceeded)]
    );
    assert_eq!(fx.queued("dev-1").await, 0);
    fx.stop().await;
}

#[tokio::test]
async fn a_persistent_session_resumes_delivery_without_resubscribing() {
    let fx = Fixture::new(QueueLimits::default()).await;
    let key = fx.device("dev-1", DeviceStatus::Enabled).await;
    let (mut c, ack) = fx.connect("dev-1", &key, false).await;
    assert!(!ack.session_present);
    c.subscribe("dev-1").await;
    c.send(Packet::Disconnect).await;
    c.closed().await;

    fx.send("dev-1", message("m1", AckMode::None)).await;
    let (mut c, ack) = fx.connect("dev-1", &key, false).await;
    assert!(ack.session_present);
    let p = c.publish().await;
    assert_eq!(&p.payload[..], b"m1");
    c.send(Packet::PubAck(PubAck::new(p.pkid))).await;
    c.send(Packet::Disconnect).await;
    c.closed().await;

    // CleanSession 1 discards the session: nothing flows until a SUBSCRIBE.
    fx.send("dev-1", message("m2", AckMode::None)).await;
    let (mut c, ack) = fx.connect("dev-1", &key, true).await;
    assert!(!ack.session_present);
    c.send(Packet::PingReq).await;
    assert_eq!(c.next().await, Some(Packet::PingResp));
    c.subscribe("dev-1").await;
    assert_eq!(&c.publish().await.payload[..], b"m2");
    fx.stop().await;
}

#[tokio::test]
async fn wrong_credentials_are_refused_with_the_right_connack() {
    let fx = Fixture::new(QueueLimits::default()).await;
    let key = fx.device("dev-1", DeviceStatus::Enabled).await;
    let off_key = fx.device("off", DeviceStatus::Disabled).await;
    let other_key = fx.device("dev-2", DeviceStatus::Enabled).await;
    let bad_key = courier_auth::generate_key(&mut rand::thread_rng());
    let cases = [
        (
            connect("dev-1", &token("dev-1", &bad_key, 3600), false),
            ConnectReturnCode::NotAuthorized,
        ),
        (
            connect("dev-1", "not a token", false),
            ConnectReturnCode::NotAuthorized,
        ),
        (
            connect("dev-1", "", false),
            ConnectReturnCode::NotAuthorized,
        ),
        (
            connect("dev-1", &token("dev-2", &other_key, 3600), false),
            ConnectReturnCode::NotAuthorized,
        ),
        (
            connect("off", &token("off", &off_key, 3600), false),
            ConnectReturnCode::NotAuthorized,
        ),
        (
            connect("ghost", &token("ghost", &key, 3600), false),
            ConnectReturnCode::NotAuthorized,
        ),
        (
            connect(
                "dev-1",
                &token("dev-1", &key, 0).replace(HOST, "other.test"),
                false,
            ),
            ConnectReturnCode::NotAuthorized,
        ),
    ];
    for (packet, code) in cases {
        let mut c = fx.open();
        c.send(packet.clone()).await;
        assert_eq!(c.connack().await.code, code, "{packet:?}");
        c.closed().await;
    }
    // The user name's host must be this hub's (any case is fine).
    let mut c = fx.open();
    let Packet::Connect(mut wrong_host) = connect("dev-1", &token("dev-1", &key, 3600), false)
    else {
        unreachable!()
    };
    wrong_host.login.as_mut().unwrap().username = "elsewhere.test/dev-1/?api-version=1".into();
    c.send(Packet::Connect(wrong_host)).await;
    assert_eq!(
        c.connack().await.code,
        ConnectReturnCode::BadUserNamePassword
    );
    let mut c = fx.open();
    let Packet::Connect(mut upper) = connect("dev-1", &token("dev-1", &key, 3600), false) else {
        unreachable!()
    };
    upper.login.as_mut().unwrap().username = "HUB.Courier.Test/dev-1/?api-version=1".into();
    c.send(Packet::Connect(upper)).await;
    assert_eq!(c.connack().await.code, ConnectReturnCode::Success);
    fx.stop().await;
}

#[tokio::test]
async fn a_device_connect_policy_token_scoped_to_the_device_is_accepted() {
    let fx = Fixture::new(QueueLimits::default()).await;
    fx.device("dev-1", DeviceStatus::Enabled).await;
    let t = courier_auth::generate_token(
        &format!("{HOST}/devices/dev-1"),
        &fx.policy_key,
        Some("device"),
        now_unix() + 60,
    )
    .unwrap();
    let mut c = fx.open();
    c.send(connect("dev-1", &t, false)).await;
    assert_eq!(c.connack().await.code, ConnectReturnCode::Success);
    fx.stop().await;
}

#[tokio::test]
async fn a_self_signed_device_connects_with_its_certificate_and_no_password() {
    let fx = Fixture::new(QueueLimits::default()).await;
    // The thumbprint is a hash of the DER bytes; any bytes stand in for a certificate.
    let cert = b"a device certificate".to_vec();
    let (_, sha256) = courier_auth::thumbprints(&cert);
    let spec = DeviceSpec {
        authentication: Authentication {
            kind: AuthenticationType::SelfSigned,
            symmetric_key: None,
            x509_thumbprint: X509Thumbprint {
                primary_thumbprint: Some(sha256),
                secondary_thumbprint: None,
            },
        },
        ..Default::default()
    };
    fx.hub
        .put_device(DeviceId::new("x509-dev").unwrap(), spec, IfMatch::Absent)
        .await
        .unwrap();
    let mut c = fx.open_with_certificate(Some(cert));
    c.send(connect("x509-dev", "", false)).await;
    assert_eq!(c.connack().await.code, ConnectReturnCode::Success);

    let mut other = fx.open_with_certificate(Some(b"another certificate".to_vec()));
    other.send(connect("x509-dev", "", false)).await;
    assert_eq!(other.connack().await.code, ConnectReturnCode::NotAuthorized);
    other.closed().await;
    fx.stop().await;
}

#[tokio::test]
async fn a_new_connection_of_the_same_device_closes_the_older_one() {
    let fx = Fixture::new(QueueLimits::default()).await;
    let key = fx.device("dev-1", DeviceStatus::Enabled).await;
    let (mut old, _) = fx.connect("dev-1", &key, false).await;
    let (mut new, _) = fx.connect("dev-1", &key, false).await;
    old.closed().await;
    new.send(Packet::PingReq).await;
    assert_eq!(new.next().await, Some(Packet::PingResp));
    fx.stop().await;
}

#[tokio::test]
async fn an_expiring_token_ends_the_connection() {
    let fx = Fixture::new(QueueLimits::default()).await;
    let key = fx.device("dev-1", DeviceStatus::Enabled).await;
    let mut c = fx.open();
    c.send(connect("dev-1", &token("dev-1", &key, 2), false))
        .await;
    assert_eq!(c.connack().await.code, ConnectReturnCode::Success);
    c.closed().await;
    fx.stop().await;
}

#[tokio::test]
async fn malformed_and_oversized_packets_close_only_their_connection() {
    let fx = Fixture::with(QueueLimits::default(), |c| c.max_packet_size = 1024).await;
    let key = fx.device("dev-1", DeviceStatus::Enabled).await;
    fx.device("dev-2", DeviceStatus::Enabled).await;
    let (mut bystander, _) = fx.connect("dev-1", &key, true).await;

    let mut garbage = fx.open();
    garbage.stream.write_all(&[0xF0, 0x00]).await.unwrap();
    garbage.closed().await;

    let (mut big, _) = fx.connect("dev-1", &key, true).await;
    bystander.closed().await; // replaced by `big`, same device
    let mut p = Publish::new(
        "devices/dev-1/messages/events/",
        QoS::AtLeastOnce,
        vec![0u8; 2048],
    );
    p.pkid = 1;
    big.send(Packet::Publish(p)).await;
    big.closed().await;

    let key2 = fx
        .hub
        .device_credentials("dev-2")
        .unwrap()
        .authentication
        .symmetric_key
        .unwrap()
        .primary_key;
    let (mut fine, _) = fx.connect("dev-2", &key2, true).await;
    fine.send(Packet::PingReq).await;
    assert_eq!(fine.next().await, Some(Packet::PingResp));
    assert_eq!(fx.head.metrics().protocol_errors, 2);
    fx.stop().await;
}

#[tokio::test]
async fn d2c_publishes_are_acknowledged_and_counted() {
    let fx = Fixture::new(QueueLimits::default()).await;
    let key = fx.device("dev-1", DeviceStatus::Enabled).await;
    let (mut c, _) = fx.connect("dev-1", &key, true).await;
    let mut p = Publish::new(
        "devices/dev-1/messages/events/%24.ct=application%2Fjson&%24.ce=utf-8",
        QoS::AtLeastOnce,
        b"{\"t\":21}".to_vec(),
    );
    p.pkid = 9;
    c.send(Packet::Publish(p)).await;
    assert_eq!(c.next().await, Some(Packet::PubAck(PubAck::new(9))));
    assert_eq!(fx.head.metrics().d2c_accepted, 1);
    fx.stop().await;
}

#[tokio::test]
async fn shutdown_closes_every_connection() {
    let fx = Fixture::new(QueueLimits::default()).await;
    let key = fx.device("dev-1", DeviceStatus::Enabled).await;
    let (mut c, _) = fx.connect("dev-1", &key, true).await;
    fx.head.shutdown();
    c.closed().await;
    fx.stop().await;
}

#[tokio::test]
async fn the_registry_shows_a_device_connected_while_its_connection_lives() {
    let fx = Fixture::new(QueueLimits::default()).await;
    let key = fx.device("dev-1", DeviceStatus::Enabled).await;
    let id = courier_core::DeviceId::new("dev-1").unwrap();
    let before = fx.hub.get_device(&id).await.unwrap();
    assert_eq!(
        before.connection_state,
        courier_hub::ConnectionState::Disconnected
    );
    assert_eq!(before.connection_state_updated_time, None);

    let (client, _) = fx.connect("dev-1", &key, false).await;
    let during = fx.hub.get_device(&id).await.unwrap();
    assert_eq!(
        during.connection_state,
        courier_hub::ConnectionState::Connected
    );
    assert!(during.connection_state_updated_time.is_some());
    assert_eq!(fx.hub.connected_device_count(), 1);

    drop(client);
    // The server notices the closed socket on its own task: wait for it.
    let deadline = tokio::time::Instant::now() + WAIT;
    while fx.hub.connected_device_count() != 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "still connected after close"
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let after = fx.hub.get_device(&id).await.unwrap();
    assert_eq!(
        after.connection_state,
        courier_hub::ConnectionState::Disconnected
    );
    fx.stop().await;
}

#[tokio::test]
async fn keep_alive_holds_while_the_device_pings_and_closes_when_it_goes_quiet() {
    let fx = Fixture::new(QueueLimits::default()).await;
    let key = fx.device("dev-1", DeviceStatus::Enabled).await;
    let mut c = fx.open();
    let Packet::Connect(mut connect) = connect("dev-1", &token("dev-1", &key, 3600), true) else {
        unreachable!()
    };
    // 1 s keep-alive: the hub closes after 1.5 s without a packet.
    connect.keep_alive = 1;
    c.send(Packet::Connect(connect)).await;
    assert_eq!(c.connack().await.code, ConnectReturnCode::Success);
    // Each ping moves the deadline later, past the one the timer was set for.
    let start = tokio::time::Instant::now();
    while start.elapsed() < Duration::from_millis(3000) {
        tokio::time::sleep(Duration::from_millis(400)).await;
        c.send(Packet::PingReq).await;
        assert!(
            matches!(c.next().await, Some(Packet::PingResp)),
            "closed while the device kept pinging"
        );
    }
    let quiet = tokio::time::Instant::now();
    c.closed().await;
    let after = quiet.elapsed();
    assert!(
        after >= Duration::from_millis(1400) && after < Duration::from_secs(5),
        "closed {after:?} after the last ping; 1.5 s expected"
    );
    fx.stop().await;
}
