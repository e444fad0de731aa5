//! Small synchronisation helpers shared by every layer, and the primitives the hand-written concurrency is built on.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`, going on with the data if a panic poisoned it (every
/// critical section here leaves the data consistent).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Sleeps until `deadline`; forever without one.
pub(crate) async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}

/// What the handler caps (`conn::limit`) and the
/// outbox budget are built on: std's primitives, or shuttle's when the crate
/// is built with `--cfg goomerang_shuttle` so that the model-checking tests
/// (`scripts/model-check`) can explore every interleaving of their atomics
/// and locks.
pub(crate) mod model {
    #[cfg(goomerang_shuttle)]
    pub(crate) use shuttle::sync::{
        Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    };
    #[cfg(not(goomerang_shuttle))]
    pub(crate) use std::sync::{
        Mutex, MutexGuard,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    };

    /// [`lock`](super::lock) for a model mutex.
    pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
        mutex
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}
