//! `Io`: an upgraded connection's byte stream, split so that reading and writing never wait on each other over plain TCP (and share one lock over TLS).

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

/// Any byte stream a connection can run over.
pub(crate) trait Duplex: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Duplex for T {}

/// A connection's byte stream.
pub(crate) enum Io {
    /// Plain TCP: its halves are independent.
    Tcp(TcpStream),
    /// Anything else (TLS): its halves take turns.
    Other(Box<dyn Duplex>),
}

impl std::fmt::Debug for Io {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Io::Tcp(_) => "Io::Tcp",
            Io::Other(_) => "Io::Other",
        })
    }
}

impl Io {
    /// The read and write halves.
    pub(crate) fn split(self) -> (ReadSide, WriteSide) {
        match self {
            Io::Tcp(tcp) => {
                let (read, write) = tcp.into_split();
                (ReadSide::Tcp(read), WriteSide::Tcp(write))
            }
            Io::Other(io) => {
                let (read, write) = tokio::io::split(io);
                (ReadSide::Other(read), WriteSide::Other(write))
            }
        }
    }
}

/// The read half of an [`Io`].
pub(crate) enum ReadSide {
    Tcp(OwnedReadHalf),
    Other(ReadHalf<Box<dyn Duplex>>),
}

/// The write half of an [`Io`].
pub(crate) enum WriteSide {
    Tcp(OwnedWriteHalf),
    Other(WriteHalf<Box<dyn Duplex>>),
}

impl AsyncRead for ReadSide {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            ReadSide::Tcp(read) => Pin::new(read).poll_read(cx, buf),
            ReadSide::Other(read) => Pin::new(read).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for WriteSide {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            WriteSide::Tcp(write) => Pin::new(write).poll_write(cx, data),
            WriteSide::Other(write) => Pin::new(write).poll_write(cx, data),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteSide::Tcp(write) => Pin::new(write).poll_flush(cx),
            WriteSide::Other(write) => Pin::new(write).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            WriteSide::Tcp(write) => Pin::new(write).poll_shutdown(cx),
            WriteSide::Other(write) => Pin::new(write).poll_shutdown(cx),
        }
    }
}
