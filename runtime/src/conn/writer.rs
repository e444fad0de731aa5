//! `Writer`: the one owner of a connection's socket write half, and the rule for which task writes.
//!
//! **Whoever finds the connection quiet writes.** Frames wait in the
//! [`Outbox`]; draining it means writing every queued item, then flushing
//! once. Three tasks may drain, one at a time, and the outbox's claim (under
//! its lock) says whether one is at it:
//!
//! - the **writer task**, woken by a push that finds nobody draining;
//! - the **reader**, which handles frames inline and writes what they queued
//!   (replies, mostly) when it is about to wait for the socket, or every 64
//!   frames. While it is busy, pushes do not wake the writer task: the
//!   reader will write them. When it must wait for something else (the
//!   handler caps, the ordered queue) it hands over to the writer task;
//! - a **requester**, which writes its own request when nobody is draining,
//!   since it waits for the answer anyway; unless the same task still waits
//!   for an earlier request on this connection: then it is one of a burst
//!   (`join_all`, a window of requests in flight), and it only queues. The
//!   writer task it wakes runs once the task's poll ends, and writes the
//!   whole burst at once.
//!
//! So a round trip on a quiet connection wakes no writer task. Only the
//! writer task ever waits on the socket: a reader or requester that finds it
//! full (or the write half taken) hands the rest to the writer task, with
//! a no-op waker of its own. The write half sits behind a mutex that is held
//! briefly and never across an await.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::{Arc, Mutex, TryLockError};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures_util::Sink;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};

use crate::conn::outbox::{AfterDrain, Outbound, Outbox, Refused};
use crate::observe::metrics::Counters;
use crate::sync::lock;

/// Frames written before one flush, at most; bounds the latency of a huge backlog.
const MAX_BATCH: usize = 512;

/// The write half of a connection's WebSocket, whatever the transport.
pub(crate) type WsSink = Pin<Box<dyn Sink<WsMessage, Error = tungstenite::Error> + Send>>;

/// Drains a connection's outbox into its socket.
#[derive(Debug)]
pub(crate) struct Writer {
    outbox: Outbox,
    /// The socket's write half while the connection runs.
    half: Mutex<Option<WriteHalf>>,
    /// Frames and bytes flushed are counted here.
    metrics: Arc<Counters>,
}

impl Writer {
    pub(crate) fn new(outbox: Outbox, metrics: Arc<Counters>) -> Writer {
        Writer {
            outbox,
            half: Mutex::new(None),
            metrics,
        }
    }

    /// The queue senders push to.
    pub(crate) fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Takes the socket's write half when the connection starts.
    pub(crate) fn attach(&self, half: WriteHalf) {
        *lock(&self.half) = Some(half);
    }

    /// Drops the write half (and with it the socket) when the connection has
    /// ended, and with it whatever was never written: its budget bytes are
    /// given back, so `goomerang_outbound_queue_bytes` counts live queues only.
    pub(crate) fn detach(&self) {
        drop(lock(&self.half).take());
        self.outbox.discard();
    }

    /// Writes queued items from outside the writer task, if the sink is free
    /// (`None` if it is taken, or already gone).
    fn write_here(&self, cx: &mut Context<'_>) -> Option<Poll<Result<(), tungstenite::Error>>> {
        let mut guard = match self.half.try_lock() {
            Ok(guard) => guard,
            Err(TryLockError::Poisoned(poisoned)) => poisoned.into_inner(),
            Err(TryLockError::WouldBlock) => return None,
        };
        let half = guard.as_mut()?;
        Some(self.poll_write(half, cx))
    }

    /// Queues a frame and, when nobody is draining, writes and flushes it
    /// from the calling task (a requester). Otherwise as [`Outbox::try_push`].
    pub(crate) fn push_and_write(
        &self,
        bytes: Bytes,
        permits: u32,
        cx: &mut Context<'_>,
    ) -> Result<(), Refused> {
        if self.outbox.push_and_claim(bytes, permits)? {
            // An error is the writer task's to report: it meets it on its next write.
            drop(self.write_claimed(cx));
        }
        Ok(())
    }

    /// The reader starts handling a batch of frames: pushes leave the writer task asleep.
    pub(crate) fn reader_busy(&self) {
        self.outbox.reader_busy();
    }

    /// The reader is about to wait for something other than the socket: the
    /// writer task takes over what is queued.
    pub(crate) fn reader_waits(&self) {
        self.outbox.reader_waits();
    }

