//! Small synchronisation helpers shared by every layer.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`, going on with the data if a panic poisoned it (every
/// critical section here leaves the data consistent).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
