//! The HTTPS listener: serves an axum `Router` over TLS (HTTP/1.1 and
//! HTTP/2, with upgrades for the WebSocket transports) on the shared accept
//! loop of [`crate::listener`] until a shutdown future resolves.

use std::future::Future;
use std::io;
use std::sync::Arc;

use axum::extract::ConnectInfo;
use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::server::TlsStream;
use tower::ServiceExt;

use crate::listener::{self, Accepted, Tls};

/// ALPN protocols for the HTTPS listener, preferred first.
pub const HTTPS_ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];

/// The client certificate (leaf, DER) of the connection a request came on,
/// inserted into every request's extensions; the HTTP head owns the type.
/// NOT verified: see [`crate::tls::AnyClientCert`] before trusting it.
pub use courier_http::PeerCertificate;

/// Serves `router` over TLS on `listener` until `shutdown` resolves, then
/// stops accepting, lets open connections finish for up to
/// [`listener::SHUTDOWN_GRACE`], and returns.
///
/// Requests carry [`PeerCertificate`] and `ConnectInfo<SocketAddr>` extensions.
/// Failed handshakes, bad requests and accept errors are logged and never end
/// the loop. Connections already upgraded (WebSockets) are owned by their
/// handlers and not tracked here.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: axum::Router,
    max_connections: usize,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    listener::serve(
        listener,
        Tls::new(tls),
        move |accepted| serve_http(router.clone(), accepted),
        max_connections,
        shutdown,
    )
    .await
}

async fn serve_http(router: axum::Router, accepted: Accepted<TlsStream<TcpStream>>) {
    let Accepted {
        stream,
        remote,
        peer_certificate,
        mut stop,
    } = accepted;
    let peer = PeerCertificate(peer_certificate);
    let service = router.map_request(move |mut request: Request<Incoming>| {
        request.extensions_mut().insert(peer.clone());
        request.extensions_mut().insert(ConnectInfo(remote));
        request
    });

    let mut builder = auto::Builder::new(TokioExecutor::new());
    // The timer enables hyper's header-read timeout, so a peer that trickles
    // request headers is dropped instead of holding a permit forever.
    builder.http1().timer(TokioTimer::new());
    builder.http2().timer(TokioTimer::new());
    let connection = builder
        .serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(service));
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = stop.requested() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%remote, error = %e, "HTTP connection ended with an error");
    }
}
