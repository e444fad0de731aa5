//! `Socket`: reads the transport in large chunks while data streams in, through a buffer that exists only then, so an idle connection holds none.
//!
//! The WebSocket layer above reads in small chunks (its own buffer is kept
//! small, since every connection holds it for life). Reads go straight into
//! that small buffer; one that fills it means more is waiting, so the next
//! reads go through a chunk buffer of [`CHUNK`] bytes: a burst of small
//! frames then costs one system call, not one per few frames. The chunk
//! buffer is kept while traffic continues and given back once the
//! connection is quiet (two reads in a row found nothing: the second comes
//! from the reader's timers, such as the keepalive check); a connection that
//! exchanges small messages now and then never allocates it.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf as _, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Bytes read from the transport per system call while data streams in, at most.
pub(crate) const CHUNK: usize = 16 << 10;

/// A transport whose reads go through a chunk buffer held only while busy.
#[derive(Debug)]
pub(crate) struct Socket<S> {
    inner: S,
    /// The chunk buffer's unread bytes; no allocation unless streaming.
    buf: BytesMut,
    /// The last direct read filled the reader's buffer: more is waiting.
    streaming: bool,
    /// Chunk reads in a row that found nothing.
    empty_polls: u8,
}

impl<S> Socket<S> {
    pub(crate) fn new(inner: S) -> Socket<S> {
        Socket {
            inner,
            buf: BytesMut::new(),
            streaming: false,
            empty_polls: 0,
        }
    }

    /// Whether the chunk buffer is allocated now.
    #[cfg(test)]
    fn holds_buffer(&self) -> bool {
        self.buf.capacity() > 0
    }

    /// Copies buffered bytes into `out`.
    fn drain_into(&mut self, out: &mut ReadBuf<'_>) {
        let n = self.buf.len().min(out.remaining());
        out.put_slice(&self.buf[..n]);
        self.buf.advance(n);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Socket<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if !this.buf.is_empty() {
            this.drain_into(out);
            return Poll::Ready(Ok(()));
        }
        if !this.streaming || out.remaining() >= CHUNK {
            // Straight into the reader's buffer; filling it means more waits.
            let before = out.filled().len();
            let read = Pin::new(&mut this.inner).poll_read(cx, out);
            this.streaming = matches!(read, Poll::Ready(Ok(())))
                && out.remaining() == 0
                && out.filled().len() > before;
            return read;
        }
        // Empty here: this takes the whole chunk back, allocating only the first time.
        this.buf.reserve(CHUNK);
        match tokio_util::io::poll_read_buf(Pin::new(&mut this.inner), cx, &mut this.buf) {
            Poll::Ready(Ok(_)) => {
                this.empty_polls = 0;
                this.drain_into(out);
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
            Poll::Pending => {
                // Caught up. A second empty poll in a row comes from the
                // reader's timers, not the socket: the connection has been
                // quiet a while, and gives its buffer back.
                this.empty_polls += 1;
                if this.empty_polls >= 2 {
                    this.streaming = false;
                    this.empty_polls = 0;
                    this.buf = BytesMut::new();
                }
                Poll::Pending
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Socket<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
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
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    #[tokio::test]
    async fn a_burst_goes_through_one_chunk_and_a_quiet_socket_holds_no_buffer() {
        let (mut far, near) = tokio::io::duplex(64 << 10);
        let mut socket = Socket::new(near);
        // A small message fits the reader's buffer: read straight in.
        far.write_all(b"hello").await.expect("write");
        let mut small = [0u8; 16];
        let n = socket.read(&mut small).await.expect("read");
        assert_eq!(&small[..n], b"hello");
        assert!(!socket.holds_buffer(), "a small read allocates nothing");
        // A burst fills the reader's buffer: the rest comes through a chunk.
        far.write_all(&[7u8; 1000]).await.expect("write");
        let mut got = Vec::new();
        let mut part = [0u8; 16];
        socket.read_exact(&mut part).await.expect("read");
        got.extend_from_slice(&part);
        socket.read_exact(&mut part).await.expect("read");
        got.extend_from_slice(&part);
        assert!(socket.holds_buffer(), "streaming: buffered");
        while got.len() < 1000 {
            let n = socket.read(&mut part).await.expect("read");
            got.extend_from_slice(&part[..n]);
        }
        assert_eq!(got, vec![7u8; 1000]);
        // Caught up: the next read finds nothing (the buffer stays for what
        // comes next); one more, later, with still nothing: the buffer goes.
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut out = [0u8; 16];
        for (poll, holds) in [(1, true), (2, false)] {
            let mut buf = ReadBuf::new(&mut out);
            assert!(
                Pin::new(&mut socket)
                    .poll_read(&mut cx, &mut buf)
                    .is_pending()
            );
            assert_eq!(socket.holds_buffer(), holds, "after empty poll {poll}");
        }
        // End of stream reads as such.
        drop(far);
        assert_eq!(socket.read(&mut out).await.expect("eof"), 0);
    }
}
