//! `WsWrite`: WebSocket messages to bytes, encoded into one buffer that goes out in a write per batch.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use futures_util::Sink;
use tokio::io::AsyncWrite;
use tokio_tungstenite::tungstenite::error::ProtocolError;
use tokio_tungstenite::tungstenite::{Error, Message};

use crate::ws::Role;
use crate::ws::header;

/// Bytes buffered before a send writes them out without waiting for the flush.
pub(crate) const WRITE_BUFFER: usize = 16 << 10;

/// The write half of a WebSocket connection, as a sink of messages.
///
/// Messages are encoded into a buffer (masked, on a client) and written at
/// the flush, or whenever [`WRITE_BUFFER`] bytes wait. After a close frame
/// nothing more is sent.
#[derive(Debug)]
pub(crate) struct WsWrite<W> {
    io: W,
    role: Role,
    /// Encoded frames; `out[written..]` is not written yet.
    out: Vec<u8>,
    written: usize,
    /// A close frame was sent.
    closed: bool,
}

impl<W: AsyncWrite + Unpin> WsWrite<W> {
    pub(crate) fn new(io: W, role: Role) -> WsWrite<W> {
        WsWrite {
            io,
            role,
            out: Vec::new(),
            written: 0,
            closed: false,
        }
    }

    /// Appends one frame.
    fn put(&mut self, opcode: u8, payload: &[u8]) {
        let mask = match self.role {
            Role::Client => Some(rand::random::<[u8; 4]>()),
            Role::Server => None,
        };
        header::put(&mut self.out, opcode, payload.len(), mask);
        let start = self.out.len();
        self.out.extend_from_slice(payload);
        if let Some(mask) = mask {
            header::apply_mask(&mut self.out[start..], mask);
        }
    }

    /// Writes out everything buffered.
    fn poll_write_out(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.out.len() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.out[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.out.clear();
        self.written = 0;
        // A large message's buffer is not kept.
        if self.out.capacity() > 2 * WRITE_BUFFER {
            self.out = Vec::new();
        }
        Poll::Ready(Ok(()))
    }
}

impl<W: AsyncWrite + Unpin> Sink<Message> for WsWrite<W> {
    type Error = Error;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let this = self.get_mut();
        if this.out.len() - this.written >= WRITE_BUFFER {
            ready!(this.poll_write_out(cx))?;
        }
        Poll::Ready(Ok(()))
    }

    fn start_send(self: Pin<&mut Self>, message: Message) -> Result<(), Error> {
        let this = self.get_mut();
        if this.closed {
            return Err(Error::Protocol(ProtocolError::SendAfterClosing));
        }
        match message {
            Message::Binary(bytes) => this.put(header::BINARY, &bytes),
            Message::Text(text) => this.put(header::TEXT, text.as_bytes()),
            Message::Ping(bytes) => this.put(header::PING, &bytes),
            Message::Pong(bytes) => this.put(header::PONG, &bytes),
            Message::Close(frame) => {
                this.closed = true;
                let mut payload = Vec::new();
                if let Some(frame) = frame {
                    payload.extend_from_slice(&u16::from(frame.code).to_be_bytes());
                    payload.extend_from_slice(frame.reason.as_bytes());
                }
                this.put(header::CLOSE, &payload);
            }
            Message::Frame(_) => {
                return Err(Error::Io(io::Error::new(
                    io::ErrorKind::Unsupported,
                    "raw frames are not sent",
                )));
            }
        }
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let this = self.get_mut();
        ready!(this.poll_write_out(cx))?;
        ready!(Pin::new(&mut this.io).poll_flush(cx))?;
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Error>> {
        let this = self.get_mut();
        ready!(this.poll_write_out(cx))?;
        ready!(Pin::new(&mut this.io).poll_shutdown(cx))?;
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ws::Limits;
    use crate::ws::read::WsRead;
    use bytes::{Bytes, BytesMut};
    use futures_util::{SinkExt as _, StreamExt as _};
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;

    #[tokio::test]
    async fn what_one_side_writes_the_other_reads_in_both_roles() {
        for (writer, reader) in [(Role::Client, Role::Server), (Role::Server, Role::Client)] {
            let (near, far) = tokio::io::duplex(1 << 20);
            let mut write = WsWrite::new(near, writer);
            let limits = Limits {
                max_message: 1 << 20,
                read_buffer: 512,
            };
            let mut read = WsRead::new(far, BytesMut::new(), reader, limits);
            let sent = vec![
                Message::Binary(Bytes::from_static(b"small")),
                Message::Binary(Bytes::from(vec![3u8; 100_000])),
                Message::Ping(Bytes::from_static(b"p")),
                Message::Pong(Bytes::new()),
                Message::Close(Some(CloseFrame {
                    code: 4000.into(),
                    reason: "done".into(),
                })),
            ];
            for message in sent.clone() {
                write.feed(message).await.expect("feed");
            }
            write.flush().await.expect("flush");
            let err = write
                .send(Message::Binary(Bytes::new()))
                .await
                .expect_err("after close");
            assert_eq!(
                err.to_string(),
                "WebSocket protocol error: Sending after closing is not allowed"
            );
            for want in sent {
                assert_eq!(read.next().await.expect("message").expect("valid"), want);
            }
        }
    }
}
