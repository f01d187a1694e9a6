//! The protocol header sniff: the SDKs open with either the SASL header
//! (`AMQP 3 1 0 0`: Python, C, Java, PLAIN users) or the plain AMQP header
//! (`AMQP 0 1 0 0`: Node, .NET) on the same port (wire spec §3.2). fe2o3's
//! acceptor picks SASL by type, so the head reads the 8 bytes first and
//! replays them to the acceptor it chose.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// The SASL security layer's protocol header.
pub(crate) const SASL_HEADER: [u8; 8] = *b"AMQP\x03\x01\x00\x00";
/// The bare AMQP protocol header.
pub(crate) const AMQP_HEADER: [u8; 8] = *b"AMQP\x00\x01\x00\x00";

/// Which header the peer opened with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Opening {
    /// `AMQP 3 1 0 0`.
    Sasl,
    /// `AMQP 0 1 0 0`.
    Amqp,
}

/// Why the opening was refused.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SniffError {
    /// The peer sent something other than an AMQP 1.0 header.
    #[error("not an AMQP 1.0 protocol header: {0:02x?}")]
    NotAmqp([u8; 8]),
    /// The stream failed or ended first.
    #[error("reading the protocol header: {0}")]
    Io(#[from] io::Error),
}

/// Reads the protocol header; on success the stream replays it.
pub(crate) async fn sniff<S>(mut stream: S) -> Result<(Opening, Replay<S>), (SniffError, S)>
where
    S: AsyncRead + Unpin,
{
    let mut header = [0u8; 8];
    if let Err(e) = stream.read_exact(&mut header).await {
        return Err((e.into(), stream));
    }
    let opening = match header {
        SASL_HEADER => Opening::Sasl,
        AMQP_HEADER => Opening::Amqp,
        other => return Err((SniffError::NotAmqp(other), stream)),
    };
    Ok((
        opening,
        Replay {
            header,
            replayed: 0,
            inner: stream,
        },
    ))
}

/// A stream that yields the sniffed header before the rest.
pub(crate) struct Replay<S> {
    header: [u8; 8],
    replayed: usize,
    inner: S,
}

// fe2o3's acceptor wants a `Debug` stream; the server's streams need not be.
impl<S> fmt::Debug for Replay<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Replay")
            .field("replayed", &self.replayed)
            .finish_non_exhaustive()
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Replay<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.replayed < this.header.len() {
            let rest = &this.header[this.replayed..];
            let n = rest.len().min(buf.remaining());
            buf.put_slice(&rest[..n]);
            this.replayed += n;
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut this.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Replay<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[tokio::test]
    async fn replays_the_header_then_the_rest() {
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(b"AMQP\x03\x01\x00\x00rest").await.unwrap();
        drop(client);
        let (opening, mut replay) = sniff(server).await.map_err(|(e, _)| e).unwrap();
        assert_eq!(opening, Opening::Sasl);
        let mut all = Vec::new();
        replay.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"AMQP\x03\x01\x00\x00rest");
    }

    #[tokio::test]
    async fn refuses_other_protocols() {
        let (mut client, server) = tokio::io::duplex(64);
        client.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let err = sniff(server).await.map(|_| ()).map_err(|(e, _)| e);
        assert!(matches!(err, Err(SniffError::NotAmqp(h)) if &h == b"GET / HT"));
    }
}
