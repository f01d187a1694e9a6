//! IoT Hub's WebSocket endpoint on the HTTPS port, `GET /$iothub/websocket`
//! (wire spec §2.1, §3.1): negotiates the subprotocol and hands the upgraded
//! socket, as a byte stream ([`WsStream`]), to the protocol head that speaks
//! it: MQTT (`mqtt`, or `MQTT` from the C SDK) to the MQTT head, AMQP
//! (`AMQPWSB10`) to the AMQP head, on `/$iothub/websocket` and on uAMQP's
//! `/$servicebus/websocket/`.
//!
//! The query string is ignored (Java adds `?iothub-no-client-cert=true`), and
//! no extension is negotiated (Node offers permessage-deflate; declining is
//! allowed by RFC 6455 and every SDK copes).

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::ws::{WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, Extension, State};
use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use courier_core::ErrorCode;
use courier_http::PeerCertificate;
use futures_util::future::BoxFuture;

use courier_ws::WsStream;

/// Where IoT Hub serves MQTT and AMQP over WebSockets.
pub const IOTHUB_WEBSOCKET_PATH: &str = "/$iothub/websocket";
/// Where uAMQP (the Python service SDK) looks for AMQP over WebSockets (wire spec §3.1).
pub const SERVICEBUS_WEBSOCKET_PATH: &str = "/$servicebus/websocket/";
/// The MQTT subprotocol token; clients spell it `mqtt` or `MQTT`.
pub const MQTT_SUBPROTOCOL: &str = "mqtt";
/// The AMQP subprotocol token.
pub const AMQP_SUBPROTOCOL: &str = "AMQPWSB10";
/// Largest WebSocket message or frame accepted: bounds what one peer makes
/// us buffer, well above the 256 KiB of IoT Hub's largest MQTT packet.
pub const MAX_WS_MESSAGE: usize = 1024 * 1024;

/// The header SDKs read IoT Hub's error name from.
const IOTHUB_ERRORCODE: HeaderName = HeaderName::from_static("iothub-errorcode");

/// An upgraded WebSocket connection, handed to a protocol head.
pub struct WsConnection {
    /// The socket as a byte stream.
    pub stream: WsStream<WebSocket>,
    /// The peer's address.
    pub remote: SocketAddr,
    /// The client's TLS certificate (leaf DER), unverified.
    pub peer_certificate: Option<Arc<Vec<u8>>>,
}

type Serve = dyn Fn(WsConnection) -> BoxFuture<'static, ()> + Send + Sync;

#[derive(Clone)]
struct Heads {
    mqtt: Arc<Serve>,
    amqp: Arc<Serve>,
}

/// The WebSocket routes, serving MQTT connections with `mqtt` and AMQP
/// connections with `amqp`. Merge them into the HTTPS router; they need the
/// `ConnectInfo<SocketAddr>` and [`PeerCertificate`] extensions the HTTPS
/// listener inserts.
pub fn routes<F, Fut, G, Gut>(mqtt: F, amqp: G) -> Router
where
    F: Fn(WsConnection) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
    G: Fn(WsConnection) -> Gut + Send + Sync + 'static,
    Gut: Future<Output = ()> + Send + 'static,
{
    let heads = Heads {
        mqtt: Arc::new(move |connection| Box::pin(mqtt(connection))),
        amqp: Arc::new(move |connection| Box::pin(amqp(connection))),
    };
    Router::new()
        .route(IOTHUB_WEBSOCKET_PATH, get(websocket))
        // uAMQP's default path (the Python service SDK over WebSockets).
        .route(SERVICEBUS_WEBSOCKET_PATH, get(websocket))
        .with_state(heads)
}

/// The subprotocol a client asked for, as far as Courier is concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Subprotocol {
    /// MQTT, with the client's exact spelling to echo back.
    Mqtt(HeaderValue),
    /// AMQP, with the client's exact spelling to echo back.
    Amqp(HeaderValue),
    /// Nothing Courier speaks (or nothing at all).
    Unsupported,
}

