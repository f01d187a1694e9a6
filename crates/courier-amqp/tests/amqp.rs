//! The AMQP head over an in-memory stream (`tokio::io::duplex`) against a
//! real hub on a temporary write-ahead log, driven by fe2o3-amqp's client.
//! Waits are on events, each bounded by a generous timeout.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use courier_amqp::{AmqpConfig, AmqpHead, ConnectionInfo, Transport};
use courier_auth::{Authenticator, Policy, Right, Rights};
use courier_core::{
    AckMode, Authentication, AuthenticationType, C2dMessage, DeviceId, DeviceSpec, HubSettings,
    IfMatch, MessageProperties, X509Thumbprint,
};
use courier_hub::{Hub, HubOptions, HubTask, SystemClock};
use courier_store::{WalOptions, WalStore};
use fe2o3_amqp::connection::ConnectionHandle;
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::definitions::{AmqpError, ErrorCondition};
use fe2o3_amqp::types::messaging::{
    AmqpValue, ApplicationProperties, Body, Data, Message, MessageId, Outcome, Properties,
};
use fe2o3_amqp::types::primitives::{Binary, OrderedMap, SimpleValue, Value};
use fe2o3_amqp::{Connection, Receiver, Sender, Session};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const HOST: &str = "hub.courier.test";
const WAIT: Duration = Duration::from_secs(15);

struct Fixture {
    _dir: tempfile::TempDir,
    service_key: String,
    hub: Hub,
    task: HubTask,
    head: AmqpHead,
}

async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, f).await.expect("timed out")
}

fn in_an_hour() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600
}

impl Fixture {
    async fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = WalStore::open(dir.path(), WalOptions::default()).unwrap();
        let settings = HubSettings {
            hub_name: "hub".into(),
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
        let key = |_: ()| {
            use base64::Engine as _;
            base64::engine::general_purpose::STANDARD.encode(uuid::Uuid::new_v4().as_bytes())
        };
        let service_key = key(());
        let policies = vec![Policy {
            key_name: "service".into(),
            primary_key: service_key.clone(),
            secondary_key: key(()),
            rights: Rights::empty().with(Right::ServiceConnect),
        }];
        let config = AmqpConfig::new(
            hub.clone(),
            Arc::new(Authenticator::new(vec![HOST.into()])),
            Arc::new(policies),
        );
        Fixture {
            _dir: dir,
            service_key,
            hub,
            task,
            head: AmqpHead::new(config),
        }
    }

    async fn device(&self, id: &str) -> String {
        self.hub
            .put_device(
                DeviceId::new(id).unwrap(),
                DeviceSpec::default(),
                IfMatch::Absent,
            )
            .await
            .unwrap();
        let creds = self.hub.device_credentials(id).unwrap();
        creds.authentication.symmetric_key.unwrap().primary_key
    }

    fn service_token(&self) -> String {
        courier_auth::generate_token(HOST, &self.service_key, Some("service"), in_an_hour())
            .unwrap()
    }

    fn device_token(&self, id: &str, key: &str) -> String {
        courier_auth::generate_token(&format!("{HOST}/devices/{id}"), key, None, in_an_hour())
            .unwrap()
    }

    /// A connection to the head, as if its TLS layer had received
    /// `certificate` (leaf DER) from the client.
    fn stream(&self, certificate: Option<Vec<u8>>) -> tokio::io::DuplexStream {
        let (client, server) = tokio::io::duplex(1 << 20);
        let head = self.head.clone();
        let info = ConnectionInfo {
            remote: SocketAddr::from(([127, 0, 0, 1], 1)),
            peer_certificate: certificate.map(Arc::new),
            transport: Transport::Plain,
        };
        tokio::spawn(async move { head.serve_connection(server, info).await });
        client
    }

    async fn open(&self, sasl: Option<SaslProfile>) -> (ConnectionHandle<()>, SessionHandle<()>) {
        self.open_with(sasl, None).await
    }

    async fn open_with(
        &self,
        sasl: Option<SaslProfile>,
        certificate: Option<Vec<u8>>,
    ) -> (ConnectionHandle<()>, SessionHandle<()>) {
        let mut builder = Connection::builder().container_id("test").hostname(HOST);
        if let Some(profile) = sasl {
            builder = builder.sasl_profile(profile);
        }
        let mut connection = within(builder.open_with_stream(self.stream(certificate)))
            .await
            .unwrap();
        let session = within(Session::begin(&mut connection)).await.unwrap();
        (connection, session)
    }

    async fn close(self) {
        self.head.shutdown();
        self.hub.shutdown().await;
        self.task.await.unwrap();
    }
}

