//! A WebSocket as a byte stream: [`WsStream`] turns a WebSocket of binary
//! messages into `AsyncRead + AsyncWrite`, so that a protocol head written
//! for TCP serves WebSocket clients unchanged, and a client written for TCP
//! talks over a WebSocket.
//!
//! Reads concatenate binary messages, ignoring message boundaries (MQTT and
//! AMQP clients split and pack packets across messages freely); a text
//! message is a protocol error; a close message or the end of the socket is
//! end of file. Each write becomes one binary message. Pings are answered by
//! the WebSocket library, never seen by the head. Works for the server side
//! (axum's `WebSocket`) and the client side (tokio-tungstenite's
//! `WebSocketStream`, used by courier-client, tests and tools). The server
//! side needs the `axum` feature.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use futures_util::{Sink, Stream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What a received WebSocket message means to the byte stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Binary payload: bytes of the stream.
    Data(Bytes),
    /// A text message, which byte-stream protocols do not use.
    Text,
    /// The peer closed the WebSocket.
    Close,
    /// Ping or pong: the library answers; nothing for the stream.
    Control,
}

/// A WebSocket message type [`WsStream`] can carry bytes in.
pub trait WsMessage: Sized {
    /// A binary message holding `data`.
    fn binary(data: Bytes) -> Self;
    /// What this received message means to the stream.
    fn into_frame(self) -> Frame;
}

#[cfg(feature = "axum")]
impl WsMessage for axum::extract::ws::Message {
    fn binary(data: Bytes) -> Self {
        axum::extract::ws::Message::Binary(data)
    }

    fn into_frame(self) -> Frame {
        use axum::extract::ws::Message;
        match self {
            Message::Binary(data) => Frame::Data(data),
            Message::Text(_) => Frame::Text,
            Message::Close(_) => Frame::Close,
            Message::Ping(_) | Message::Pong(_) => Frame::Control,
        }
    }
}

impl WsMessage for tokio_tungstenite::tungstenite::Message {
    fn binary(data: Bytes) -> Self {
        tokio_tungstenite::tungstenite::Message::Binary(data)
    }

    fn into_frame(self) -> Frame {
        use tokio_tungstenite::tungstenite::Message;
        match self {
            Message::Binary(data) => Frame::Data(data),
            Message::Text(_) => Frame::Text,
            Message::Close(_) => Frame::Close,
            // Raw frames are only ever written, never read.
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => Frame::Control,
        }
    }
}

/// A WebSocket `W` of messages `M` as a byte stream.
#[derive(Debug)]
pub struct WsStream<W> {
    socket: W,
    /// The unread rest of the last binary message.
    pending: Bytes,
    /// A close message or the end of the socket was seen: reads return EOF.
    read_closed: bool,
}

impl<W> WsStream<W> {
    /// Wraps an established WebSocket.
    pub fn new(socket: W) -> WsStream<W> {
        WsStream {
            socket,
            pending: Bytes::new(),
            read_closed: false,
        }
    }

    /// The WebSocket, for closing it with a reason.
    pub fn into_inner(self) -> W {
        self.socket
    }
}

fn ws_error<E: Into<Box<dyn std::error::Error + Send + Sync>>>(e: E) -> io::Error {
    io::Error::other(e)
}

impl<W, M, E> AsyncRead for WsStream<W>
where
    W: Stream<Item = Result<M, E>> + Unpin,
    M: WsMessage,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        // An empty message must not end up as a zero-byte read: that means EOF.
        while this.pending.is_empty() {
            if this.read_closed {
                return Poll::Ready(Ok(()));
            }
            match ready!(Pin::new(&mut this.socket).poll_next(cx)) {
                None => this.read_closed = true,
                Some(Err(e)) => return Poll::Ready(Err(ws_error(e))),
                Some(Ok(message)) => match message.into_frame() {
                    Frame::Data(data) => this.pending = data,
                    Frame::Close => this.read_closed = true,
                    Frame::Control => {}
                    Frame::Text => {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::InvalidData,
                            "a text WebSocket message arrived; this protocol is carried in binary messages",
                        )))
                    }
                },
            }
        }
        let n = this.pending.len().min(buf.remaining());
        buf.put_slice(&this.pending[..n]);
        this.pending.advance(n);
        Poll::Ready(Ok(()))
    }
}

