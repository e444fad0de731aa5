//! `HeadFirst`: the client's stream during the opening handshake, which hands the handshake no byte past a 101 response's head.
//!
//! tungstenite reads the response in chunks and keeps what follows the head
//! for its own framing. goomerang frames with its own reader, so the
//! handshake is given the head and nothing more; frames the server sent right
//! after it stay here for [`WsRead`](crate::ws::WsRead). A refusal (any other
//! status) is passed through whole, since its body is the reason.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use bytes::{Buf as _, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The end of an HTTP head.
const HEAD_END: &[u8; 4] = b"\r\n\r\n";

/// A stream that stops short of the bytes after a 101 response's head.
#[derive(Debug)]
pub(crate) struct HeadFirst<S> {
    io: S,
    /// Read from `io`, not yet handed out.
    held: BytesMut,
    /// Bytes of [`HEAD_END`] matched so far, across reads.
    matched: usize,
    /// The status line said 101: nothing past the head is handed out.
    switching: Option<bool>,
    /// The head was handed out whole.
    done: bool,
}

impl<S> HeadFirst<S> {
    pub(crate) fn new(io: S) -> HeadFirst<S> {
        HeadFirst {
            io,
            held: BytesMut::new(),
            matched: 0,
            switching: None,
            done: false,
        }
    }

    /// The stream and the bytes read past the head (no buffer if none were).
    pub(crate) fn into_parts(self) -> (S, BytesMut) {
        if self.held.is_empty() {
            (self.io, BytesMut::new())
        } else {
            (self.io, self.held)
        }
    }

    /// How many held bytes may be handed out now, of at most `max`.
    fn allowed(&mut self, max: usize) -> usize {
        if self.switching.is_none() && self.held.len() >= 12 {
            // "HTTP/1.1 101"
            self.switching = Some(&self.held[9..12] == b"101");
        }
        match self.switching {
            Some(false) => return max.min(self.held.len()),
            None if self.held.len() < 12 => return 0,
            _ => {}
        }
        if self.done {
            return 0;
        }
        let mut n = 0;
        for &byte in self.held.iter().take(max) {
            n += 1;
            self.matched = if byte == HEAD_END[self.matched] {
                self.matched + 1
            } else if byte == HEAD_END[0] {
                1
            } else {
                0
            };
            if self.matched == HEAD_END.len() {
                self.done = true;
                break;
            }
        }
        n
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for HeadFirst<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        out: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            let n = this.allowed(out.remaining());
            if n > 0 {
                out.put_slice(&this.held[..n]);
                this.held.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.done {
                // The handshake has its head and reads no further.
                return Poll::Pending;
            }
            this.held.reserve(1024);
            if ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut this.io),
                cx,
                &mut this.held
            ))? == 0
            {
                // The end of the stream: what is held (a short status line) goes as it is.
                let n = out.remaining().min(this.held.len());
                out.put_slice(&this.held[..n]);
                this.held.advance(n);
                return Poll::Ready(Ok(()));
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for HeadFirst<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, data)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    #[tokio::test]
    async fn a_101_head_is_handed_out_alone_and_the_frames_after_it_are_kept() {
        let (mut far, near) = tokio::io::duplex(4096);
        let head = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n";
        far.write_all(&[&head[..], b"\x82\x02hi"].concat())
            .await
            .expect("write");
        let mut stream = HeadFirst::new(near);
        let mut got = Vec::new();
        let mut part = [0u8; 7];
        while got.len() < head.len() {
            let n = stream.read(&mut part).await.expect("read");
            got.extend_from_slice(&part[..n]);
        }
        assert_eq!(got, head);
        let (_, leftover) = stream.into_parts();
        assert_eq!(&leftover[..], b"\x82\x02hi");
    }

    #[tokio::test]
    async fn a_refusal_is_passed_through_with_its_body() {
        let (mut far, near) = tokio::io::duplex(4096);
        let response = b"HTTP/1.1 401 Unauthorized\r\ncontent-length: 3\r\n\r\nno!";
        far.write_all(response).await.expect("write");
        drop(far);
        let mut all = Vec::new();
        HeadFirst::new(near)
            .read_to_end(&mut all)
            .await
            .expect("read");
        assert_eq!(all, response);
    }
}