/// Puts `token` on `$cbs` and returns the status code of the answer.
async fn put_token(session: &mut SessionHandle<()>, token: &str, message_id: MessageId) -> i32 {
    let mut requests = within(Sender::attach(session, "cbs-sender", "$cbs"))
        .await
        .unwrap();
    let mut replies = within(Receiver::attach(session, "cbs-receiver", "$cbs"))
        .await
        .unwrap();
    let mut app = OrderedMap::new();
    app.insert(
        "operation".to_owned(),
        SimpleValue::String("put-token".into()),
    );
    app.insert(
        "type".to_owned(),
        SimpleValue::String("servicebus.windows.net:sastoken".into()),
    );
    app.insert("name".to_owned(), SimpleValue::String(HOST.into()));
    let request = Message {
        header: None,
        delivery_annotations: None,
        message_annotations: None,
        properties: Some(Properties {
            message_id: Some(message_id.clone()),
            reply_to: Some("cbs".into()),
            ..Default::default()
        }),
        application_properties: Some(ApplicationProperties(app)),
        body: AmqpValue(token.to_owned()),
        footer: None,
    };
    let outcome = within(requests.send(request)).await.unwrap();
    assert!(matches!(outcome, Outcome::Accepted(_)));
    let reply = within(replies.recv::<Body<Value>>()).await.unwrap();
    replies.accept(&reply).await.unwrap();
    let reply = reply.into_message();
    assert_eq!(reply.properties.unwrap().correlation_id, Some(message_id));
    match reply.application_properties.unwrap().0.get("status-code") {
        Some(SimpleValue::Int(code)) => *code,
        other => panic!("status-code must be an int, got {other:?}"),
    }
}

fn c2d(to: &str, id: &str, ack: &str) -> Message<Data> {
    let mut app = OrderedMap::new();
    app.insert("iothub-ack".to_owned(), SimpleValue::String(ack.into()));
    app.insert("color".to_owned(), SimpleValue::String("red".into()));
    Message {
        header: None,
        delivery_annotations: None,
        message_annotations: None,
        properties: Some(Properties {
            message_id: Some(MessageId::String(id.into())),
            to: Some(to.into()),
            ..Default::default()
        }),
        application_properties: Some(ApplicationProperties(app)),
        body: Data(Binary::from(b"hello".to_vec())),
        footer: None,
    }
}

fn annotation(m: &Message<Body<Value>>, key: &str) -> Value {
    m.message_annotations
        .as_ref()
        .unwrap()
        .0
        .iter()
        .find(|(k, _)| format!("{k:?}").contains(key))
        .map(|(_, v)| v.clone())
        .unwrap_or_else(|| panic!("no annotation {key}"))
}

#[tokio::test]
async fn service_sends_over_cbs_and_unknown_devices_are_rejected_not_found() {
    let f = Fixture::new().await;
    f.device("d1").await;
    let (mut connection, mut session) = f.open(None).await;
    assert_eq!(
        put_token(&mut session, &f.service_token(), MessageId::Ulong(0)).await,
        200
    );
    let mut sender = within(Sender::attach(&mut session, "c2d", "/messages/devicebound"))
        .await
        .unwrap();

    let outcome = within(sender.send(c2d("/devices/d1/messages/devicebound", "m1", "full")))
        .await
        .unwrap();
    assert!(matches!(outcome, Outcome::Accepted(_)), "{outcome:?}");
    let queued = f
        .hub
        .receive(&DeviceId::new("d1").unwrap())
        .await
        .unwrap()
        .unwrap();
    let p = &queued.message.properties;
    assert_eq!(p.message_id.as_deref(), Some("m1"));
    assert_eq!(p.ack, AckMode::Full);
    assert_eq!(p.application, vec![("color".to_owned(), "red".to_owned())]);
    assert_eq!(queued.message.body, b"hello");

    let outcome = within(sender.send(c2d("/devices/nobody/messages/devicebound", "m2", "none")))
        .await
        .unwrap();
    let Outcome::Rejected(rejected) = outcome else {
        panic!("{outcome:?}")
    };
    let error = rejected.error.unwrap();
    assert_eq!(
        error.condition,
        ErrorCondition::AmqpError(AmqpError::NotFound)
    );
    assert!(error
        .description
        .unwrap()
        .starts_with("DeviceNotFound (404001)"));
    assert_eq!(f.head.metrics().c2d_sent, 1);

    connection.close().await.unwrap();
    f.close().await;
}

