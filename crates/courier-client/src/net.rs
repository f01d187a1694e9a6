//! Opening connections: TCP + TLS (rustls) to a port, or a WebSocket over
//! TLS carrying MQTT or AMQP as a byte stream.

use std::sync::Arc;
use std::time::Duration;

use courier_ws::WsStream;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, RootCertStore};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::WebSocketStream;

use crate::options::{Connectivity, X509Identity};
use crate::ClientError;

/// The WebSocket path IoT Hub serves MQTT and AMQP on.
pub(crate) const WEBSOCKET_PATH: &str = "/$iothub/websocket";

/// A byte stream to the hub: TLS, or a WebSocket over TLS.
pub(crate) trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// A boxed byte stream to the hub.
pub(crate) type BoxStream = Box<dyn Stream>;

/// Where one client connects, and with what TLS settings.
#[derive(Clone)]
pub(crate) struct Endpoint {
    /// Host to connect to and verify (the gateway, else the hub).
    pub(crate) host: String,
    /// TLS settings (roots, client identity), without ALPN.
    pub(crate) tls: Arc<ClientConfig>,
    /// Ports.
    pub(crate) connectivity: Connectivity,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("host", &self.host)
            .field("ports", &self.connectivity.ports)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// An endpoint for `host` trusting the given CA (or the public roots),
    /// presenting `identity` when given.
    pub(crate) fn new(
        host: &str,
        connectivity: &Connectivity,
        identity: Option<&X509Identity>,
    ) -> Result<Self, ClientError> {
        Ok(Self {
            host: host.to_owned(),
            tls: Arc::new(tls_config(connectivity.ca_pem.as_deref(), identity)?),
            connectivity: connectivity.clone(),
        })
    }

    /// TCP then TLS to `port`, within `timeout`.
    pub(crate) async fn connect_tls(
        &self,
        port: u16,
        timeout: Duration,
    ) -> Result<TlsStream<TcpStream>, ClientError> {
        let work = async {
            let tcp = TcpStream::connect((self.host.as_str(), port))
                .await
                .map_err(|e| {
                    ClientError::Network(format!("cannot reach {}:{port}: {e}", self.host))
                })?;
            // Latency matters more than packet count for acks and settlements.
            let _ = tcp.set_nodelay(true);
            let name = ServerName::try_from(self.host.clone()).map_err(|e| {
                ClientError::InvalidArgument(format!("host name '{}': {e}", self.host))
            })?;
            TlsConnector::from(self.tls.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| tls_or_network(&self.host, e))
        };
        within(timeout, "connect", work).await
    }

    /// A WebSocket over TLS on the HTTPS port, at IoT Hub's path, speaking
    /// `subprotocol` (`mqtt` or `AMQPWSB10`), as a byte stream.
    pub(crate) async fn connect_ws(
        &self,
        subprotocol: &'static str,
        timeout: Duration,
    ) -> Result<WsStream<WebSocketStream<TlsStream<TcpStream>>>, ClientError> {
        let port = self.connectivity.ports.https;
        let work = async {
            let tls = self.connect_tls(port, timeout).await?;
            let url = format!("wss://{}:{port}{WEBSOCKET_PATH}", self.host);
            let mut request = url
                .as_str()
                .into_client_request()
                .map_err(|e| ClientError::InvalidArgument(format!("WebSocket URL {url}: {e}")))?;
            request.headers_mut().insert(
                "Sec-WebSocket-Protocol",
                HeaderValue::from_static(subprotocol),
            );
            let (socket, _) = tokio_tungstenite::client_async(request, tls)
                .await
                .map_err(|e| ClientError::Network(format!("WebSocket upgrade at {url}: {e}")))?;
            Ok(WsStream::new(socket))
        };
        within(timeout, "connect", work).await
    }
}

/// Runs `work` with a deadline, turning the lapse into a typed timeout.
pub(crate) async fn within<T>(
    timeout: Duration,
    operation: &'static str,
    work: impl std::future::Future<Output = Result<T, ClientError>>,
) -> Result<T, ClientError> {
    tokio::time::timeout(timeout, work)
        .await
        .unwrap_or(Err(ClientError::Timeout {
            operation,
            after: timeout,
        }))
}

fn tls_or_network(host: &str, e: std::io::Error) -> ClientError {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<rustls::Error>())
    {
        Some(tls) => ClientError::Tls(format!(
            "handshake with {host}: {tls} (is the CA the one that signed the hub's certificate?)"
        )),
        None => ClientError::Network(format!("TLS connection to {host}: {e}")),
    }
}

/// A rustls client configuration: the given PEM roots, else the public
/// (webpki) roots; with a client certificate when given. No ALPN.
pub(crate) fn tls_config(
    ca_pem: Option<&[u8]>,
    identity: Option<&X509Identity>,
) -> Result<ClientConfig, ClientError> {
    let mut roots = RootCertStore::empty();
    match ca_pem {
        Some(pem) => {
            let certs = rustls_pemfile::certs(&mut &pem[..])
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| ClientError::InvalidArgument(format!("CA certificate PEM: {e}")))?;
            if certs.is_empty() {
                return Err(ClientError::InvalidArgument(
                    "the CA certificate PEM holds no certificate".into(),
                ));
            }
            for cert in certs {
                roots
                    .add(cert)
                    .map_err(|e| ClientError::InvalidArgument(format!("CA certificate: {e}")))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls(e.to_string()))?
        .with_root_certificates(roots);
    match identity {
        None => Ok(builder.with_no_client_auth()),
        Some(identity) => {
            let chain: Vec<CertificateDer<'static>> =
                rustls_pemfile::certs(&mut &identity.certificate_pem[..])
                    .collect::<Result<_, _>>()
                    .map_err(|e| {
                        ClientError::InvalidArgument(format!("client certificate PEM: {e}"))
                    })?;
            if chain.is_empty() {
                return Err(ClientError::InvalidArgument(
                    "the client certificate PEM holds no certificate".into(),
                ));
            }
            let key: PrivateKeyDer<'static> =
                rustls_pemfile::private_key(&mut &identity.private_key_pem[..])
                    .map_err(|e| ClientError::InvalidArgument(format!("client key PEM: {e}")))?
                    .ok_or_else(|| {
                        ClientError::InvalidArgument(
                            "the client key PEM holds no private key".into(),
                        )
                    })?;
            builder.with_client_auth_cert(chain, key).map_err(|e| {
                ClientError::InvalidArgument(format!("client certificate and key: {e}"))
            })
        }
    }
}
