//! `Io`: an upgraded connection's byte stream, split into a read and a write half that take turns without blocking a thread.
//!
//! The halves share the stream behind a lock that is only ever tried: a half
//! that finds the other one at the stream registers its waker and returns
//! `Pending`, and is woken when the other lets go. Reading and writing the
//! same socket from two threads at once, through independent halves, made
//! them wait on each other inside the runtime's I/O registration and the
//! kernel's socket lock (a thread put to sleep each time: `sync_32` lost a
//! third of its rate); taking turns in user space costs a few atomic
//! operations instead.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, TryLockError};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Any byte stream a connection can run over.
pub(crate) trait Duplex: AsyncRead + AsyncWrite + Send + Unpin + 'static {}

impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Duplex for T {}

/// A connection's byte stream: plain TCP, or TLS over it.
pub(crate) type Io = Box<dyn Duplex>;

/// The read and write halves of `io`.
pub(crate) fn split(io: Io) -> (ReadSide, WriteSide) {
    let shared = Arc::new(Turns {
        io: Mutex::new(io),
        reader: AtomicWaker::new(),
        writer: AtomicWaker::new(),
    });
    (ReadSide(Arc::clone(&shared)), WriteSide(shared))
}

/// The stream and who waits for its turn.
struct Turns {
    io: Mutex<Io>,
    /// The read half, when it found the stream taken.
    reader: AtomicWaker,
    /// The write half, likewise.
    writer: AtomicWaker,
}

impl Turns {
    /// The stream, if free; else `mine` is woken when it is let go.
    fn take(&self, mine: &AtomicWaker, cx: &mut Context<'_>) -> Option<MutexGuard<'_, Io>> {
        let attempt = || match self.io.try_lock() {
            Ok(guard) => Some(guard),
            Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            Err(TryLockError::WouldBlock) => None,
        };
        attempt().or_else(|| {
            mine.register(cx.waker());
            // Let go between the first try and the registration: try again.
            attempt()
        })
    }

    /// Runs `f` on the stream in this half's turn, then lets the other half have it.
    fn with<R>(
        &self,
        mine: &AtomicWaker,
        other: &AtomicWaker,
        cx: &mut Context<'_>,
        f: impl FnOnce(Pin<&mut Io>, &mut Context<'_>) -> Poll<io::Result<R>>,
    ) -> Poll<io::Result<R>> {
        let Some(mut io) = self.take(mine, cx) else {
            return Poll::Pending;
        };
        let result = f(Pin::new(&mut *io), cx);
        drop(io);
        other.wake();
        result
    }
}

/// The read half of an [`Io`].
pub(crate) struct ReadSide(Arc<Turns>);

/// The write half of an [`Io`].
pub(crate) struct WriteSide(Arc<Turns>);

impl AsyncRead for ReadSide {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let turns = &*self.0;
        turns.with(&turns.reader, &turns.writer, cx, |io, cx| {
            io.poll_read(cx, buf)
        })
    }
}

impl AsyncWrite for WriteSide {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let turns = &*self.0;
        turns.with(&turns.writer, &turns.reader, cx, |io, cx| {
            io.poll_write(cx, data)
        })
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let turns = &*self.0;
        turns.with(&turns.writer, &turns.reader, cx, |io, cx| io.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let turns = &*self.0;
        turns.with(&turns.writer, &turns.reader, cx, |io, cx| {
            io.poll_shutdown(cx)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicBool, Ordering};
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    struct Flag(AtomicBool);

    impl futures_util::task::ArcWake for Flag {
        fn wake_by_ref(flag: &Arc<Self>) {
            flag.0.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn a_half_that_finds_the_stream_taken_is_woken_when_the_other_lets_go() {
        let (near, mut far) = tokio::io::duplex(64);
        let (mut read, mut write) = split(Box::new(near));
        let flag = Arc::new(Flag(AtomicBool::new(false)));
        let waker = futures_util::task::waker(Arc::clone(&flag));
        let mut cx = Context::from_waker(&waker);
        let mut buf = [0u8; 4];
        // The stream is taken: the read half waits, without blocking.
        let turns = Arc::clone(&read.0);
        let held = turns.io.try_lock().expect("free");
        let mut out = ReadBuf::new(&mut buf);
        assert!(
            Pin::new(&mut read)
                .poll_read(&mut cx, &mut out)
                .is_pending()
        );
        drop(held);
        assert!(!flag.0.load(Ordering::SeqCst));
        // The write half takes its turn, and wakes the read half as it lets go.
        write.write_all(b"ping").await.expect("write");
        assert!(flag.0.load(Ordering::SeqCst), "the waiting half was woken");
        let mut got = [0u8; 4];
        far.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"ping");
        far.write_all(b"pong").await.expect("write");
        read.read_exact(&mut got).await.expect("read");
        assert_eq!(&got, b"pong");
    }
}
