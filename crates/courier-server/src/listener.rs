//! Listeners: binding with errors that say how to pick another port, and the
//! one accept loop every protocol listener runs (HTTPS, MQTT over TLS, plain
//! MQTT for development): connection cap, handshake timeout, the client's
//! certificate, graceful shutdown. What is spoken on a connection is the
//! handler's business; this module never reads application bytes.
//!
//! Each connection runs in its own task, so a slow or hostile peer costs one
//! task and one permit of the listener's connection cap, never the listener.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

/// A peer that has not finished the TLS handshake by then is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open connections get to finish after shutdown before they are cut.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// Pause after an accept error that is not about one connection (e.g. out of file descriptors).
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(500);

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

/// A stream after its handshake, with the client's leaf certificate (DER), if any.
pub type Established<S> = (S, Option<Arc<Vec<u8>>>);

/// How a listener turns an accepted TCP stream into the stream its handler
/// serves: a TLS handshake, or nothing at all.
pub trait Handshake: Clone + Send + Sync + 'static {
    /// The stream handed to the handler.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// Completes the handshake; returns the stream and the client's leaf certificate (DER), if any.
    fn handshake(
        &self,
        tcp: TcpStream,
    ) -> impl Future<Output = io::Result<Established<Self::Stream>>> + Send;
}

/// TLS with the given server configuration (certificates requested, never
/// required, and not verified: see [`crate::tls::AnyClientCert`]).
#[derive(Clone)]
pub struct Tls(pub TlsAcceptor);

impl Tls {
    /// TLS with `config`.
    pub fn new(config: Arc<rustls::ServerConfig>) -> Tls {
        Tls(TlsAcceptor::from(config))
    }
}

impl Handshake for Tls {
    type Stream = TlsStream<TcpStream>;

    async fn handshake(&self, tcp: TcpStream) -> io::Result<Established<Self::Stream>> {
        let tls = self.0.accept(tcp).await?;
        let peer = crate::tls::peer_certificate(tls.get_ref().1).map(Arc::new);
        Ok((tls, peer))
    }
}

/// No handshake: the TCP stream as it is. For development listeners only.
#[derive(Clone, Copy, Debug)]
pub struct PlainTcp;

impl Handshake for PlainTcp {
    type Stream = TcpStream;

    async fn handshake(&self, tcp: TcpStream) -> io::Result<Established<TcpStream>> {
        Ok((tcp, None))
    }
}

/// One connection after its handshake, handed to the listener's handler.
pub struct Accepted<S> {
    /// The stream to serve.
    pub stream: S,
    /// The peer's address.
    pub remote: SocketAddr,
    /// The client's leaf certificate (DER), unverified; `None` without TLS or without a certificate.
    pub peer_certificate: Option<Arc<Vec<u8>>>,
    /// Resolves when the listener shuts down; the handler should wind the connection down then.
    pub stop: Stop,
}

/// The listener's shutdown signal, as seen by one connection.
#[derive(Clone, Debug)]
pub struct Stop(watch::Receiver<bool>);

impl Stop {
    /// Resolves once the listener is shutting down (at once if it already is).
    pub async fn requested(&mut self) {
        // An error means the listener is gone, which is a shutdown too.
        let _ = self.0.wait_for(|stopping| *stopping).await;
    }
}

/// Serves connections accepted on `listener` until `shutdown` resolves:
/// each gets `handshake` (bounded by [`HANDSHAKE_TIMEOUT`]) and then
/// `handler`, in its own task; at most `max_connections` at once, further
/// peers wait in the kernel's backlog. On shutdown it stops accepting, signals
/// [`Accepted::stop`], lets handlers finish for up to [`SHUTDOWN_GRACE`],
/// cuts the rest, and returns.
///
/// Failed handshakes and accept errors are logged and never end the loop.
pub async fn serve<H, F, Fut>(
    listener: TcpListener,
    handshake: H,
    handler: F,
    max_connections: usize,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()>
where
    H: Handshake,
    F: Fn(Accepted<H::Stream>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    // Permits bound the connection count; a peer past the limit waits in the backlog.
    let permits = Arc::new(Semaphore::new(max_connections));
    let (stop_tx, stop_rx) = watch::channel(false);
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
        connections.spawn(connection(
            handshake.clone(),
            handler.clone(),
            stream,
            remote,
            Stop(stop_rx.clone()),
            permit,
        ));
    }

    drop(listener);
    stop_tx.send_replace(true);
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

async fn connection<H, F, Fut>(
    handshake: H,
    handler: F,
    stream: TcpStream,
    remote: SocketAddr,
    mut stop: Stop,
    _permit: OwnedSemaphorePermit,
) where
    H: Handshake,
    F: Fn(Accepted<H::Stream>) -> Fut,
    Fut: Future<Output = ()>,
{
    // Small request/response exchanges; Nagle would only add latency.
    if let Err(e) = stream.set_nodelay(true) {
        tracing::debug!(%remote, error = %e, "cannot set TCP_NODELAY");
    }
    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake.handshake(stream));
    let (stream, peer_certificate) = tokio::select! {
        () = stop.requested() => return,
        result = handshake => match result {
            Ok(Ok(done)) => done,
            Ok(Err(e)) => {
                tracing::debug!(%remote, error = %e, "handshake failed");
                return;
            }
            Err(_) => {
                tracing::debug!(%remote, "handshake timed out");
                return;
            }
        },
    };
    handler(Accepted {
        stream,
        remote,
        peer_certificate,
        stop,
    })
    .await;
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

    /// A plain listener whose handler echoes one line, then waits for the stop signal.
    #[tokio::test]
    async fn handlers_get_the_stream_and_the_stop_signal_ends_them_before_the_grace() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let listener = bind("127.0.0.1:0".parse().unwrap(), "MQTT plain")
            .await
            .unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(
            listener,
            PlainTcp,
            |mut accepted: Accepted<TcpStream>| async move {
                assert!(accepted.peer_certificate.is_none());
                let mut buf = [0u8; 4];
                accepted.stream.read_exact(&mut buf).await.unwrap();
                accepted.stream.write_all(&buf).await.unwrap();
                accepted.stop.requested().await;
                accepted.stream.write_all(b"bye").await.unwrap();
            },
            16,
            async move {
                let _ = stop_rx.await;
            },
        ));
        let mut client = TcpStream::connect(addr).await.unwrap();
        client.write_all(b"ping").await.unwrap();
        let mut echoed = [0u8; 4];
        client.read_exact(&mut echoed).await.unwrap();
        assert_eq!(&echoed, b"ping");

        let started = std::time::Instant::now();
        stop_tx.send(()).unwrap();
        let mut rest = Vec::new();
        tokio::time::timeout(SHUTDOWN_GRACE * 4, client.read_to_end(&mut rest))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(rest, b"bye", "the handler saw the stop and finished");
        tokio::time::timeout(SHUTDOWN_GRACE * 4, server)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert!(
            started.elapsed() < SHUTDOWN_GRACE,
            "returned as soon as the handler ended, not after the grace"
        );
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
