//! Where MQTT connections go and the byte stream they run on: TLS to the hub
//! (or an `mqtts://` broker), plain TCP to an `mqtt://` broker, optionally
//! from a chosen loopback source address so that one machine can open more
//! connections than one source address has ephemeral ports.

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{ConnectReturnCode, Packet};
use rumqttc::mqttbytes::Error as CodecError;
use rumqttc::Connect;
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::rustls::ClientConfig;
use tokio_rustls::TlsConnector;

use crate::BenchError;

/// Largest packet accepted from the hub or broker.
pub(crate) const MAX_PACKET: usize = 1 << 20;
/// How long the peer gets to answer CONNECT (and SUBSCRIBE).
pub(crate) const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);
/// Connections per loopback source address when the run picks how many it
/// needs: below Linux's default ephemeral range (32768–60999, 28,232 ports),
/// with room for sockets of an earlier run still in TIME_WAIT.
const CONNECTIONS_PER_SOURCE: u32 = 20_000;
/// Most loopback source addresses a run uses: 127.0.0.1 … 127.0.0.254.
pub const MAX_SOURCE_ADDRESSES: u32 = 254;

/// An MQTT server's addresses and how to secure connections to it.
pub(crate) struct Endpoint {
    /// Resolved once for the whole run, IPv4 first.
    addrs: Vec<SocketAddr>,
    tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
}

impl Endpoint {
    /// Resolves `host:port` once (a run opens thousands of connections).
    pub(crate) async fn resolve(
        host: &str,
        port: u16,
        tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
    ) -> Result<Self, BenchError> {
        let mut addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| BenchError::Resolve {
                host: host.to_owned(),
                reason: e.to_string(),
            })?
            .collect();
        if addrs.is_empty() {
            return Err(BenchError::Resolve {
                host: host.to_owned(),
                reason: "no address".into(),
            });
        }
        // `localhost` may name ::1 first while servers here listen on 127.0.0.1.
        addrs.sort_by_key(|a| !a.is_ipv4());
        Ok(Self { addrs, tls })
    }

    /// The loopback source addresses for `connections` connections:
    /// `requested` of them (or as many as the count needs, when `None`),
    /// 127.0.0.1 upwards. Empty when one address is enough (no bind at all).
    pub(crate) fn sources(
        &self,
        requested: Option<u32>,
        connections: u32,
    ) -> Result<Vec<IpAddr>, BenchError> {
        let count = requested.unwrap_or_else(|| connections.div_ceil(CONNECTIONS_PER_SOURCE));
        if count <= 1 {
            return Ok(Vec::new());
        }
        if count > MAX_SOURCE_ADDRESSES {
            return Err(BenchError::SourceAddresses(format!(
                "{count} source addresses asked for; at most {MAX_SOURCE_ADDRESSES}"
            )));
        }
        let loopback_v4 = self
            .addrs
            .first()
            .is_some_and(|a| a.is_ipv4() && a.ip().is_loopback());
        if !loopback_v4 {
            return Err(BenchError::SourceAddresses(format!(
                "{count} source addresses need an IPv4 loopback server (127.x.x.x), not {}",
                self.addrs
                    .first()
                    .map(|a| a.to_string())
                    .unwrap_or_default()
            )));
        }
        Ok((1..=count)
            .filter_map(|i| u8::try_from(i).ok())
            .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i)))
            .collect())
    }

    /// Opens a TCP connection (from `source` when given) and, for a TLS
    /// endpoint, completes the handshake.
    pub(crate) async fn open(&self, source: Option<IpAddr>) -> Result<MqttStream, String> {
        let tcp = self.tcp(source).await?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        match &self.tls {
            None => Ok(MqttStream::Plain(tcp)),
            Some((config, server_name)) => TlsConnector::from(Arc::clone(config))
                .connect(server_name.clone(), tcp)
                .await
                .map(|tls| MqttStream::Tls(Box::new(tls)))
                .map_err(|e| format!("TLS handshake: {e}")),
        }
    }

    async fn tcp(&self, source: Option<IpAddr>) -> Result<TcpStream, String> {
        let mut last_error = String::from("no address");
        for &addr in &self.addrs {
            let attempt = match source {
                None => TcpStream::connect(addr).await,
                Some(source) if source.is_ipv4() == addr.is_ipv4() => {
                    connect_from(source, addr).await
                }
                Some(_) => continue,
            };
            match attempt {
                Ok(tcp) => return Ok(tcp),
                Err(e) => {
                    last_error = match source {
                        Some(source) => format!("TCP connect from {source} to {addr}: {e}"),
                        None => format!("TCP connect to {addr}: {e}"),
                    };
                }
            }
        }
        Err(last_error)
    }
}