    /// The reader is about to wait for the socket: it writes and flushes what
    /// was queued, unless someone is at it already. What it cannot finish is
    /// left to the writer task.
    pub(crate) fn reader_idle(&self, cx: &mut Context<'_>) -> Result<(), tungstenite::Error> {
        if self.outbox.reader_claims() {
            self.write_claimed(cx)
        } else {
            Ok(())
        }
    }

    /// Writes the queue out after claiming it, then gives the claim back or
    /// hands what is left (items pushed meanwhile, a close to finish, a full
    /// socket, an error to report) to the writer task.
    fn write_claimed(&self, cx: &mut Context<'_>) -> Result<(), tungstenite::Error> {
        let result = self.write_here(cx);
        self.outbox
            .release_claim(matches!(result, Some(Poll::Ready(Ok(())))));
        match result {
            Some(Poll::Ready(Err(err))) => Err(err),
            _ => Ok(()),
        }
    }

    /// Writes queued items and flushes, until the queue is empty and flushed
    /// (or the close frame went out).
    fn poll_write(
        &self,
        half: &mut WriteHalf,
        cx: &mut Context<'_>,
    ) -> Poll<Result<(), tungstenite::Error>> {
        loop {
            if half.done {
                return Poll::Ready(Ok(()));
            }
            if half.batch.is_empty() {
                self.outbox.take_into(&mut half.batch);
            }
            let mut count = 0;
            while !half.batch.is_empty() && count < MAX_BATCH {
                ready!(half.sink.as_mut().poll_ready(cx))?;
                let Some(item) = half.batch.pop_front() else {
                    break;
                };
                let message = match item {
                    Outbound::Frame { bytes, permits } => {
                        half.unflushed += permits as usize;
                        half.frames += 1;
                        half.bytes += bytes.len() as u64;
                        WsMessage::Binary(bytes)
                    }
                    Outbound::Ping => WsMessage::Ping(Bytes::new()),
                    Outbound::Pong(payload) => WsMessage::Pong(payload),
                    Outbound::Close { code, reason } => {
                        half.done = true;
                        half.batch.clear();
                        WsMessage::Close((code != 1005).then(|| CloseFrame {
                            code: code.into(),
                            reason: reason.into(),
                        }))
                    }
                };
                half.sink.as_mut().start_send(message)?;
                half.dirty = true;
                count += 1;
            }
            if half.dirty {
                ready!(half.sink.as_mut().poll_flush(cx))?;
                half.dirty = false;
                self.outbox.release(std::mem::take(&mut half.unflushed));
                // Counted per flush, not per frame: two atomics a batch.
                let frames = std::mem::take(&mut half.frames);
                let bytes = std::mem::take(&mut half.bytes);
                self.metrics.flushed(frames, bytes);
            }
            if half.batch.is_empty() && (half.done || self.outbox.is_empty()) {
                return Poll::Ready(Ok(()));
            }
        }
    }

    /// The writer task's loop: drains the queue whenever woken, until the close
    /// frame went out or the connection ended with nothing left to write.
    pub(crate) async fn write_loop(&self) -> Result<(), tungstenite::Error> {
        loop {
            self.outbox.woken().await;
            let written = std::future::poll_fn(|cx| match lock(&self.half).as_mut() {
                Some(half) => self.poll_write(half, cx).map_ok(|()| half.done),
                None => Poll::Ready(Ok(true)),
            });
            if written.await? {
                return Ok(());
            }
            match self.outbox.after_drain() {
                AfterDrain::Stop => return Ok(()),
                AfterDrain::Idle => {}
                AfterDrain::Again => self.outbox.hand_to_writer(),
            }
        }
    }
}

/// The sink and the batch being written; held (briefly, never across an
/// await) by whoever is writing: the writer task or the reader.
pub(crate) struct WriteHalf {
    sink: WsSink,
    batch: VecDeque<Outbound>,
    /// Budget bytes written since the last flush.
    unflushed: usize,
    /// Something was written since the last flush.
    dirty: bool,
    /// Frames and their bytes written since the last flush, for the metrics.
    frames: u64,
    bytes: u64,
    /// The close frame went out: nothing more is written.
    done: bool,
}

impl std::fmt::Debug for WriteHalf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteHalf")
            .field("batch", &self.batch.len())
            .field("unflushed", &self.unflushed)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl WriteHalf {
    pub(crate) fn new(sink: WsSink) -> WriteHalf {
        WriteHalf {
            sink,
            batch: VecDeque::new(),
            unflushed: 0,
            dirty: false,
            frames: 0,
            bytes: 0,
            done: false,
        }
    }
}
