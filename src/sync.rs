//! One way to lock a mutex. A lock is poisoned when a task panicked while holding it; every
//! mutex in genq guards plain data (maps of jobs, subscribers, stores, a fake's state) that
//! each critical section leaves whole, so the poison says only that some task panicked, and
//! the rest of the process (heartbeats, hand-backs, event streams, uploads) must go on rather
//! than panic in turn.

use std::sync::{Mutex, MutexGuard, PoisonError};

/// Locks `mutex`, recovering the guard if a holder panicked.
pub fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