/// Binds to `source` (any port) before connecting: the kernel picks the
/// ephemeral port per source address, so N addresses give N × the range.
async fn connect_from(source: IpAddr, addr: SocketAddr) -> io::Result<TcpStream> {
    let socket = if source.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(addr).await
}

/// A connection's byte stream: TLS or plain TCP.
pub(crate) enum MqttStream {
    /// Plain TCP (an `mqtt://` broker).
    Plain(TcpStream),
    /// TLS over TCP (the hub, an `mqtts://` broker).
    Tls(Box<TlsStream<TcpStream>>),
}

impl AsyncRead for MqttStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MqttStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Self::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

/// An MQTT 3.1.1 connection after CONNACK: the stream and what was read but
/// not yet decoded.
pub(crate) struct Connection {
    pub(crate) stream: MqttStream,
    pub(crate) received: BytesMut,
}

impl Connection {
    /// Connects to `endpoint`, sends `connect` and waits for a successful CONNACK.
    pub(crate) async fn open(
        endpoint: &Endpoint,
        source: Option<IpAddr>,
        connect: Connect,
    ) -> Result<Self, String> {
        let work = async {
            let mut connection = Self {
                stream: endpoint.open(source).await?,
                received: BytesMut::with_capacity(4096),
            };
            connection.send(Packet::Connect(connect)).await?;
            match connection.next_packet().await? {
                Packet::ConnAck(ack) if ack.code == ConnectReturnCode::Success => Ok(connection),
                Packet::ConnAck(ack) => Err(format!("CONNACK {:?}", ack.code)),
                other => Err(format!("expected CONNACK, got {other:?}")),
            }
        };
        tokio::time::timeout(HANDSHAKE_TIMEOUT, work)
            .await
            .map_err(|_| format!("no CONNACK within {HANDSHAKE_TIMEOUT:?}"))?
    }

    /// Writes one packet and flushes.
    pub(crate) async fn send(&mut self, packet: Packet) -> Result<(), String> {
        let mut bytes = BytesMut::new();
        packet
            .write(&mut bytes, MAX_PACKET)
            .map_err(|e| format!("encode: {e}"))?;
        self.stream
            .write_all(&bytes)
            .await
            .map_err(|e| format!("write: {e}"))?;
        self.stream.flush().await.map_err(|e| format!("write: {e}"))
    }

    /// Reads until one whole packet is in, and decodes it.
    pub(crate) async fn next_packet(&mut self) -> Result<Packet, String> {
        loop {
            match Packet::read(&mut self.received, MAX_PACKET) {
                Ok(packet) => return Ok(packet),
                Err(CodecError::InsufficientBytes(_)) => {}
                Err(e) => return Err(format!("malformed packet: {e}")),
            }
            match self.stream.read_buf(&mut self.received).await {
                Ok(0) => return Err("the server closed the connection".into()),
                Ok(_) => {}
                Err(e) => return Err(format!("read: {e}")),
            }
        }
    }

    /// Sends DISCONNECT and closes the stream, ignoring errors (the end of a run).
    pub(crate) async fn close(mut self) {
        let _ = self.send(Packet::Disconnect).await;
        let _ = self.stream.shutdown().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(addr: &str) -> Endpoint {
        Endpoint {
            addrs: vec![addr.parse().unwrap()],
            tls: None,
        }
    }

    #[test]
    fn source_addresses_are_picked_for_the_connection_count() {
        let local = endpoint("127.0.0.1:8883");
        assert_eq!(local.sources(None, 20_000).unwrap(), Vec::<IpAddr>::new());
        let sources = local.sources(None, 100_000).unwrap();
        assert_eq!(sources.len(), 5);
        assert_eq!(sources[0], IpAddr::V4(Ipv4Addr::new(127, 0, 0, 1)));
        assert_eq!(sources[4], IpAddr::V4(Ipv4Addr::new(127, 0, 0, 5)));
        assert_eq!(local.sources(Some(3), 10).unwrap().len(), 3);
        assert_eq!(local.sources(Some(1), 100_000).unwrap().len(), 0);
        assert!(local.sources(Some(255), 10).is_err());
    }

    #[test]
    fn several_source_addresses_need_a_loopback_server() {
        assert!(endpoint("[::1]:8883").sources(Some(2), 10).is_err());
        assert!(endpoint("192.0.2.1:8883").sources(Some(2), 10).is_err());
        assert!(endpoint("192.0.2.1:8883").sources(None, 10).is_ok());
    }

    #[tokio::test]
    async fn a_connection_can_come_from_another_loopback_address() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let target = endpoint(&addr.to_string());
        let source = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));
        let (opened, accepted) = tokio::join!(target.open(Some(source)), listener.accept());
        assert!(opened.is_ok());
        assert_eq!(accepted.unwrap().1.ip(), source);
    }
}
