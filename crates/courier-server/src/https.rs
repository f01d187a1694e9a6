//! The TLS HTTP listener: binds with errors that say how to pick another
//! port, then serves an axum `Router` over TLS (HTTP/1.1 and HTTP/2, with
//! upgrades for the WebSocket transports) until a shutdown future resolves.
//!
//! Each connection runs in its own task, so a slow or hostile peer costs one
//! task and one permit of [`MAX_CONNECTIONS`], never the listener.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// Most connections served at once; further peers wait in the kernel's backlog.
pub const MAX_CONNECTIONS: usize = 10_000;
/// A peer that has not finished the TLS handshake by then is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open connections get to finish after shutdown before they are cut.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// ALPN protocols for the HTTPS listener, preferred first.
pub const HTTPS_ALPN: &[&[u8]] = &[b"h2", b"http/1.1"];
/// Pause after an accept error that is not about one connection (e.g. out of file descriptors).
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(500);

/// The client certificate (leaf, DER) of the connection a request came on,
/// inserted into every request's extensions; the HTTP head owns the type.
/// NOT verified: see [`crate::tls::AnyClientCert`] before trusting it.
pub use courier_http::PeerCertificate;

/// Why a listener could not be bound; the message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum BindError {
    /// Ports below 1024 need privileges.
    #[error("cannot listen on {addr} for {what}: permission denied; run as root (or grant CAP_NET_BIND_SERVICE), or pick another port with {} (or {}), or 0 for any free port", .hint.flag_example(), .hint.env_example())]
    PermissionDenied {
        /// The address.
        addr: SocketAddr,
        /// Which listener, e.g. "HTTPS".
        what: String,
        /// How to choose another port.
        hint: PortHint,
    },
    /// Something already listens there.
    #[error("cannot listen on {addr} for {what}: address already in use (is another courier or web server running?); pick another port with {} (or {}), or 0 for any free port", .hint.flag_example(), .hint.env_example())]
    InUse {
        /// The address.
        addr: SocketAddr,
        /// Which listener.
        what: String,
        /// How to choose another port.
        hint: PortHint,
    },
    /// The bind IP is not one of this machine's.
    #[error("cannot listen on {addr} for {what}: {} is not an address of this machine; choose another with --bind (or COURIER_BIND), e.g. 0.0.0.0 for all", .addr.ip())]
    AddrNotAvailable {
        /// The address.
        addr: SocketAddr,
        /// Which listener.
        what: String,
    },
    /// Any other failure.
    #[error("cannot listen on {addr} for {what}: {source}")]
    Other {
        /// The address.
        addr: SocketAddr,
        /// Which listener.
        what: String,
        /// The I/O error.
        source: io::Error,
    },
}

/// The flag and variable that set a listener's port, and a port to suggest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortHint {
    /// e.g. `--https-port`.
    pub flag: String,
    /// e.g. `COURIER_HTTPS_PORT`.
    pub env: String,
    /// An unprivileged port in the same family, e.g. 8443 for 443.
    pub suggested_port: u16,
}

impl PortHint {
    /// The hint for listener `what` ("HTTPS", "MQTT", "AMQP") on `port`:
    /// flags follow the `--{what}-port` / `COURIER_{WHAT}_PORT` convention.
    pub fn new(what: &str, port: u16) -> PortHint {
        let slug: String = what
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .collect();
        PortHint {
            flag: format!("--{}-port", slug.to_ascii_lowercase()),
            env: format!(
                "COURIER_{}_PORT",
                slug.to_ascii_uppercase().replace('-', "_")
            ),
            suggested_port: match port {
                0..1024 => port + 8000,
                _ => port.checked_add(10_000).unwrap_or(0),
            },
        }
    }

    fn flag_example(&self) -> String {
        format!("{} {}", self.flag, self.suggested_port)
    }

    fn env_example(&self) -> String {
        format!("{}={}", self.env, self.suggested_port)
    }
}

/// Binds a TCP listener for `what` (e.g. "HTTPS"), explaining failures in terms of flags.
pub async fn bind(addr: SocketAddr, what: &str) -> Result<TcpListener, BindError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| bind_error(addr, what, e))
}

fn bind_error(addr: SocketAddr, what: &str, source: io::Error) -> BindError {
    let what_owned = what.to_owned();
    match source.kind() {
        io::ErrorKind::PermissionDenied => BindError::PermissionDenied {
            addr,
            what: what_owned,
            hint: PortHint::new(what, addr.port()),
        },
        io::ErrorKind::AddrInUse => BindError::InUse {
            addr,
            what: what_owned,
            hint: PortHint::new(what, addr.port()),
        },
        io::ErrorKind::AddrNotAvailable => BindError::AddrNotAvailable {
            addr,
            what: what_owned,
        },
        _ => BindError::Other {
            addr,
            what: what_owned,
            source,
        },
    }
}

