//! MQTT against the real binary: a device connects over TLS (port from
//! run.json, trusting the hub's generated CA) and over WebSockets on the
//! HTTPS port, receives a C2D message sent with the CLI, and completes it
//! with PUBACK. The client is rumqttc's MQTT 3.1.1 codec driven by hand, so
//! the test sees every packet the hub sends.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use courier_ws::WsStream;
use percent_encoding::percent_decode_str;
use rumqttc::mqttbytes::v4::{
    ConnAck, ConnectReturnCode, Packet, PubAck, Publish, Subscribe, SubscribeReasonCode,
};
use rumqttc::mqttbytes::{Error as CodecError, QoS};
use rumqttc::Connect;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;

use crate::support::{tls, unix_time_in, Hub};

const PATIENCE: Duration = Duration::from_secs(20);
const MAX_PACKET: usize = 1 << 20;

/// A device-side MQTT 3.1.1 connection over any byte stream.
struct Device<S> {
    stream: S,
    received: BytesMut,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Device<S> {
    fn new(stream: S) -> Self {
        Device {
            stream,
            received: BytesMut::new(),
        }
    }

    async fn send(&mut self, packet: Packet) {
        let mut bytes = BytesMut::new();
        packet.write(&mut bytes, MAX_PACKET).unwrap();
        self.stream.write_all(&bytes).await.unwrap();
        self.stream.flush().await.unwrap();
    }

    /// The next packet from the hub; `None` if it closed the connection.
    async fn recv(&mut self) -> Option<Packet> {
        tokio::time::timeout(PATIENCE, async {
            loop {
                match Packet::read(&mut self.received, MAX_PACKET) {
                    Ok(packet) => return Some(packet),
                    Err(CodecError::InsufficientBytes(_)) => {}
                    Err(e) => panic!("the hub sent a malformed packet: {e}"),
                }
                match self.stream.read_buf(&mut self.received).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
        .expect("no packet from the hub in time")
    }

    async fn connect(&mut self, device_id: &str, password: &str) -> ConnAck {
        let mut connect = Connect::new(device_id);
        connect.keep_alive = 60;
        // Every SDK connects with a persistent session (wire spec §2.2).
        connect.clean_session = false;
        connect.set_login(
            format!("localhost/{device_id}/?api-version=2021-04-12"),
            password,
        );
        self.send(Packet::Connect(connect)).await;
        match self.recv().await {
            Some(Packet::ConnAck(ack)) => ack,
            other => panic!("expected CONNACK, got {other:?}"),
        }
    }

    async fn subscribe_c2d(&mut self, device_id: &str) {
        let filter = format!("devices/{device_id}/messages/devicebound/#");
        let mut subscribe = Subscribe::new(filter, QoS::AtLeastOnce);
        subscribe.pkid = 1;
        self.send(Packet::Subscribe(subscribe)).await;
        match self.recv().await {
            Some(Packet::SubAck(ack)) => {
                assert_eq!(ack.pkid, 1);
                assert_eq!(
                    ack.return_codes,
                    vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]
                );
            }
            other => panic!("expected SUBACK, got {other:?}"),
        }
    }

    async fn next_publish(&mut self) -> Publish {
        match self.recv().await {
            Some(Packet::Publish(publish)) => publish,
            other => panic!("expected PUBLISH, got {other:?}"),
        }
    }
}

/// Where the running hub listens, from its run.json.
struct Endpoints {
    mqtt_port: u16,
    https_port: u16,
    ca: PathBuf,
}

fn endpoints(hub: &Hub) -> Endpoints {
    let ports = hub.ports();
    Endpoints {
        mqtt_port: ports.mqtt,
        https_port: ports.https,
        ca: hub.ca_path(),
    }
}

/// MQTT over WebSockets over TLS on the HTTPS port, offering `subprotocol`.
async fn websocket(
    endpoints: &Endpoints,
    subprotocol: &'static str,
) -> WsStream<tokio_tungstenite::WebSocketStream<TlsStream<TcpStream>>> {
    let stream = tls(endpoints.https_port, &endpoints.ca, &[b"http/1.1"]).await;
    let mut request = format!(
        "wss://localhost:{}/$iothub/websocket?iothub-no-client-cert=true",
        endpoints.https_port
    )
    .into_client_request()
    .unwrap();
    request.headers_mut().insert(
        "sec-websocket-protocol",
        HeaderValue::from_static(subprotocol),
    );
    let (socket, response) = tokio_tungstenite::client_async(request, stream)
        .await
        .unwrap();
    assert_eq!(response.headers()["sec-websocket-protocol"], subprotocol);
    WsStream::new(socket)
}

/// A device SAS token signed with `key`, valid for an hour.
fn device_token(device_id: &str, key: &str) -> String {
    let expiry = unix_time_in(Duration::from_secs(3600));
    courier_auth::generate_token(&format!("localhost/devices/{device_id}"), key, None, expiry)
        .unwrap()
}

/// A running hub with device `dev1`, a SAS token for it, and the hub's endpoints.
fn hub_with_dev1() -> (Hub, String, Endpoints) {
    let hub = Hub::start();
    hub.ok(&["device", "create", "dev1"]);
    let shown = &hub.json(&["device", "show", "dev1"])[0];
    let key = shown["authentication"]["symmetricKey"]["primaryKey"]
        .as_str()
        .unwrap();
    let token = device_token("dev1", key);
    let endpoints = endpoints(&hub);
    (hub, token, endpoints)
}

fn queued(hub: &Hub, device_id: &str) -> u64 {
    hub.json(&["device", "show", device_id])[0]["cloudToDeviceMessageCount"]
        .as_u64()
        .unwrap()
}

/// The decoded `key=value` pairs of a C2D topic's property bag.
fn property_bag(topic: &str, device_id: &str) -> Vec<(String, String)> {
    let prefix = format!("devices/{device_id}/messages/devicebound/");
    let bag = topic
        .strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{topic} does not start with {prefix}"));
    let decode = |s: &str| percent_decode_str(s).decode_utf8().unwrap().into_owned();
    bag.split('&')
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// The C2D round trip every transport must pass: connect, subscribe, a
/// message sent with the CLI arrives with its properties, PUBACK completes it.
async fn receive_and_complete<S: AsyncRead + AsyncWrite + Unpin>(
    hub: &Hub,
    device: &mut Device<S>,
    device_id: &str,
    password: &str,
) {
    let ack = device.connect(device_id, password).await;
    assert_eq!(ack.code, ConnectReturnCode::Success);
    device.subscribe_c2d(device_id).await;

    // The CLI blocks this test's only thread briefly; the hub is another process.
    hub.ok(&[
        "c2d",
        "send",
        device_id,
        "body",
        "--message-id",
        "m1",
        "--prop",
        "k=v",
    ]);
    let publish = device.next_publish().await;
    assert_eq!(publish.qos, QoS::AtLeastOnce);
    assert_eq!(&publish.payload[..], b"body");
    let bag = property_bag(&publish.topic, device_id);
    assert!(
        bag.contains(&("$.mid".into(), "m1".into())),
        "{}",
        publish.topic
    );
    assert!(bag.contains(&("k".into(), "v".into())), "{}", publish.topic);
    assert!(
        publish.topic.contains("%24.mid=m1"),
        "system properties are sent as %24.: {}",
        publish.topic
    );
    assert_eq!(queued(hub, device_id), 1, "locked until acknowledged");

    device.send(Packet::PubAck(PubAck::new(publish.pkid))).await;
    let deadline = Instant::now() + PATIENCE;
    while queued(hub, device_id) != 0 {
        assert!(
            Instant::now() < deadline,
            "PUBACK did not complete the message"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn a_device_on_mqtt_over_tls_receives_c2d_and_completes_it_with_puback() {
    let (hub, password, endpoints) = hub_with_dev1();
    runtime().block_on(async {
        // No ALPN, as paho sends none.
        let mut device = Device::new(tls(endpoints.mqtt_port, &endpoints.ca, &[]).await);
        receive_and_complete(&hub, &mut device, "dev1", &password).await;
    });
}

#[test]
fn a_device_on_mqtt_over_websockets_receives_c2d_and_completes_it_with_puback() {
    let (hub, password, endpoints) = hub_with_dev1();
    runtime().block_on(async {
        let mut device = Device::new(websocket(&endpoints, "mqtt").await);
        receive_and_complete(&hub, &mut device, "dev1", &password).await;
    });
}

#[test]
fn the_c_sdks_upper_case_subprotocol_is_echoed_and_served() {
    let (_hub, password, endpoints) = hub_with_dev1();
    runtime().block_on(async {
        let mut device = Device::new(websocket(&endpoints, "MQTT").await);
        let ack = device.connect("dev1", &password).await;
        assert_eq!(ack.code, ConnectReturnCode::Success);
    });
}

#[test]
fn a_wrong_password_gets_connack_5_over_tls_and_websockets() {
    let (_hub, password, endpoints) = hub_with_dev1();
    let wrong = device_token("dev1", "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=");
    assert_ne!(wrong, password);
    runtime().block_on(async {
        let mut device = Device::new(tls(endpoints.mqtt_port, &endpoints.ca, &[]).await);
        let ack = device.connect("dev1", &wrong).await;
        assert_eq!(ack.code, ConnectReturnCode::NotAuthorized);
        assert!(
            device.recv().await.is_none(),
            "the hub closes after refusing"
        );

        let mut device = Device::new(websocket(&endpoints, "mqtt").await);
        let ack = device.connect("dev1", &wrong).await;
        assert_eq!(ack.code, ConnectReturnCode::NotAuthorized);
    });
}

#[test]
fn the_banner_names_the_mqtt_endpoints() {
    let hub = Hub::start();
    let endpoints = endpoints(&hub);
    let banner = hub.log_containing("Press Ctrl-C");
    assert!(
        banner.contains(&format!(
            "MQTT    mqtts://localhost:{}",
            endpoints.mqtt_port
        )),
        "{banner}"
    );
    assert!(
        banner.contains(&format!(
            "MQTT/WS wss://localhost:{}/$iothub/websocket",
            endpoints.https_port
        )),
        "{banner}"
    );
}
