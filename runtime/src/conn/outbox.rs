//! `Outbox`: a connection's outbound queue and byte budget under one lock, and the claim that says who drains it.
//!
//! Senders push here; the [`Writer`](crate::conn::writer::Writer) drains it
//! to the socket. Which task drains (the writer task, the reader, or a
//! requester) follows the rule written down in `writer.rs`: the queue only
//! records whether someone has claimed the draining, so that a push wakes
//! the writer task only when nobody is at it.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::Notify;

use crate::observe::metrics::Counters;
use crate::sync::model::{AtomicBool, Mutex, Ordering, lock};

/// An item for the socket.
#[derive(Debug)]
pub(crate) enum Outbound {
    /// An encoded frame and the budget bytes it holds.
    Frame { bytes: Bytes, permits: u32 },
    /// Send a close frame, then stop writing. Code 1005 ("no status", which
    /// is never sent) stands for an empty close frame.
    Close { code: u16, reason: String },
    /// Send a keepalive ping.
    Ping,
    /// Answer the peer's ping with its payload.
    Pong(Bytes),
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
    /// finds it idle wakes it (unless the reader is busy, see `writer.rs`).
    writer: Notify,
    /// Senders waiting for budget wait here; a flush wakes them.
    room: Notify,
    /// Set while the reader is handling frames: it writes what they queue.
    reader_busy: AtomicBool,
    /// Where the budget bytes in use are published (`goomerang_outbound_queue_bytes`).
    metrics: Arc<Counters>,
}

#[derive(Debug)]
struct State {
    items: VecDeque<Outbound>,
    /// Budget bytes held by queued and written-but-unflushed frames.
    bytes: usize,
    /// Nobody drains: the writer task waits to be woken.
    writer_idle: bool,
    /// Senders inside `push`, waiting for room.
    room_waiters: usize,
    /// The connection ended: nothing more is queued.
    closed: bool,
    /// Where in `items` the pong waits, if one does: a newer ping's replaces
    /// it, so a peer that pings without reading cannot grow the queue.
    pong_at: Option<usize>,
}

