//! The HTTPS listener end to end: generated dev certificates, a real TLS
//! client (reqwest/rustls) trusting only the generated CA, TLS 1.2 and 1.3,
//! client certificates reaching handlers, hostile peers, graceful shutdown.

// Helpers outside #[test] fns are test code too; a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Extension, State};
use axum::routing::get;
use axum::Router;
use courier_server::datadir::DataDir;
use courier_server::https::{self, PeerCertificate};
use courier_server::listener;
use courier_server::tls::{self, TlsFiles};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, Mutex};
use tokio::task::JoinHandle;

const PATIENCE: Duration = Duration::from_secs(20);

/// Lets the test hold a request inside its handler.
#[derive(Clone)]
struct Gate {
    entered: mpsc::Sender<()>,
    release: Arc<Mutex<Option<oneshot::Receiver<()>>>>,
}

struct Server {
    addr: SocketAddr,
    files: TlsFiles,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
    _dir: tempfile::TempDir,
}

async fn start(gate: Gate) -> Server {
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::open_or_create(dir.path()).unwrap();
    let files = tls::ensure_dev_certs(&data, "hub.example.test").unwrap();
    let config = tls::server_config(&files.cert, &files.key, https::HTTPS_ALPN).unwrap();
    let router =
        Router::new()
            .route("/hello", get(|| async { "hello" }))
            .route(
                "/peer",
                get(|Extension(peer): Extension<PeerCertificate>| async move {
                    peer.0.map(|der| der.to_vec()).unwrap_or_default()
                }),
            )
            .route(
                "/remote",
                get(|ConnectInfo(remote): ConnectInfo<SocketAddr>| async move {
                    remote.ip().to_string()
                }),
            )
            .route(
                "/held",
                get(|State(gate): State<Gate>| async move {
                    gate.entered.send(()).await.unwrap();
                    let release = gate.release.lock().await.take().unwrap();
                    release.await.unwrap();
                    "released"
                }),
            )
            .with_state(gate);
    let listener = listener::bind("127.0.0.1:0".parse().unwrap(), "HTTPS")
        .await
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(https::serve_tls(listener, config, router, 64, async move {
        let _ = stopped.await;
    }));
    Server {
        addr,
        files,
        stop: Some(stop),
        task,
        _dir: dir,
    }
}

fn gate() -> (Gate, mpsc::Receiver<()>, oneshot::Sender<()>) {
    let (entered, entered_rx) = mpsc::channel(1);
    let (release_tx, release) = oneshot::channel();
    let gate = Gate {
        entered,
        release: Arc::new(Mutex::new(Some(release))),
    };
    (gate, entered_rx, release_tx)
}

fn client(server: &Server, tls: reqwest::tls::Version) -> reqwest::ClientBuilder {
    let ca = std::fs::read(server.files.ca.as_ref().unwrap()).unwrap();
    reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .resolve("hub.example.test", server.addr)
        .min_tls_version(tls)
        .max_tls_version(tls)
        .timeout(PATIENCE)
}

fn url(server: &Server, path: &str) -> String {
    format!("https://hub.example.test:{}{path}", server.addr.port())
}

