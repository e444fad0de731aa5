//! `Outbox`: a connection's outbound queue and byte budget under one lock, and the batched writes that drain it.
//!
//! Whoever drains it writes every queued item, then flushes once. That is
//! the writer task, or another task that finds the writer idle: the
//! connection's reader, which writes what the frames it handled queued
//! (replies, mostly) when it is about to wait for the socket, and a requester,
//! which writes its request itself since it waits for the answer anyway. So a
//! round trip on a quiet connection wakes no writer task. While the reader
//! handles frames, pushes do not wake the writer: the reader will write them.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, TryLockError};
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use futures_util::Sink;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message as WsMessage};

use crate::observe::metrics::Counters;
use crate::sync::lock;

/// Frames written before one flush, at most; bounds the latency of a huge backlog.
const MAX_BATCH: usize = 512;

/// The write half of a connection's WebSocket, whatever the transport.
pub(crate) type WsSink = Pin<Box<dyn Sink<WsMessage, Error = tungstenite::Error> + Send>>;

/// An item for the socket.
#[derive(Debug)]
pub(crate) enum Outbound {
    /// An encoded frame and the budget bytes it holds.
    Frame { bytes: Bytes, permits: u32 },
    /// Send a close frame, then stop writing.
    Close { code: u16, reason: String },
    /// Send a keepalive ping.
    Ping,
}

/// Why a frame was not queued; the frame comes back with it.
#[derive(Debug)]
pub(crate) enum Refused {
    /// The budget has no room for it now.
    Full(Bytes),
    /// The connection has ended.
    Closed(Bytes),
}

/// The queue between senders and the socket.
#[derive(Debug)]
pub(crate) struct Outbox {
    state: Mutex<State>,
    /// Bytes of frames allowed queued and unflushed at once.
    budget: usize,
    /// The writer task waits here while the queue is empty; a push that
    /// finds it idle wakes it (unless the reader is busy, see the module doc).
    writer: Notify,
    /// Senders waiting for budget wait here; the writer wakes them after a flush.
    room: Notify,
    /// Set while the reader is handling frames: it writes what they queue.
    reader_busy: AtomicBool,
    /// Where the budget bytes in use are published (`goomerang_outbound_queued_bytes`).
    metrics: Arc<Counters>,
    /// The socket's write half while the connection runs; held (briefly,
    /// never across an await) by whoever writes: the writer task, the reader,
    /// or a requester (see [`push_and_write`](Self::push_and_write)).
    half: Mutex<Option<WriteHalf>>,
}

#[derive(Debug)]
struct State {
    items: VecDeque<Outbound>,
    /// Budget bytes held by queued and written-but-unflushed frames.
    bytes: usize,
    /// The writer found the queue empty and waits to be woken.
    writer_idle: bool,
    /// Senders inside `push`, waiting for room.
    room_waiters: usize,
    /// The connection ended: nothing more is queued.
    closed: bool,
}

impl Outbox {
    pub(crate) fn new(budget: usize, metrics: Arc<Counters>) -> Outbox {
        Outbox {
            state: Mutex::new(State {
                items: VecDeque::new(),
                bytes: 0,
                writer_idle: true,
                room_waiters: 0,
                closed: false,
            }),
            budget,
            writer: Notify::new(),
            room: Notify::new(),
            reader_busy: AtomicBool::new(false),
            metrics,
            half: Mutex::new(None),
        }
    }

    /// The budget bytes a frame of `len` bytes holds: at most the whole
    /// budget, so a frame larger than it still goes out (alone).
    pub(crate) fn permits_for(&self, len: usize) -> u32 {
        len.clamp(1, self.budget) as u32
    }

    /// Queues a frame holding `permits` budget bytes (0 for frames outside
    /// the budget) if there is room now.
    pub(crate) fn try_push(&self, bytes: Bytes, permits: u32) -> Result<(), Refused> {
        self.offer(bytes, permits, false)
    }