/// Picks the subprotocol from the client's offers; MQTT wins if offered at all.
pub fn select_subprotocol<'a>(offered: impl IntoIterator<Item = &'a HeaderValue>) -> Subprotocol {
    let mut amqp = None;
    for token in offered {
        let bytes = token.as_bytes();
        if bytes.eq_ignore_ascii_case(MQTT_SUBPROTOCOL.as_bytes()) {
            return Subprotocol::Mqtt(token.clone());
        }
        if amqp.is_none() && bytes.eq_ignore_ascii_case(AMQP_SUBPROTOCOL.as_bytes()) {
            amqp = Some(token.clone());
        }
    }
    amqp.map_or(Subprotocol::Unsupported, Subprotocol::Amqp)
}

async fn websocket(
    State(heads): State<Heads>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    peer: Option<Extension<PeerCertificate>>,
    upgrade: WebSocketUpgrade,
) -> Response {
    let (protocol, head) = match select_subprotocol(upgrade.requested_protocols()) {
        Subprotocol::Mqtt(token) => (token, heads.mqtt),
        Subprotocol::Amqp(token) => (token, heads.amqp),
        Subprotocol::Unsupported => {
            let offered: Vec<&str> = upgrade
                .requested_protocols()
                .filter_map(|p| p.to_str().ok())
                .collect();
            return argument_invalid(&format!(
                "no supported WebSocket subprotocol in Sec-WebSocket-Protocol (offered: [{}]); \
                 this endpoint speaks 'mqtt' and 'AMQPWSB10'",
                offered.join(", ")
            ));
        }
    };
    let peer_certificate = peer.and_then(|Extension(PeerCertificate(der))| der);
    let mut upgrade = upgrade
        .max_message_size(MAX_WS_MESSAGE)
        .max_frame_size(MAX_WS_MESSAGE);
    // Echo the client's own spelling: the C SDK offers `MQTT` and checks the answer.
    upgrade.set_selected_protocol(protocol);
    upgrade
        .on_failed_upgrade(move |e| {
            tracing::debug!(%remote, error = %e, "WebSocket upgrade failed");
        })
        .on_upgrade(move |socket| {
            head(WsConnection {
                stream: WsStream::new(socket),
                remote,
                peer_certificate,
            })
        })
}