/// Serves `router` over TLS on `listener` until `shutdown` resolves, then
/// stops accepting, lets open connections finish for up to
/// [`SHUTDOWN_GRACE`], and returns.
///
/// Requests carry [`PeerCertificate`] and `ConnectInfo<SocketAddr>` extensions.
/// Failed handshakes, bad requests and accept errors are logged and never end
/// the loop. Connections already upgraded (WebSockets) are owned by their
/// handlers and not tracked here.
pub async fn serve_tls(
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    router: axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let acceptor = TlsAcceptor::from(tls);
    // Permits bound the connection count; a peer past the limit waits in the backlog.
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    // Flipped once to tell every connection task to wind down.
    let (stop_tx, stop_rx) = watch::channel(());
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);

    loop {
        while let Some(done) = connections.try_join_next() {
            log_panic(done);
        }
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = Arc::clone(&permits).acquire_owned() => permit.map_err(io::Error::other)?,
        };
        let (stream, remote) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) if is_per_connection(&e) => {
                    tracing::debug!(error = %e, "accept failed for one connection");
                    continue;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed; pausing");
                    tokio::select! {
                        () = &mut shutdown => break,
                        () = tokio::time::sleep(ACCEPT_ERROR_BACKOFF) => continue,
                    }
                }
            },
        };
        connections.spawn(serve_connection(
            acceptor.clone(),
            stream,
            remote,
            router.clone(),
            stop_rx.clone(),
            permit,
        ));
    }

    drop(listener);
    stop_tx.send_replace(());
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while let Some(done) = connections.join_next().await {
            log_panic(done);
        }
    })
    .await;
    if drained.is_err() {
        tracing::warn!(
            open = connections.len(),
            "closing connections still open after the shutdown grace period"
        );
        connections.shutdown().await;
    }
    Ok(())
}

fn log_panic(result: Result<(), tokio::task::JoinError>) {
    if let Err(e) = result {
        if e.is_panic() {
            tracing::error!(error = %e, "connection task panicked");
        }
    }
}

/// Accept errors that concern one connection (it went away before we took it).
fn is_per_connection(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionRefused
            | io::ErrorKind::Interrupted
            | io::ErrorKind::WouldBlock
    )
}

async fn serve_connection(
    acceptor: TlsAcceptor,
    stream: TcpStream,
    remote: SocketAddr,
    router: axum::Router,
    mut stop: watch::Receiver<()>,
    _permit: OwnedSemaphorePermit,
) {
    // Small request/response exchanges; Nagle would only add latency.
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(%remote, error = %e, "cannot set TCP_NODELAY");
    }
    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
    let tls = tokio::select! {
        _ = stop.changed() => return,
        result = handshake => match result {
            Ok(Ok(tls)) => tls,
            Ok(Err(e)) => {
                tracing::debug!(%remote, error = %e, "TLS handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%remote, "TLS handshake timed out");
                return;
            }
        },
    };
    let peer = PeerCertificate(crate::tls::peer_certificate(tls.get_ref().1).map(Arc::new));
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
        .serve_connection_with_upgrades(TokioIo::new(tls), TowerToHyperService::new(service));
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        _ = stop.changed() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%remote, error = %e, "HTTP connection ended with an error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_hints_follow_the_flag_convention() {
        let h = PortHint::new("HTTPS", 443);
        assert_eq!(
            h,
            PortHint {
                flag: "--https-port".into(),
                env: "COURIER_HTTPS_PORT".into(),
                suggested_port: 8443
            }
        );
        assert_eq!(PortHint::new("MQTT", 8883).suggested_port, 18_883);
        assert_eq!(PortHint::new("AMQP", 5671).env, "COURIER_AMQP_PORT");
        assert_eq!(PortHint::new("HTTPS", 60_000).suggested_port, 0);
    }

    #[test]
    fn bind_errors_say_which_flag_to_use() {
        let addr: SocketAddr = "0.0.0.0:443".parse().unwrap();
        let denied = bind_error(addr, "HTTPS", io::ErrorKind::PermissionDenied.into());
        assert_eq!(
            denied.to_string(),
            "cannot listen on 0.0.0.0:443 for HTTPS: permission denied; run as root \
             (or grant CAP_NET_BIND_SERVICE), or pick another port with --https-port 8443 \
             (or COURIER_HTTPS_PORT=8443), or 0 for any free port"
        );
        let other = bind_error(addr, "HTTPS", io::ErrorKind::Other.into());
        assert!(matches!(other, BindError::Other { .. }));
    }

    #[tokio::test]
    async fn binding_a_taken_port_reports_in_use() {
        let first = bind("127.0.0.1:0".parse().unwrap(), "HTTPS").await.unwrap();
        let addr = first.local_addr().unwrap();
        let err = bind(addr, "HTTPS").await.unwrap_err();
        assert!(matches!(err, BindError::InUse { .. }), "{err}");
        let msg = err.to_string();
        assert!(msg.contains("address already in use"), "{msg}");
        assert!(msg.contains("--https-port"), "{msg}");
    }
}