    /// Queues a frame, waiting for room in the budget. Fails only when the connection ended.
    pub(crate) async fn push(&self, bytes: Bytes, permits: u32) -> Result<(), Bytes> {
        // Room at once is the common case: no waiter registration for it.
        let mut bytes = match self.offer(bytes, permits, false) {
            Ok(()) => return Ok(()),
            Err(Refused::Closed(back)) => return Err(back),
            Err(Refused::Full(back)) => back,
        };
        loop {
            let room = self.room.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            match self.offer(bytes, permits, true) {
                Ok(()) => return Ok(()),
                Err(Refused::Closed(back)) => return Err(back),
                Err(Refused::Full(back)) => bytes = back,
            }
            // `offer` counted this sender among the waiters, under the lock a
            // release takes, so the release that makes room wakes it.
            let _waiting = RoomWaiter(self);
            room.await;
        }
    }

    fn offer(&self, bytes: Bytes, permits: u32, wait: bool) -> Result<(), Refused> {
        let mut state = lock(&self.state);
        self.queue(&mut state, bytes, permits, wait)?;
        self.wake_writer(&mut state, false);
        Ok(())
    }

    /// Queues a frame under the state lock if the budget has room; counts a
    /// sender that will `wait` for room among the waiters.
    fn queue(
        &self,
        state: &mut State,
        bytes: Bytes,
        permits: u32,
        wait: bool,
    ) -> Result<(), Refused> {
        if state.closed {
            return Err(Refused::Closed(bytes));
        }
        let held = permits as usize;
        if held != 0 && state.bytes + held > self.budget {
            if wait {
                state.room_waiters += 1;
            }
            // Make sure someone is draining, or the room never comes.
            self.wake_writer(state, true);
            return Err(Refused::Full(bytes));
        }
        state.bytes += held;
        self.metrics.queued(held as i64);
        state.items.push_back(Outbound::Frame { bytes, permits });
        Ok(())
    }

    /// Gives the outbox the socket's write half when the connection starts.
    pub(crate) fn attach(&self, half: WriteHalf) {
        *lock(&self.half) = Some(half);
    }