// `M` is named through the `Stream` bound because a `Sink` bound alone
// would leave it unconstrained (a type may be a sink of several items).
impl<W, M, E> AsyncWrite for WsStream<W>
where
    W: Stream<Item = Result<M, E>> + Sink<M, Error = E> + Unpin,
    M: WsMessage,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(Pin::new(&mut this.socket).poll_ready(cx)).map_err(ws_error)?;
        Pin::new(&mut this.socket)
            .start_send(M::binary(Bytes::copy_from_slice(buf)))
            .map_err(ws_error)?;
        // Start sending now, as a TCP write would, so a writer that never
        // flushes still gets its bytes out; a failure shows on the next call.
        let _ = Pin::new(&mut this.socket).poll_flush(cx);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().socket)
            .poll_flush(cx)
            .map_err(ws_error)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().socket)
            .poll_close(cx)
            .map_err(ws_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures_util::{SinkExt as _, StreamExt as _};
    use std::time::Duration;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_tungstenite::tungstenite::Message;
    use tokio_tungstenite::WebSocketStream;

    const PATIENCE: Duration = Duration::from_secs(20);

    /// A real WebSocket pair over TCP on 127.0.0.1: (server side, client side).
    async fn pair() -> (WebSocketStream<TcpStream>, WebSocketStream<TcpStream>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            tokio_tungstenite::accept_async(tcp).await.unwrap()
        });
        let tcp = TcpStream::connect(addr).await.unwrap();
        let (client, _) = tokio_tungstenite::client_async(format!("ws://{addr}/"), tcp)
            .await
            .unwrap();
        (server.await.unwrap(), client)
    }

    async fn within<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::time::timeout(PATIENCE, f).await.expect("timed out")
    }

    #[tokio::test]
    async fn bytes_round_trip_both_ways_over_a_real_websocket() {
        let (server, client) = pair().await;
        let mut server = WsStream::new(server);
        let mut client = WsStream::new(client);

        let big: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let writer = tokio::spawn(async move {
            client.write_all(b"hello ").await.unwrap();
            client.write_all(&big).await.unwrap();
            client.flush().await.unwrap();
            let mut answer = vec![0u8; 5];
            client.read_exact(&mut answer).await.unwrap();
            (client, answer, big)
        });

        let mut got = vec![0u8; 6 + 200_000];
        within(server.read_exact(&mut got)).await.unwrap();
        server.write_all(b"ready").await.unwrap();
        server.flush().await.unwrap();

        let (mut client, answer, big) = within(writer).await.unwrap();
        assert_eq!(&got[..6], b"hello ");
        assert_eq!(&got[6..], &big[..]);
        assert_eq!(answer, b"ready");

        // Closing one side is end of file on the other.
        within(client.shutdown()).await.unwrap();
        let mut rest = Vec::new();
        within(server.read_to_end(&mut rest)).await.unwrap();
        assert!(rest.is_empty());
    }

    #[tokio::test]
    async fn messages_are_concatenated_and_empty_ones_and_pings_skipped() {
        let (server, mut client) = pair().await;
        let mut server = WsStream::new(server);
        for message in [
            Message::binary(&b"ab"[..]),
            Message::binary(Bytes::new()),
            Message::Ping(Bytes::from_static(b"p")),
            Message::binary(&b"cde"[..]),
        ] {
            client.send(message).await.unwrap();
        }
        let mut got = [0u8; 5];
        within(server.read_exact(&mut got)).await.unwrap();
        assert_eq!(&got, b"abcde");
        // The library answered the ping on its own.
        let pong = within(client.next()).await.unwrap().unwrap();
        assert_eq!(pong, Message::Pong(Bytes::from_static(b"p")));
    }

    #[tokio::test]
    async fn each_write_is_one_binary_message() {
        let (server, mut client) = pair().await;
        let mut server = WsStream::new(server);
        server.write_all(b"packet").await.unwrap();
        server.flush().await.unwrap();
        let message = within(client.next()).await.unwrap().unwrap();
        assert_eq!(message, Message::binary(&b"packet"[..]));
    }

    #[tokio::test]
    async fn a_text_message_is_a_protocol_error() {
        let (server, mut client) = pair().await;
        let mut server = WsStream::new(server);
        client.send(Message::text("CONNECT")).await.unwrap();
        let mut buf = [0u8; 8];
        let err = within(server.read(&mut buf)).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    }

    #[tokio::test]
    async fn a_dropped_client_ends_the_stream() {
        let (server, client) = pair().await;
        let mut server = WsStream::new(server);
        drop(client);
        let mut buf = Vec::new();
        // Without a close handshake the library reports an error or EOF; either ends the head.
        let result = within(server.read_to_end(&mut buf)).await;
        assert!(buf.is_empty());
        if let Err(e) = result {
            assert_ne!(e.kind(), io::ErrorKind::InvalidData, "{e}");
        }
    }
}
