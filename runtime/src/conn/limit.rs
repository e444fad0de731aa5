//! `Limit`: the handler caps, a counter taken and given back with one atomic each when uncontended.
//!
//! A `tokio::sync::Semaphore` takes its waiter lock on every release; a
//! handler finishes about a million times a second on the hot path, so the
//! caps count with atomics and only touch a `Notify` while someone waits.

use std::sync::Arc;

use crate::sync::model::{AtomicUsize, Ordering};

use tokio::sync::Notify;

/// At most `cap` holders at once.
#[derive(Debug)]
pub(crate) struct Limit {
    cap: usize,
    used: AtomicUsize,
    /// Tasks inside `acquire`; a release wakes one of them only when nonzero.
    waiters: AtomicUsize,
    freed: Notify,
}

impl Limit {
    pub(crate) fn new(cap: usize) -> Limit {
        Limit {
            cap,
            used: AtomicUsize::new(0),
            waiters: AtomicUsize::new(0),
            freed: Notify::new(),
        }
    }

    /// Whether a slot is free now, without taking it. Only for a limit that
    /// one caller alone takes slots from (a connection's reader; the tasks
    /// holding slots only give them back), so a free slot seen here stays
    /// free: the caller may run work that ends before it takes another slot
    /// in it without taking it, and [`take_seen`](Self::take_seen) it only
    /// if the work outlasts that. That saves two atomic read-modify-writes
    /// for every message handled to its end on the reader's poll.
    pub(crate) fn has_room(&self) -> bool {
        self.used.load(Ordering::Relaxed) < self.cap
    }

    /// Takes the slot [`has_room`](Self::has_room) saw free (its sole taker
    /// only). The caller must [`release`](Self::release) it.
    pub(crate) fn take_seen(&self) {
        self.used.fetch_add(1, Ordering::SeqCst);
    }

    /// Takes a slot if one is free. The caller must [`release`](Self::release) it.
    pub(crate) fn try_acquire(&self) -> bool {
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            if used >= self.cap {
                return false;
            }
            match self.used.compare_exchange_weak(
                used,
                used + 1,
                Ordering::SeqCst,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => used = now,
            }
        }
    }

    /// Waits for a slot. The caller must [`release`](Self::release) it.
    pub(crate) async fn acquire(&self) {
        loop {
            if self.try_acquire() {
                return;
            }
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            // Announce the wait before the last look, so a release either is
            // seen here or sees this waiter (both sides use SeqCst).
            self.waiters.fetch_add(1, Ordering::SeqCst);
            let got = self.try_acquire();
            if !got {
                freed.await;
            }
            self.waiters.fetch_sub(1, Ordering::SeqCst);
            if got {
                return;
            }
        }
    }

    /// Whether a task waits for a slot.
    pub(crate) fn has_waiters(&self) -> bool {
        self.waiters.load(Ordering::SeqCst) > 0
    }

    /// Gives a slot back, waking one waiter if there is any.
    pub(crate) fn release(&self) {
        self.used.fetch_sub(1, Ordering::SeqCst);
        if self.waiters.load(Ordering::SeqCst) > 0 {
            self.freed.notify_one();
        }
    }

    #[cfg(test)]
    fn used(&self) -> usize {
        self.used.load(Ordering::SeqCst)
    }
}

/// A slot of a [`Limit`], given back when dropped (however its holder ends).
#[derive(Debug)]
pub(crate) struct Slot(Arc<Limit>);

impl Slot {
    /// Wraps a slot the caller already took from `limit`.
    pub(crate) fn taken(limit: &Arc<Limit>) -> Slot {
        Slot(Arc::clone(limit))
    }

    /// Waits for a slot of `limit`.
    pub(crate) async fn acquire(limit: &Arc<Limit>) -> Slot {
        limit.acquire().await;
        Slot::taken(limit)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.release();
    }
}

#[cfg(all(test, not(goomerang_shuttle)))]
mod tests {
    use super::*;

    #[test]
    fn try_acquire_stops_at_the_cap() {
        let limit = Limit::new(2);
        assert!(limit.try_acquire());
        assert!(limit.try_acquire());
        assert!(!limit.try_acquire());
        limit.release();
        assert!(limit.try_acquire());
        assert_eq!(limit.used(), 2);
    }

    #[test]
    fn a_seen_slot_is_taken_only_when_kept() {
        let limit = Limit::new(1);
        assert!(limit.has_room());
        // Work that ended in the seen slot took nothing.
        assert_eq!(limit.used(), 0);
        limit.take_seen();
        assert!(!limit.has_room());
        assert!(!limit.try_acquire());
        limit.release();
        assert!(limit.has_room());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiters_get_every_released_slot() {
        let limit = Arc::new(Limit::new(1));
        assert!(limit.try_acquire());
        let tasks: Vec<_> = (0..8)
            .map(|_| {
                let limit = Arc::clone(&limit);
                tokio::spawn(async move {
                    limit.acquire().await;
                    tokio::task::yield_now().await;
                    limit.release();
                })
            })
            .collect();
        limit.release();
        let all = futures_util::future::join_all(tasks);
        tokio::time::timeout(std::time::Duration::from_secs(10), all)
            .await
            .expect("no waiter is left behind");
        assert_eq!(limit.used(), 0);
    }
}

/// Model checks (`scripts/model-check`): shuttle runs these tasks in many
/// interleavings of the atomics above, and reports a deadlock if a release
/// ever fails to wake a waiter.
#[cfg(all(test, goomerang_shuttle))]
mod model {
    use super::*;
    use shuttle::future::{block_on, spawn, yield_now};

    /// Three tasks take and give back slots of a cap of `cap`, one of them by
    /// `try_acquire`: at most `cap` hold a slot at once, every waiter gets one,
    /// and all slots come back.
    fn contend(cap: usize) {
        let limit = Arc::new(Limit::new(cap));
        let holders = Arc::new(AtomicUsize::new(0));
        let hold = |limit: Arc<Limit>, holders: Arc<AtomicUsize>| async move {
            let now = holders.fetch_add(1, Ordering::SeqCst) + 1;
            assert!(now <= limit.cap, "{now} holders of a cap of {}", limit.cap);
            yield_now().await;
            holders.fetch_sub(1, Ordering::SeqCst);
            limit.release();
        };
        let waiters: Vec<_> = (0..2)
            .map(|_| {
                let (limit, holders) = (Arc::clone(&limit), Arc::clone(&holders));
                spawn(async move {
                    limit.acquire().await;
                    hold(limit, holders).await;
                })
            })
            .collect();
        let trier = {
            let (limit, holders) = (Arc::clone(&limit), Arc::clone(&holders));
            spawn(async move {
                while !limit.try_acquire() {
                    yield_now().await;
                }
                hold(limit, holders).await;
            })
        };
        block_on(async {
            for waiter in waiters {
                waiter.await.expect("waiter");
            }
            trier.await.expect("trier");
        });
        assert_eq!(limit.used(), 0);
    }

    #[test]
    fn the_cap_holds_and_no_waiter_is_lost() {
        shuttle::check_pct(|| contend(1), 3000, 3);
        shuttle::check_pct(|| contend(2), 3000, 3);
        shuttle::check_random(|| contend(1), 3000);
    }
}