/// What the writer task does after draining.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum AfterDrain {
    /// Nothing left and the connection ended: stop.
    Stop,
    /// Nothing left: it is idle until woken.
    Idle,
    /// More came meanwhile: drain again.
    Again,
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
                pong_at: None,
            }),
            budget,
            writer: Notify::new(),
            room: Notify::new(),
            reader_busy: AtomicBool::new(false),
            metrics,
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

    /// Queues the answer to the peer's ping, outside the budget; one not yet
    /// written is replaced (RFC 6455 §5.5.3 lets a pong answer only the most
    /// recent ping). False if the connection ended.
    pub(crate) fn push_pong(&self, payload: Bytes) -> bool {
        let mut state = lock(&self.state);
        if state.closed {
            return false;
        }
        match state.pong_at {
            Some(at) => state.items[at] = Outbound::Pong(payload),
            None => {
                state.pong_at = Some(state.items.len());
                state.items.push_back(Outbound::Pong(payload));
            }
        }
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

    /// Closes the queue and drops what it still holds, giving back every
    /// budget byte held (queued or written but never flushed). Called once
    /// nothing can write any more.
    pub(crate) fn discard(&self) {
        let mut state = lock(&self.state);
        state.closed = true;
        state.items.clear();
        state.pong_at = None;
        let held = std::mem::take(&mut state.bytes);
        drop(state);
        if held != 0 {
            self.metrics.queued(-(held as i64));
        }
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
    pub(crate) fn release(&self, bytes: usize) {
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

    /// The reader starts handling a read batch (see `writer.rs`).
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

    /// Queues a frame (as [`try_push`](Self::try_push)) and claims the
    /// draining for the caller if nobody is at it: `Ok(true)` means the
    /// caller must write the queue out (see `writer.rs`).
    pub(crate) fn push_and_claim(&self, bytes: Bytes, permits: u32) -> Result<bool, Refused> {
        let mut state = lock(&self.state);
        self.queue(&mut state, bytes, permits, false)?;
        if !state.writer_idle || self.reader_busy.load(Ordering::Relaxed) {
            // The writer (or the reader) is at it and will take this too.
            self.wake_writer(&mut state, false);
            return Ok(false);
        }
        // Claimed: pushes from now on do not wake the writer for it.
        state.writer_idle = false;
        Ok(true)
    }

    /// The reader stops handling frames and claims the draining if there is
    /// something queued and nobody is at it: `true` means it must write.
    pub(crate) fn reader_claims(&self) -> bool {
        self.reader_busy.store(false, Ordering::Relaxed);
        let mut state = lock(&self.state);
        if state.items.is_empty() || !state.writer_idle {
            return false;
        }
        state.writer_idle = false;
        true
    }

    /// After a caller (not the writer task) wrote the queue out: if all of it
    /// went (`drained`) and nothing came meanwhile, nobody drains any more;
    /// otherwise the writer task takes over.
    pub(crate) fn release_claim(&self, drained: bool) {
        if drained {
            let mut state = lock(&self.state);
            if state.items.is_empty() && !state.closed {
                state.writer_idle = true;
                return;
            }
        }
        self.hand_to_writer();
    }

    /// Hands the draining to the writer task and wakes it.
    pub(crate) fn hand_to_writer(&self) {
        let mut state = lock(&self.state);
        state.writer_idle = false;
        drop(state);
        self.writer.notify_one();
    }

    /// Moves everything queued into `batch` (which the writer has emptied).
    pub(crate) fn take_into(&self, batch: &mut std::collections::VecDeque<Outbound>) {
        let mut state = lock(&self.state);
        std::mem::swap(&mut state.items, batch);
        state.pong_at = None;
    }

    pub(crate) fn is_empty(&self) -> bool {
        lock(&self.state).items.is_empty()
    }

    /// Waits until the writer task is woken to drain.
    pub(crate) async fn woken(&self) {
        self.writer.notified().await;
    }

    /// The writer task drained the queue: decides what it does next.
    pub(crate) fn after_drain(&self) -> AfterDrain {
        let mut state = lock(&self.state);
        if !state.items.is_empty() {
            // More came while the last flush was under way: go again.
            return AfterDrain::Again;
        }
        if state.closed {
            return AfterDrain::Stop;
        }
        state.writer_idle = true;
        AfterDrain::Idle
    }
}

/// Uncounts a sender waiting for room (counted by `offer`), however its wait ends.
struct RoomWaiter<'a>(&'a Outbox);

impl Drop for RoomWaiter<'_> {
    fn drop(&mut self) {
        lock(&self.0.state).room_waiters -= 1;
    }
}

