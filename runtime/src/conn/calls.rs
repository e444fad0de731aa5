//! `Calls`: the requests in flight on one connection, both ways: this side's, waiting for an answer, and the peer's, whose handlers run.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, oneshot};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::sync::lock;
use crate::wire::frame::Reply;
use crate::wire::status::Status;

/// What a waiting request receives: the REPLY frame, or the status of its ERROR.
pub(crate) type Answer = Result<Reply, Status>;

/// How a request's wait ends: its answer, or `None` when its deadline passed first.
pub(crate) type Waited = Option<Answer>;

#[derive(Debug)]
pub(crate) struct Calls {
    /// Requests this side sent, waiting for REPLY/ERROR or their deadline.
    /// Emptied (with an UNAVAILABLE status each) when the connection ends.
    pending: Mutex<Pending>,
    /// Requests the peer sent whose handlers are running, each with the
    /// sequence number of its registration and, once something waits on
    /// its cancellation, the token; CANCEL looks here. The peer picks these
    /// ids, so each table hashes with its own random seed (foldhash: SipHash
    /// took 1.4% of a request's instructions); and the table holds only
    /// requests the connection's handler cap lets run or wait (one per slot,
    /// the ordered queue's, and the frame the reader holds while it waits for
    /// room), so even ids chosen to collide cost a lookup no more than that
    /// many comparisons.
    inflight: Mutex<HashMap<u64, (u64, Option<CancellationToken>), foldhash::fast::RandomState>>,
    next_id: AtomicU64,
    /// Numbers registrations in `inflight`, so a finishing handler removes
    /// its own entry and not a later request that reused the id after a CANCEL.
    next_seq: AtomicU64,
}

/// This side's requests waiting, and what the deadline sweeper sleeps until.
#[derive(Debug, Default)]
struct Pending {
    /// Each request's channel for its answer, and its deadline. This side
    /// picks the ids, so a fast unkeyed hash is safe here.
    waiting: HashMap<u64, (oneshot::Sender<Waited>, Instant), foldhash::fast::FixedState>,
    /// The deadline sweeper's (see `Connection::sweep`), made with it by the
    /// connection's first request: a connection that makes none holds none.
    schedule: Option<Box<Schedule>>,
}

/// When the sweeper wakes. No table of deadlines is kept up to date as
/// requests come and go (a `BTreeSet` of them took 3.5% of a request's
/// instructions with 32 in flight): `armed` is never later than the
/// earliest deadline waiting, and the sweeper, woken at it, looks through
/// the requests waiting for those past their deadlines and for the next
/// one. Requests answered in time only move it forward; with equal
/// timeouts it wakes about once per timeout, and at most once per timer
/// tick (a millisecond) while requests are timing out, each look costing
/// one step per request waiting.
#[derive(Debug)]
struct Schedule {
    /// The deadline the sweeper sleeps until; `None` while it sleeps until woken.
    armed: Option<Instant>,
    /// Wakes the sweeper when a request's deadline is earlier than `armed`.
    rearm: Arc<Notify>,
}

impl Default for Calls {
    fn default() -> Calls {
        Calls {
            pending: Mutex::new(Pending::default()),
            inflight: Mutex::new(HashMap::default()),
            next_id: AtomicU64::new(1),
            next_seq: AtomicU64::new(1),
        }
    }
}

impl Calls {
    /// A fresh id for a request of this side that waits until `deadline`,
    /// where its answer will arrive, and whether request `follows` (the same
    /// caller's last) still waits. Wakes the sweeper if this deadline comes
    /// before the one it sleeps until. For the connection's first request,
    /// also what the sweeper to start (see `Connection::sweep`) waits on.
    pub(crate) fn start(
        &self,
        follows: Option<u64>,
        deadline: Instant,
    ) -> (u64, oneshot::Receiver<Waited>, bool, Option<Arc<Notify>>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        let mut pending = lock(&self.pending);
        let waiting = follows.is_some_and(|last| pending.waiting.contains_key(&last));
        pending.waiting.insert(id, (tx, deadline));
        let mut first = None;
        let schedule = pending.schedule.get_or_insert_with(|| {
            let rearm = Arc::new(Notify::new());
            first = Some(Arc::clone(&rearm));
            Box::new(Schedule { armed: None, rearm })
        });
        let rearm = schedule
            .armed
            .is_none_or(|armed| deadline < armed)
            .then(|| {
                schedule.armed = Some(deadline);
                Arc::clone(&schedule.rearm)
            });
        drop(pending);
        if let Some(rearm) = rearm {
            rearm.notify_one();
        }
        (id, rx, waiting, first)
    }