async fn get_text(client: &reqwest::Client, url: String) -> (reqwest::Version, String) {
    let response = client.get(url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let version = response.version();
    (version, response.text().await.unwrap())
}

#[tokio::test]
async fn tls12_and_tls13_clients_trusting_the_dev_ca_are_served_over_h1_and_h2() {
    let (gate, _, _) = gate();
    let server = start(gate).await;
    for tls in [
        reqwest::tls::Version::TLS_1_2,
        reqwest::tls::Version::TLS_1_3,
    ] {
        let h2 = client(&server, tls).build().unwrap();
        assert_eq!(
            get_text(&h2, url(&server, "/hello")).await,
            (reqwest::Version::HTTP_2, "hello".to_owned()),
            "{tls:?} via ALPN h2"
        );
        let h1 = client(&server, tls).http1_only().build().unwrap();
        assert_eq!(
            get_text(&h1, url(&server, "/hello")).await,
            (reqwest::Version::HTTP_11, "hello".to_owned()),
            "{tls:?} HTTP/1.1"
        );
    }
    let (_, remote) = get_text(
        &client(&server, reqwest::tls::Version::TLS_1_3)
            .build()
            .unwrap(),
        url(&server, "/remote"),
    )
    .await;
    assert_eq!(remote, "127.0.0.1");
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_ca_is_refused() {
    let (gate, _, _) = gate();
    let server = start(gate).await;
    let stranger = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .resolve("hub.example.test", server.addr)
        .timeout(PATIENCE)
        .build()
        .unwrap();
    let err = stranger
        .get(url(&server, "/hello"))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_connect(), "{err:?}");
}

#[tokio::test]
async fn client_certificate_reaches_handlers_and_is_optional() {
    let (gate, _, _) = gate();
    let server = start(gate).await;
    // A self-signed device certificate: the listener accepts any chain.
    let device = rcgen::generate_simple_self_signed(vec!["dev1".to_owned()]).unwrap();
    let identity_pem = format!(
        "{}{}",
        device.cert.pem(),
        device.signing_key.serialize_pem()
    );
    let with_cert = client(&server, reqwest::tls::Version::TLS_1_3)
        .identity(reqwest::Identity::from_pem(identity_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let body = with_cert
        .get(url(&server, "/peer"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(body.as_ref(), device.cert.der().as_ref());

    let tls12_with_cert = client(&server, reqwest::tls::Version::TLS_1_2)
        .identity(reqwest::Identity::from_pem(identity_pem.as_bytes()).unwrap())
        .build()
        .unwrap();
    let body = tls12_with_cert
        .get(url(&server, "/peer"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(body.as_ref(), device.cert.der().as_ref(), "TLS 1.2 too");

    let without = client(&server, reqwest::tls::Version::TLS_1_3)
        .build()
        .unwrap();
    let body = without
        .get(url(&server, "/peer"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!(body.is_empty(), "no certificate, no extension value");
}

#[tokio::test]
async fn garbage_and_silent_peers_do_not_stop_the_listener() {
    let (gate, _, _) = gate();
    let server = start(gate).await;
    // Plain HTTP on the TLS port: the handshake fails and the server hangs up.
    let mut plain = tokio::net::TcpStream::connect(server.addr).await.unwrap();
    plain
        .write_all(b"GET /hello HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut sink = Vec::new();
    tokio::time::timeout(PATIENCE, plain.read_to_end(&mut sink))
        .await
        .expect("server closes a non-TLS connection")
        .ok();
    assert!(!sink.starts_with(b"HTTP/"), "no plaintext answer");
    // A peer that connects and says nothing holds only its own task.
    let _silent = tokio::net::TcpStream::connect(server.addr).await.unwrap();

    let c = client(&server, reqwest::tls::Version::TLS_1_2)
        .build()
        .unwrap();
    assert_eq!(get_text(&c, url(&server, "/hello")).await.1, "hello");
    assert!(!server.task.is_finished());
}

#[tokio::test]
async fn shutdown_lets_an_open_request_finish_then_stops_accepting() {
    let (gate, mut entered, release) = gate();
    let mut server = start(gate).await;
    let c = client(&server, reqwest::tls::Version::TLS_1_3)
        .build()
        .unwrap();
    let held = tokio::spawn(c.get(url(&server, "/held")).send());
    tokio::time::timeout(PATIENCE, entered.recv())
        .await
        .unwrap()
        .unwrap();

    server.stop.take().unwrap().send(()).unwrap();
    // Wait until the listener socket is gone: new connections are refused.
    let refused = tokio::time::timeout(PATIENCE, async {
        loop {
            match tokio::net::TcpStream::connect(server.addr).await {
                Err(_) => break,
                Ok(_) => tokio::task::yield_now().await,
            }
        }
    })
    .await;
    assert!(refused.is_ok(), "listener still accepting after shutdown");
    assert!(!server.task.is_finished(), "waits for the open request");

    release.send(()).unwrap();
    let response = tokio::time::timeout(PATIENCE, held)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "released");
    tokio::time::timeout(PATIENCE, &mut server.task)
        .await
        .expect("serve_tls returns after draining")
        .unwrap()
        .unwrap();
}