#[tokio::test]
async fn device_accept_completes_and_feedback_says_success_then_reject_says_rejected() {
    let f = Fixture::new().await;
    let key = f.device("d1").await;
    let id = DeviceId::new("d1").unwrap();
    let message = |mid: &str| C2dMessage {
        properties: MessageProperties {
            message_id: Some(mid.into()),
            ack: AckMode::Full,
            ..Default::default()
        },
        body: b"hi".to_vec(),
    };
    f.hub.send(&id, message("m1")).await.unwrap();

    let (mut dev_conn, mut dev) = f.open(None).await;
    assert_eq!(
        put_token(
            &mut dev,
            &f.device_token("d1", &key),
            MessageId::String("x".into())
        )
        .await,
        200
    );
    let mut c2d = within(Receiver::attach(
        &mut dev,
        "c2d",
        "/devices/d1/messages/devicebound",
    ))
    .await
    .unwrap();
    let d = within(c2d.recv::<Body<Value>>()).await.unwrap();
    let m = d.message();
    assert_eq!(
        m.properties.as_ref().unwrap().message_id,
        Some(MessageId::String("m1".into()))
    );
    assert_eq!(annotation(m, "iothub-deliverycount"), Value::Ubyte(0));
    assert!(matches!(
        annotation(m, "x-opt-sequence-number"),
        Value::Ulong(_)
    ));
    assert!(matches!(&m.body, Body::Data(b) if b.len() == 1 && b[0].0.as_slice() == b"hi"));
    c2d.accept(&d).await.unwrap();

    let (mut svc_conn, mut svc) = f.open(None).await;
    assert_eq!(
        put_token(&mut svc, &f.service_token(), MessageId::Ulong(1)).await,
        200
    );
    let mut feedback = within(Receiver::attach(
        &mut svc,
        "fb",
        "/messages/serviceBound/feedback",
    ))
    .await
    .unwrap();
    let batch = within(feedback.recv::<Body<Value>>()).await.unwrap();
    let props = batch.message().properties.clone().unwrap();
    assert_eq!(
        props.content_type.unwrap().0,
        "application/vnd.microsoft.iothub.feedback.json"
    );
    assert_eq!(props.user_id.unwrap().as_slice(), b"hub");
    let Body::Data(sections) = &batch.message().body else {
        panic!("feedback body must be data")
    };
    let json = String::from_utf8(sections[0].0.to_vec()).unwrap();
    assert!(json.contains(r#""originalMessageId":"m1""#), "{json}");
    assert!(json.contains(r#""statusCode":"Success""#), "{json}");
    feedback.accept(&batch).await.unwrap();

    f.hub.send(&id, message("m2")).await.unwrap();
    let d = within(c2d.recv::<Body<Value>>()).await.unwrap();
    c2d.reject(&d, None).await.unwrap();
    let batch = within(feedback.recv::<Body<Value>>()).await.unwrap();
    let Body::Data(sections) = &batch.message().body else {
        panic!("feedback body must be data")
    };
    let json = String::from_utf8(sections[0].0.to_vec()).unwrap();
    assert!(
        json.contains(r#""originalMessageId":"m2""#) && json.contains(r#""statusCode":"Rejected""#),
        "{json}"
    );
    feedback.accept(&batch).await.unwrap();

    dev_conn.close().await.unwrap();
    svc_conn.close().await.unwrap();
    f.close().await;
}

#[tokio::test]
async fn a_released_message_is_redelivered_with_delivery_count_one() {
    let f = Fixture::new().await;
    let key = f.device("d1").await;
    let id = DeviceId::new("d1").unwrap();
    f.hub
        .send(
            &id,
            C2dMessage {
                properties: Default::default(),
                body: b"x".to_vec(),
            },
        )
        .await
        .unwrap();
    let (mut conn, mut dev) = f.open(None).await;
    assert_eq!(
        put_token(&mut dev, &f.device_token("d1", &key), MessageId::Ulong(9)).await,
        200
    );
    let mut c2d = within(Receiver::attach(
        &mut dev,
        "c2d",
        "/devices/d1/messages/devicebound",
    ))
    .await
    .unwrap();
    let d = within(c2d.recv::<Body<Value>>()).await.unwrap();
    c2d.release(&d).await.unwrap();
    let again = within(c2d.recv::<Body<Value>>()).await.unwrap();
    assert_eq!(
        annotation(again.message(), "iothub-deliverycount"),
        Value::Ubyte(1)
    );
    c2d.accept(&again).await.unwrap();
    conn.close().await.unwrap();
    f.close().await;
}

/// X.509 over AMQP (wire spec §1.6): no SASL and no CBS, the TLS client
/// certificate is the device's identity.
#[tokio::test]
async fn a_self_signed_device_attaches_with_its_certificate_and_no_token() {
    let f = Fixture::new().await;
    // The thumbprint is a hash of the DER bytes; any bytes stand in for a certificate.
    let cert = b"a device certificate".to_vec();
    // Registered as the secondary (SHA-1) thumbprint, the primary being another certificate's.
    let (sha1, _) = courier_auth::thumbprints(&cert);
    let (_, retired) = courier_auth::thumbprints(b"the previous certificate");
    let spec = DeviceSpec {
        authentication: Authentication {
            kind: AuthenticationType::SelfSigned,
            symmetric_key: None,
            x509_thumbprint: X509Thumbprint {
                primary_thumbprint: Some(retired),
                secondary_thumbprint: Some(sha1),
            },
        },
        ..Default::default()
    };
    let id = DeviceId::new("x509-dev").unwrap();
    f.hub
        .put_device(id.clone(), spec, IfMatch::Absent)
        .await
        .unwrap();
    f.device("sas-dev").await;
    f.hub
        .send(
            &id,
            C2dMessage {
                properties: Default::default(),
                body: b"to the certificate".to_vec(),
            },
        )
        .await
        .unwrap();

    let (mut conn, mut dev) = f.open_with(None, Some(cert.clone())).await;
    let mut c2d = within(Receiver::attach(
        &mut dev,
        "c2d",
        "/devices/x509-dev/messages/devicebound",
    ))
    .await
    .unwrap();
    let delivery = within(c2d.recv::<Body<Value>>()).await.unwrap();
    c2d.accept(&delivery).await.unwrap();
    assert_eq!(f.head.metrics().c2d_delivered, 1);
    // The certificate proves x509-dev only, not a SAS device on the same connection.
    let other = within(Receiver::attach(
        &mut dev,
        "c2d-other",
        "/devices/sas-dev/messages/devicebound",
    ))
    .await;
    if let Ok(mut link) = other {
        assert!(within(link.recv::<Body<Value>>()).await.is_err());
    }
    conn.close().await.unwrap();

    // Another certificate is refused.
    let (mut conn, mut dev) = f
        .open_with(None, Some(b"another certificate".to_vec()))
        .await;
    let refused = within(Receiver::attach(
        &mut dev,
        "c2d",
        "/devices/x509-dev/messages/devicebound",
    ))
    .await;
    if let Ok(mut link) = refused {
        let error = within(link.recv::<Body<Value>>()).await.unwrap_err();
        assert!(format!("{error:?}").contains("401"), "{error:?}");
    }
    assert_eq!(f.head.metrics().c2d_delivered, 1);
    let _ = conn.close().await;
    f.close().await;
}

#[tokio::test]
async fn a_device_token_cannot_attach_another_devices_link() {
    let f = Fixture::new().await;
    let key = f.device("d1").await;
    f.device("d2").await;
    f.hub
        .send(
            &DeviceId::new("d2").unwrap(),
            C2dMessage {
                properties: Default::default(),
                body: b"x".to_vec(),
            },
        )
        .await
        .unwrap();
    let (mut conn, mut dev) = f.open(None).await;
    assert_eq!(
        put_token(&mut dev, &f.device_token("d1", &key), MessageId::Ulong(1)).await,
        200
    );
    // The head accepts the attach, then detaches it with an error.
    let attached = within(Receiver::attach(
        &mut dev,
        "c2d",
        "/devices/d2/messages/devicebound",
    ))
    .await;
    if let Ok(mut link) = attached {
        assert!(within(link.recv::<Body<Value>>()).await.is_err());
    }
    assert_eq!(f.head.metrics().c2d_delivered, 0);
    // A bad token is answered 401.
    assert_eq!(
        put_token(
            &mut dev,
            "SharedAccessSignature sr=x&sig=y&se=1",
            MessageId::Ulong(2)
        )
        .await,
        401
    );
    conn.close().await.unwrap();
    f.close().await;
}

#[tokio::test]
async fn sasl_plain_authenticates_a_service_without_cbs() {
    let f = Fixture::new().await;
    f.device("d1").await;
    let plain = SaslProfile::Plain {
        username: "service@sas.root.hub".into(),
        password: f.service_token(),
    };
    let (mut conn, mut session) = f.open(Some(plain)).await;
    let mut sender = within(Sender::attach(
        &mut session,
        "c2d",
        "amqps://hub.courier.test/messages/devicebound",
    ))
    .await
    .unwrap();
    let outcome = within(sender.send(c2d("/devices/d1/messages/devicebound", "m1", "none")))
        .await
        .unwrap();
    assert!(matches!(outcome, Outcome::Accepted(_)), "{outcome:?}");
    conn.close().await.unwrap();

    // A wrong password fails the SASL exchange.
    let wrong = SaslProfile::Plain {
        username: "service@sas.root.hub".into(),
        password: "SharedAccessSignature sr=x&sig=y&se=1".into(),
    };
    let opened = within(
        Connection::builder()
            .container_id("t")
            .sasl_profile(wrong)
            .open_with_stream(f.stream(None)),
    )
    .await;
    assert!(opened.is_err());
    f.close().await;
}

#[tokio::test]
async fn malformed_bytes_close_only_that_connection() {
    let f = Fixture::new().await;
    let (mut good, mut session) = f.open(None).await;
    let mut bad = f.stream(None);
    bad.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    within(bad.read_to_end(&mut answer)).await.unwrap();
    assert_eq!(answer, b"AMQP\x00\x01\x00\x00");
    // A valid header followed by garbage frames.
    let mut bad = f.stream(None);
    bad.write_all(b"AMQP\x00\x01\x00\x00\x00\x00\x00\x10\x02\x00\x00\x00garbagegarbage")
        .await
        .unwrap();
    let mut rest = Vec::new();
    let _ = within(bad.read_to_end(&mut rest)).await;
    assert!(f.head.metrics().protocol_errors >= 1);
    // The first connection still works.
    assert_eq!(
        put_token(&mut session, &f.service_token(), MessageId::Ulong(3)).await,
        200
    );
    good.close().await.unwrap();
    f.close().await;
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[tokio::test]
async fn a_link_is_detached_when_its_token_lapses_unless_renewed() {
    let f = Fixture::new().await;
    let key = f.device("d1").await;
    let id = DeviceId::new("d1").unwrap();
    let short = |se: u64| {
        courier_auth::generate_token(&format!("{HOST}/devices/d1"), &key, None, se).unwrap()
    };

    // Not renewed: the link is detached at `se` (the wait ends on the detach).
    let (mut conn, mut dev) = f.open(None).await;
    assert_eq!(
        put_token(&mut dev, &short(unix_now() + 2), MessageId::Ulong(1)).await,
        200
    );
    let mut c2d = within(Receiver::attach(
        &mut dev,
        "c2d",
        "/devices/d1/messages/devicebound",
    ))
    .await
    .unwrap();
    assert!(within(c2d.recv::<Body<Value>>()).await.is_err());
    conn.close().await.unwrap();

    // Renewed on the same connection before `se`: the link outlives the first token.
    let (mut conn, mut dev) = f.open(None).await;
    let first_se = unix_now() + 2;
    assert_eq!(
        put_token(&mut dev, &short(first_se), MessageId::Ulong(2)).await,
        200
    );
    let mut c2d = within(Receiver::attach(
        &mut dev,
        "c2d",
        "/devices/d1/messages/devicebound",
    ))
    .await
    .unwrap();
    assert_eq!(
        put_token(&mut dev, &f.device_token("d1", &key), MessageId::Ulong(3)).await,
        200
    );
    // The first token's lapse is wall-clock time, not an event: let it pass.
    let lapse = UNIX_EPOCH + Duration::from_secs(first_se + 1);
    tokio::time::sleep(lapse.duration_since(SystemTime::now()).unwrap_or_default()).await;
    f.hub
        .send(
            &id,
            C2dMessage {
                properties: Default::default(),
                body: b"late".to_vec(),
            },
        )
        .await
        .unwrap();
    let d = within(c2d.recv::<Body<Value>>()).await.unwrap();
    c2d.accept(&d).await.unwrap();
    conn.close().await.unwrap();
    f.close().await;
}

#[tokio::test]
async fn telemetry_is_accepted_and_a_device_counts_as_connected() {
    let f = Fixture::new().await;
    let key = f.device("d1").await;
    let id = DeviceId::new("d1").unwrap();
    let (mut conn, mut dev) = f.open(None).await;
    assert_eq!(
        put_token(&mut dev, &f.device_token("d1", &key), MessageId::Ulong(1)).await,
        200
    );
    let mut events = within(Sender::attach(
        &mut dev,
        "d2c",
        "/devices/d1/messages/events",
    ))
    .await
    .unwrap();
    let outcome = within(events.send(Message::from("telemetry")))
        .await
        .unwrap();
    assert!(matches!(outcome, Outcome::Accepted(_)));
    assert_eq!(f.head.metrics().d2c_accepted, 1);
    let info = f.hub.get_device(&id).await.unwrap();
    assert_eq!(
        info.connection_state,
        courier_hub::ConnectionState::Connected
    );
    conn.close().await.unwrap();
    f.close().await;
}