    /// What the sweeper now sleeps until (`None`: until woken): never later
    /// than the earliest deadline of the requests waiting.
    pub(crate) fn arm(&self) -> Option<Instant> {
        lock(&self.pending).schedule.as_ref()?.armed
    }

    /// Ends the wait of every request whose deadline is `now` or earlier,
    /// and arms the sweeper for the earliest deadline of the rest.
    pub(crate) fn expire(&self, now: Instant) {
        let mut pending = lock(&self.pending);
        let Pending { waiting, schedule } = &mut *pending;
        let expired: Vec<_> = waiting
            .extract_if(|_, (_, deadline)| *deadline <= now)
            .map(|(_, (tx, _))| tx)
            .collect();
        if let Some(schedule) = schedule {
            schedule.armed = waiting.values().map(|(_, deadline)| *deadline).min();
        }
        drop(pending);
        for tx in expired {
            let _ = tx.send(None);
        }
    }

    /// Stops waiting for request `id`; false if it was no longer waiting.
    pub(crate) fn forget(&self, id: u64) -> bool {
        lock(&self.pending).waiting.remove(&id).is_some()
    }

    /// Hands an answer to the request waiting for it; false if none waits.
    pub(crate) fn answer(&self, id: u64, answer: Answer) -> bool {
        let Some((waiter, _)) = lock(&self.pending).waiting.remove(&id) else {
            return false;
        };
        let _ = waiter.send(Some(answer));
        true
    }

    /// Fails every waiting request with a status made from `status`.
    pub(crate) fn fail_all(&self, status: impl Fn() -> Status) {
        let waiters: Vec<_> = lock(&self.pending).waiting.drain().collect();
        for (_, (waiter, _)) in waiters {
            let _ = waiter.send(Some(Err(status())));
        }
    }

    /// Records a running request handler and returns its registration's
    /// number; `None` if a request with this id is already in flight.
    pub(crate) fn register(&self, id: u64) -> Option<u64> {
        match lock(&self.inflight).entry(id) {
            Entry::Occupied(_) => None,
            Entry::Vacant(entry) => {
                let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
                entry.insert((seq, None));
                Some(seq)
            }
        }
    }

    /// The cancellation token of request `id` (registration `seq`), made
    /// now if nothing asked before; `None` if it left the table (cancelled,
    /// the connection ended, or it finished).
    pub(crate) fn token(&self, id: u64, seq: u64) -> Option<CancellationToken> {
        match lock(&self.inflight).get_mut(&id) {
            Some((found, token)) if *found == seq => {
                Some(token.get_or_insert_with(CancellationToken::new).clone())
            }
            _ => None,
        }
    }

    /// Whether request `id` (registration `seq`) is still in the table.
    pub(crate) fn is_registered(&self, id: u64, seq: u64) -> bool {
        lock(&self.inflight)
            .get(&id)
            .is_some_and(|(found, _)| *found == seq)
    }

    /// Takes request `id` (registration `seq`) off the in-flight table; false
    /// if it is no longer there (the peer cancelled it, or the connection ended).
    pub(crate) fn unregister(&self, id: u64, seq: u64) -> bool {
        match lock(&self.inflight).entry(id) {
            Entry::Occupied(entry) if entry.get().0 == seq => {
                entry.remove();
                true
            }
            _ => false,
        }
    }

    /// Handles CANCEL: cancels the handler for the peer's request `id`, if still running.
    pub(crate) fn cancel(&self, id: u64) {
        if let Some((_, Some(token))) = lock(&self.inflight).remove(&id) {
            token.cancel();
        }
    }

    /// Cancels every running handler of the peer's requests; returns their ids.
    pub(crate) fn cancel_all(&self) -> Vec<u64> {
        let running: Vec<_> = lock(&self.inflight).drain().collect();
        running
            .into_iter()
            .map(|(id, (_, token))| {
                if let Some(token) = token {
                    token.cancel();
                }
                id
            })
            .collect()
    }
}