    /// Drops the write half (and with it the socket) when the connection has ended.
    pub(crate) fn detach(&self) {
        drop(lock(&self.half).take());
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

    /// Queues a frame and, when the writer is idle, writes and flushes it from
    /// the calling task: for a request, whose caller waits for the answer
    /// anyway, this saves waking the writer. Otherwise as [`try_push`](Self::try_push).
    pub(crate) fn push_and_write(
        &self,
        bytes: Bytes,
        permits: u32,
        cx: &mut Context<'_>,
    ) -> Result<(), Refused> {
        {
            let mut state = lock(&self.state);
            self.queue(&mut state, bytes, permits, false)?;
            if !state.writer_idle || self.reader_busy.load(Ordering::Relaxed) {
                // The writer (or the reader) is at it and will take this too.
                self.wake_writer(&mut state, false);
                return Ok(());
            }
            // Claim the queue, so pushes from now on do not wake the writer for it.
            state.writer_idle = false;
        }
        match self.write_here(cx) {
            // An error is the writer's to report: it meets it on its next write.
            Some(result) => drop(self.after_write(result)),
            None => self.hand_to_writer(),
        }
        Ok(())
    }

    /// Queues a control item (close, ping) outside the budget; false if the connection ended.
    pub(crate) fn push_control(&self, item: Outbound) -> bool {
        let mut state = lock(&self.state);
        if state.closed {
            return false;
        }
        state.items.push_back(item);
        self.wake_writer(&mut state, false);
        true
    }

    /// Marks the connection ended: pushes fail from now on, waiting senders
    /// give up, and the writer stops once what is queued is written.
    pub(crate) fn close(&self) {
        let mut state = lock(&self.state);
        state.closed = true;
        self.wake_writer(&mut state, true);
        drop(state);
        self.room.notify_waiters();
    }

    /// Wakes the idle writer; `always` even while the reader is busy.
    fn wake_writer(&self, state: &mut State, always: bool) {
        if state.writer_idle && (always || !self.reader_busy.load(Ordering::Relaxed)) {
            state.writer_idle = false;
            self.writer.notify_one();
        }
    }

    /// Gives back the budget bytes of flushed frames, waking senders waiting for room.
    fn release(&self, bytes: usize) {
        if bytes == 0 {
            return;
        }
        self.metrics.queued(-(bytes as i64));
        let mut state = lock(&self.state);
        state.bytes -= bytes.min(state.bytes);
        let waiting = state.room_waiters > 0;
        drop(state);
        if waiting {
            self.room.notify_waiters();
        }
    }

    /// The reader starts handling a read batch (see the module doc).
    pub(crate) fn reader_busy(&self) {
        self.reader_busy.store(true, Ordering::Relaxed);
    }

    /// The reader is about to wait for something other than the socket (the
    /// handler caps, the ordered queue): the writer takes over what is queued.
    pub(crate) fn reader_waits(&self) {
        self.reader_busy.store(false, Ordering::Relaxed);
        let mut state = lock(&self.state);
        if !state.items.is_empty() {
            self.wake_writer(&mut state, false);
        }
    }

    /// The reader is about to wait for the socket: it writes and flushes what
    /// was queued, unless the writer is at it already. What it cannot finish
    /// (the socket is full, or the sink is taken) is left to the writer.
    pub(crate) fn reader_idle(&self, cx: &mut Context<'_>) -> Result<(), tungstenite::Error> {
        self.reader_busy.store(false, Ordering::Relaxed);
        {
            let mut state = lock(&self.state);
            if state.items.is_empty() || !state.writer_idle {
                return Ok(());
            }
            // Claim the queue, so pushes from now on do not wake the writer for it.
            state.writer_idle = false;
        }
        match self.write_here(cx) {
            Some(result) => self.after_write(result),
            None => {
                self.hand_to_writer();
                Ok(())
            }
        }
    }

    /// After a write outside the writer task: hands over to the writer what is
    /// left (items pushed meanwhile, a close to finish, a full socket, an error
    /// for it to report), or marks the writer idle again.
    fn after_write(
        &self,
        result: Poll<Result<(), tungstenite::Error>>,
    ) -> Result<(), tungstenite::Error> {
        if let Poll::Ready(Ok(())) = result {
            let mut state = lock(&self.state);
            if state.items.is_empty() && !state.closed {
                state.writer_idle = true;
                return Ok(());
            }
        }
        self.hand_to_writer();
        match result {
            Poll::Ready(Err(err)) => Err(err),
            _ => Ok(()),
        }
    }

    fn hand_to_writer(&self) {
        let mut state = lock(&self.state);
        state.writer_idle = false;
        drop(state);
        self.writer.notify_one();
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
                std::mem::swap(&mut lock(&self.state).items, &mut half.batch);
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
                    Outbound::Close { code, reason } => {
                        half.done = true;
                        half.batch.clear();
                        WsMessage::Close(Some(CloseFrame {
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
                self.release(std::mem::take(&mut half.unflushed));
                // Counted per flush, not per frame: two atomics a batch.
                let frames = std::mem::take(&mut half.frames);
                let bytes = std::mem::take(&mut half.bytes);
                self.metrics.flushed(frames, bytes);
            }
            if half.batch.is_empty() && (half.done || lock(&self.state).items.is_empty()) {
                return Poll::Ready(Ok(()));
            }
        }
    }

    /// The writer task's loop: drains the queue whenever woken, until the close
    /// frame went out or the connection ended with nothing left to write.
    pub(crate) async fn write_loop(&self) -> Result<(), tungstenite::Error> {
        loop {
            self.writer.notified().await;
            let written = std::future::poll_fn(|cx| match lock(&self.half).as_mut() {
                Some(half) => self.poll_write(half, cx).map_ok(|()| half.done),
                None => Poll::Ready(Ok(true)),
            });
            if written.await? {
                return Ok(());
            }
            let mut state = lock(&self.state);
            if state.items.is_empty() {
                if state.closed {
                    return Ok(());
                }
                state.writer_idle = true;
            } else {
                // More came while the last flush was under way: go again.
                self.writer.notify_one();
            }
        }
    }
}

/// Uncounts a sender waiting for room (counted by `offer`), however its wait ends.
struct RoomWaiter<'a>(&'a Outbox);

impl Drop for RoomWaiter<'_> {
    fn drop(&mut self) {
        lock(&self.0.state).room_waiters -= 1;
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn outbox(budget: usize) -> Arc<Outbox> {
        Arc::new(Outbox::new(budget, Arc::new(Counters::new("server", &[]))))
    }

    fn frame(len: usize) -> Bytes {
        Bytes::from(vec![0u8; len])
    }

    /// What the writer would take, and the budget bytes it would give back.
    fn drain(outbox: &Outbox) -> (usize, usize) {
        let items = std::mem::take(&mut lock(&outbox.state).items);
        let held = items
            .iter()
            .map(|item| match item {
                Outbound::Frame { permits, .. } => *permits as usize,
                _ => 0,
            })
            .sum();
        outbox.release(held);
        (items.len(), held)
    }

    #[test]
    fn the_budget_bounds_queued_bytes() {
        let outbox = outbox(100);
        assert!(outbox.try_push(frame(60), outbox.permits_for(60)).is_ok());
        let full = outbox.try_push(frame(60), outbox.permits_for(60));
        assert!(matches!(full, Err(Refused::Full(bytes)) if bytes.len() == 60));
        // Frames outside the budget (CANCEL) and control items always go in.
        assert!(outbox.try_push(frame(10), 0).is_ok());
        assert!(outbox.push_control(Outbound::Ping));
        assert_eq!(drain(&outbox), (3, 60));
        assert!(outbox.try_push(frame(60), outbox.permits_for(60)).is_ok());
        assert_eq!(outbox.metrics.queued_bytes(), 60);
    }

    #[test]
    fn a_frame_larger_than_the_budget_goes_alone() {
        let outbox = outbox(100);
        assert_eq!(outbox.permits_for(500), 100);
        assert!(outbox.try_push(frame(500), 100).is_ok());
        assert!(matches!(
            outbox.try_push(frame(1), 1),
            Err(Refused::Full(_))
        ));
    }

    #[test]
    fn nothing_is_queued_after_close() {
        let outbox = outbox(100);
        outbox.close();
        assert!(matches!(
            outbox.try_push(frame(1), 1),
            Err(Refused::Closed(_))
        ));
        assert!(!outbox.push_control(Outbound::Ping));
    }

    /// Fills `outbox`'s budget, then starts a push of `len` more that must
    /// wait; resolves to whether that push succeeded.
    async fn waiting_push(outbox: &Arc<Outbox>, len: u32) -> tokio::task::JoinHandle<bool> {
        assert!(
            outbox
                .try_push(frame(outbox.budget), outbox.budget as u32)
                .is_ok()
        );
        let waiting = tokio::spawn({
            let outbox = Arc::clone(outbox);
            async move { outbox.push(frame(len as usize), len).await.is_ok() }
        });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        assert_eq!(lock(&outbox.state).room_waiters, 1);
        waiting
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_sender_gets_room_after_a_flush() {
        let outbox = outbox(100);
        let waiting = waiting_push(&outbox, 50).await;
        drain(&outbox);
        let pushed = tokio::time::timeout(Duration::from_secs(1), waiting).await;
        assert!(pushed.expect("woken").expect("task"));
        assert_eq!(lock(&outbox.state).room_waiters, 0);
        assert_eq!(lock(&outbox.state).bytes, 50);
    }

    #[tokio::test(start_paused = true)]
    async fn close_fails_waiting_senders() {
        let outbox = outbox(10);
        let waiting = waiting_push(&outbox, 5).await;
        outbox.close();
        let pushed = tokio::time::timeout(Duration::from_secs(1), waiting).await;
        assert!(!pushed.expect("woken").expect("task"));
        assert_eq!(lock(&outbox.state).room_waiters, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_busy_reader_defers_the_writer_until_it_waits() {
        let outbox = outbox(100);
        // The writer is idle: a push wakes it (a stored notification).
        assert!(outbox.try_push(frame(1), 1).is_ok());
        assert!(!lock(&outbox.state).writer_idle);
        drain(&outbox);
        lock(&outbox.state).writer_idle = true;
        // While the reader handles frames, pushes leave the writer asleep...
        outbox.reader_busy();
        assert!(outbox.try_push(frame(1), 1).is_ok());
        assert!(lock(&outbox.state).writer_idle);
        // ...until the reader waits for something else: then it is woken.
        outbox.reader_waits();
        assert!(!lock(&outbox.state).writer_idle);
    }
}