#[cfg(all(test, not(goomerang_shuttle)))]
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
        let mut items = std::collections::VecDeque::new();
        outbox.take_into(&mut items);
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
    fn pongs_not_yet_written_are_replaced_not_queued() {
        let outbox = outbox(100);
        assert!(outbox.try_push(frame(10), outbox.permits_for(10)).is_ok());
        for n in 0..1000u32 {
            assert!(outbox.push_pong(Bytes::from(n.to_be_bytes().to_vec())));
        }
        assert!(outbox.try_push(frame(10), outbox.permits_for(10)).is_ok());
        let mut items = std::collections::VecDeque::new();
        outbox.take_into(&mut items);
        assert_eq!(items.len(), 3, "one frame, one pong, one frame");
        assert!(matches!(&items[1], Outbound::Pong(p) if p[..] == 999u32.to_be_bytes()));
        // Once taken, the next ping gets a pong of its own.
        assert!(outbox.push_pong(Bytes::from_static(b"next")));
        items.clear();
        outbox.take_into(&mut items);
        assert!(matches!(&items[0], Outbound::Pong(p) if &p[..] == b"next"));
        outbox.release(20);
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
    fn discard_gives_back_every_held_byte() {
        let outbox = outbox(100);
        outbox.try_push(frame(30), 30).expect("room");
        outbox.try_push(frame(40), 40).expect("room");
        let mut batch = std::collections::VecDeque::new();
        outbox.take_into(&mut batch);
        outbox.try_push(frame(10), 10).expect("room");
        // 70 taken by a writer that never flushed them, 10 still queued.
        assert_eq!(outbox.metrics.queued_bytes(), 80);
        outbox.discard();
        assert_eq!(outbox.metrics.queued_bytes(), 0);
        assert!(outbox.is_empty());
        assert!(matches!(
            outbox.try_push(frame(1), 1),
            Err(Refused::Closed(_))
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

/// Model checks (`scripts/model-check`): shuttle runs senders, a requester
/// that drains for itself and the writer task's protocol in many
/// interleavings of the lock and atomics above. A lost wakeup (a sender
/// waiting for room that never comes, a frame nobody drains) shows as a
/// deadlock; the budget is checked at every push.
#[cfg(all(test, goomerang_shuttle))]
mod model {
    use std::collections::VecDeque;

    use super::*;
    use shuttle::future::{block_on, spawn};
    use shuttle::sync::atomic::AtomicUsize;

    const BUDGET: usize = 10;
    const FRAME: u32 = 6;

    /// Writes out a batch: counts its frames and gives their budget back.
    fn drain(outbox: &Outbox, written: &AtomicUsize) {
        let mut batch = std::collections::VecDeque::new();
        outbox.take_into(&mut batch);
        let mut held = 0;
        for item in batch {
            if let Outbound::Frame { permits, .. } = item {
                held += permits as usize;
                written.fetch_add(1, Ordering::SeqCst);
            }
        }
        outbox.release(held);
    }

    fn senders_requester_and_writer() {
        let outbox = Arc::new(Outbox::new(BUDGET, Arc::new(Counters::new("server", &[]))));
        let written = Arc::new(AtomicUsize::new(0));
        let check_budget = |outbox: &Outbox| {
            let bytes = lock(&outbox.state).bytes;
            assert!(bytes <= BUDGET, "{bytes} budget bytes held of {BUDGET}");
        };
        // The writer task's protocol, as `Writer::write_loop` runs it.
        let writer = {
            let (outbox, written) = (Arc::clone(&outbox), Arc::clone(&written));
            spawn(async move {
                loop {
                    outbox.woken().await;
                    drain(&outbox, &written);
                    match outbox.after_drain() {
                        AfterDrain::Stop => return,
                        AfterDrain::Idle => {}
                        AfterDrain::Again => outbox.hand_to_writer(),
                    }
                }
            })
        };
        // Two senders wait for room for two frames each: the budget holds one.
        let senders: Vec<_> = (0..2)
            .map(|_| {
                let outbox = Arc::clone(&outbox);
                spawn(async move {
                    for _ in 0..2 {
                        let pushed = outbox.push(Bytes::from_static(b"frame"), FRAME).await;
                        assert!(pushed.is_ok(), "the connection is open");
                        check_budget(&outbox);
                    }
                })
            })
            .collect();
        // A requester writes its frame itself when nobody drains.
        let requester = {
            let (outbox, written) = (Arc::clone(&outbox), Arc::clone(&written));
            spawn(async move {
                let mut bytes = Bytes::from_static(b"request");
                loop {
                    match outbox.push_and_claim(bytes, FRAME) {
                        Ok(true) => {
                            drain(&outbox, &written);
                            outbox.release_claim(true);
                            return;
                        }
                        Ok(false) => return,
                        Err(Refused::Full(back)) => {
                            bytes = back;
                            shuttle::future::yield_now().await;
                        }
                        Err(Refused::Closed(_)) => panic!("the connection is open"),
                    }
                }
            })
        };
        block_on(async {
            for sender in senders {
                sender.await.expect("sender");
            }
            requester.await.expect("requester");
            outbox.close();
            writer.await.expect("writer");
        });
        assert_eq!(written.load(Ordering::SeqCst), 5, "every frame was written");
        assert_eq!(lock(&outbox.state).bytes, 0, "all budget came back");
    }

    #[test]
    fn every_frame_is_written_within_the_budget() {
        shuttle::check_pct(senders_requester_and_writer, 3000, 3);
        shuttle::check_random(senders_requester_and_writer, 3000);
    }
}