/// A 400 ArgumentInvalid in IoT Hub's error shape (wire spec §4.4).
fn argument_invalid(text: &str) -> Response {
    let code = ErrorCode::ArgumentInvalid;
    let body = serde_json::json!({
        "Message": format!("ErrorCode:{};{text}", code.name()),
        "ExceptionMessage": "",
        "errorCode": code.number(),
    });
    tracing::debug!(text, "WebSocket upgrade refused");
    (
        StatusCode::BAD_REQUEST,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json; charset=utf-8"),
            ),
            (IOTHUB_ERRORCODE, HeaderValue::from_static(code.name())),
        ],
        body.to_string(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::TcpListener;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    use tokio_tungstenite::tungstenite::{self, Message};

    const PATIENCE: Duration = Duration::from_secs(20);

    fn offers(tokens: &[&'static str]) -> Vec<HeaderValue> {
        tokens.iter().map(|t| HeaderValue::from_static(t)).collect()
    }

    #[test]
    fn mqtt_is_matched_in_any_case_and_echoed_as_sent() {
        for token in ["mqtt", "MQTT", "Mqtt"] {
            assert_eq!(
                select_subprotocol(&offers(&[token])),
                Subprotocol::Mqtt(HeaderValue::from_static(token))
            );
        }
        assert_eq!(
            select_subprotocol(&offers(&["AMQPWSB10", "MQTT"])),
            Subprotocol::Mqtt(HeaderValue::from_static("MQTT")),
            "MQTT wins when both are offered"
        );
        assert_eq!(
            select_subprotocol(&offers(&["wamp", "AMQPWSB10"])),
            Subprotocol::Amqp(HeaderValue::from_static("AMQPWSB10"))
        );
        assert_eq!(select_subprotocol(&offers(&[])), Subprotocol::Unsupported);
        assert_eq!(
            select_subprotocol(&offers(&["mqttv3.1", "wamp"])),
            Subprotocol::Unsupported
        );
    }

    /// Serves `routes` with an echo head on 127.0.0.1 over plain HTTP.
    async fn echo_server() -> SocketAddr {
        let router = routes(echo, echo);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            axum::serve(
                listener,
                router.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
            .unwrap();
        });
        addr
    }

    /// A head that echoes every byte.
    async fn echo(mut connection: WsConnection) {
        let mut buf = [0u8; 64];
        loop {
            match connection.stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if connection.stream.write_all(&buf[..n]).await.is_err() {
                        return;
                    }
                    let _ = connection.stream.flush().await;
                }
            }
        }
    }

    fn request(
        addr: SocketAddr,
        path_and_query: &str,
        headers: &[(&'static str, &'static str)],
    ) -> tungstenite::handshake::client::Request {
        let mut request = format!("ws://{addr}{path_and_query}")
            .into_client_request()
            .unwrap();
        for (name, value) in headers {
            request
                .headers_mut()
                .insert(*name, HeaderValue::from_static(value));
        }
        request
    }

    #[tokio::test]
    async fn clients_get_their_own_token_back_and_a_byte_stream() {
        use futures_util::{SinkExt as _, StreamExt as _};
        let addr = echo_server().await;
        for (token, path) in [
            ("mqtt", IOTHUB_WEBSOCKET_PATH),
            ("MQTT", "/$iothub/websocket?iothub-no-client-cert=true"),
            ("AMQPWSB10", IOTHUB_WEBSOCKET_PATH),
            ("AMQPWSB10", SERVICEBUS_WEBSOCKET_PATH),
        ] {
            let (mut socket, response) = tokio::time::timeout(
                PATIENCE,
                tokio_tungstenite::connect_async(request(
                    addr,
                    path,
                    &[
                        ("sec-websocket-protocol", token),
                        (
                            "sec-websocket-extensions",
                            "permessage-deflate; client_max_window_bits",
                        ),
                    ],
                )),
            )
            .await
            .unwrap()
            .unwrap();
            assert_eq!(response.headers()["sec-websocket-protocol"], token);
            assert!(
                response.headers().get("sec-websocket-extensions").is_none(),
                "no extension is accepted"
            );
            socket
                .send(Message::binary(&b"\x10\x00"[..]))
                .await
                .unwrap();
            let echoed = tokio::time::timeout(PATIENCE, socket.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            assert_eq!(echoed, Message::binary(&b"\x10\x00"[..]));
        }
    }

    async fn refused(
        addr: SocketAddr,
        path: &str,
        protocol: Option<&'static str>,
    ) -> (u16, String, String) {
        let headers: Vec<_> = protocol
            .map(|p| ("sec-websocket-protocol", p))
            .into_iter()
            .collect();
        let err = tokio::time::timeout(
            PATIENCE,
            tokio_tungstenite::connect_async(request(addr, path, &headers)),
        )
        .await
        .unwrap()
        .unwrap_err();
        let tungstenite::Error::Http(response) = err else {
            panic!("expected an HTTP refusal, got {err}");
        };
        let code = response.headers()["iothub-errorcode"]
            .to_str()
            .unwrap()
            .to_owned();
        let body: serde_json::Value =
            serde_json::from_slice(response.body().as_deref().unwrap()).unwrap();
        (
            response.status().as_u16(),
            code,
            body["Message"].as_str().unwrap().to_owned(),
        )
    }

    #[tokio::test]
    async fn unknown_subprotocols_are_refused_in_iot_hubs_error_shape() {
        let addr = echo_server().await;
        let (status, code, message) = refused(addr, IOTHUB_WEBSOCKET_PATH, None).await;
        assert_eq!((status, code.as_str()), (400, "ArgumentInvalid"));
        assert!(
            message.starts_with("ErrorCode:ArgumentInvalid;"),
            "{message}"
        );
        assert!(message.contains("offered: []"), "{message}");
        let (status, _, message) = refused(addr, IOTHUB_WEBSOCKET_PATH, Some("wamp")).await;
        assert_eq!(status, 400);
        assert!(message.contains("offered: [wamp]"), "{message}");
    }
}
