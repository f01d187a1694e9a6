//! AMQP against the real binary: a service puts an owner token on `$cbs`
//! over TLS (port from the banner, trusting the hub's generated CA) and sends
//! a C2D message; a device receives and completes it over AMQP over
//! WebSockets (`AMQPWSB10`) on the HTTPS port. The client is fe2o3-amqp's.

use std::path::PathBuf;
use std::time::Duration;

use courier_ws::WsStream;
use fe2o3_amqp::sasl_profile::SaslProfile;
use fe2o3_amqp::session::SessionHandle;
use fe2o3_amqp::types::messaging::{
    AmqpValue, ApplicationProperties, Body, Data, Message, MessageId, Outcome, Properties,
};
use fe2o3_amqp::types::primitives::{Binary, OrderedMap, SimpleValue, Value};
use fe2o3_amqp::{Connection, Receiver, Sender, Session};
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::support::{tls, unix_time_in, Hub};

const PATIENCE: Duration = Duration::from_secs(20);

async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(PATIENCE, f).await.expect("timed out")
}

/// Where the hub listens (run.json) and the owner policy's key (hub.json).
struct Endpoints {
    amqp_port: u16,
    https_port: u16,
    ca: PathBuf,
    owner_key: String,
}

fn endpoints(hub: &Hub) -> Endpoints {
    let ports = hub.ports();
    Endpoints {
        amqp_port: ports.amqp,
        https_port: ports.https,
        ca: hub.ca_path(),
        owner_key: hub.owner_key(),
    }
}

async fn put_token(session: &mut SessionHandle<()>, token: &str) {
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
    let request = Message {
        header: None,
        delivery_annotations: None,
        message_annotations: None,
        properties: Some(Properties {
            message_id: Some(MessageId::String("cbs-1".into())),
            ..Default::default()
        }),
        application_properties: Some(ApplicationProperties(app)),
        body: AmqpValue(token.to_owned()),
        footer: None,
    };
    within(requests.send(request)).await.unwrap();
    let reply = within(replies.recv::<Body<Value>>()).await.unwrap();
    replies.accept(&reply).await.unwrap();
    let status = reply
        .message()
        .application_properties
        .as_ref()
        .unwrap()
        .0
        .get("status-code")
        .cloned();
    assert_eq!(status, Some(SimpleValue::Int(200)));
}

#[tokio::test]
async fn a_service_sends_over_tls_and_a_device_completes_over_websockets() {
    let hub = Hub::start();
    hub.ok(&["device", "create", "dev1"]);
    let shown = &hub.json(&["device", "show", "dev1"])[0];
    let key = shown["authentication"]["symmetricKey"]["primaryKey"]
        .as_str()
        .unwrap()
        .to_owned();
    let endpoints = endpoints(&hub);
    let expiry = unix_time_in(Duration::from_secs(3600));

    // Service: TLS on the AMQP port, no SASL (as Node), CBS with the owner policy.
    let stream = tls(endpoints.amqp_port, &endpoints.ca, &[]).await;
    let mut service = within(
        Connection::builder()
            .container_id("service")
            .hostname("localhost")
            .open_with_stream(stream),
    )
    .await
    .unwrap();
    let mut session = within(Session::begin(&mut service)).await.unwrap();
    let owner = courier_auth::generate_token(
        "localhost",
        &endpoints.owner_key,
        Some("iothubowner"),
        expiry,
    )
    .unwrap();
    put_token(&mut session, &owner).await;
    let mut sender = within(Sender::attach(&mut session, "c2d", "/messages/devicebound"))
        .await
        .unwrap();
    let message = Message {
        header: None,
        delivery_annotations: None,
        message_annotations: None,
        properties: Some(Properties {
            message_id: Some(MessageId::String("m1".into())),
            to: Some("/devices/dev1/messages/devicebound".into()),
            ..Default::default()
        }),
        application_properties: None,
        body: Data(Binary::from(b"over amqp".to_vec())),
        footer: None,
    };
    let outcome = within(sender.send(message)).await.unwrap();
    assert!(matches!(outcome, Outcome::Accepted(_)), "{outcome:?}");

    // Device: WebSockets on the HTTPS port, SASL ANONYMOUS (as Java), CBS with its own token.
    let tls_stream = tls(endpoints.https_port, &endpoints.ca, &[b"http/1.1"]).await;
    let mut request = format!("wss://localhost:{}/$iothub/websocket", endpoints.https_port)
        .into_client_request()
        .unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static("AMQPWSB10"),
    );
    let (socket, response) = within(tokio_tungstenite::client_async(request, tls_stream))
        .await
        .unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], "AMQPWSB10");
    let mut device = within(
        Connection::builder()
            .container_id("dev1")
            .hostname("localhost")
            .sasl_profile(SaslProfile::Anonymous)
            .open_with_stream(WsStream::new(socket)),
    )
    .await
    .unwrap();
    let mut dev = within(Session::begin(&mut device)).await.unwrap();
    let token = courier_auth::generate_token("localhost/devices/dev1", &key, None, expiry).unwrap();
    put_token(&mut dev, &token).await;
    let mut c2d = within(Receiver::attach(
        &mut dev,
        "c2d",
        "/devices/dev1/messages/devicebound",
    ))
    .await
    .unwrap();
    let delivery = within(c2d.recv::<Body<Value>>()).await.unwrap();
    let Body::Data(sections) = delivery.body() else {
        panic!("C2D body must be one data section")
    };
    assert_eq!(sections[0].0.as_slice(), b"over amqp");
    c2d.accept(&delivery).await.unwrap();

    // Completed: the queue empties once the hub has the disposition.
    let deadline = std::time::Instant::now() + PATIENCE;
    loop {
        let shown = &hub.json(&["device", "show", "dev1"])[0];
        if shown["cloudToDeviceMessageCount"].as_u64() == Some(0) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never completed: {shown}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = device.close().await;
    let _ = service.close().await;
}
