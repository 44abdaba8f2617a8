//! The in-process fan-out: open streams register here per user, and each change (read once
//! from the database by the LISTEN task) is handed to that user's streams as one shared
//! `Arc`. Buffers are bounded: a stream that falls `stream_buffer` events behind is dropped
//! (its connection ends, the browser reconnects with `Last-Event-ID` and gets the current
//! state), so a slow consumer never grows our memory.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use uuid::Uuid;

use super::Change;

/// Limits of one daemon's streams.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Streams per user.
    pub per_user: usize,
    /// Streams in all.
    pub total: usize,
    /// Events buffered per stream.
    pub buffer: usize,
}

/// Why a stream was not opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The user holds `max_streams_per_user` streams on this daemon already.
    #[error("too many open event streams for this user")]
    UserLimit,
    /// The daemon holds `max_streams` streams.
    #[error("this server holds too many event streams; retry later")]
    Full,
    /// The daemon is shutting down.
    #[error("shutting down")]
    Closed,
}

struct Subscriber {
    id: u64,
    only: Option<Arc<HashSet<Uuid>>>,
    tx: mpsc::Sender<Arc<Change>>,
}

#[derive(Default)]
struct Inner {
    users: HashMap<String, Vec<Subscriber>>,
    total: usize,
    closed: bool,
}

/// Every open stream of this daemon, by user.
pub struct Hub {
    inner: Mutex<Inner>,
    next: AtomicU64,
    limits: Limits,
}

/// One open stream's registration; dropping it unregisters the stream.
pub struct Subscription {
    hub: Arc<Hub>,
    user: String,
    id: u64,
    pub(crate) rx: mpsc::Receiver<Arc<Change>>,
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.remove(&self.user, self.id);
    }
}

impl Hub {
    /// An empty hub.
    pub fn new(limits: Limits) -> Arc<Self> {
        Arc::new(Self {
            inner: Mutex::new(Inner::default()),
            next: AtomicU64::new(1),
            limits,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        crate::sync::lock(&self.inner)
    }

    /// Registers a stream of `user`'s changes (only those of `only`, when given).
    pub fn subscribe(
        self: &Arc<Self>,
        user: &str,
        only: Option<Arc<HashSet<Uuid>>>,
    ) -> Result<Subscription, Refused> {
        let (tx, rx) = mpsc::channel(self.limits.buffer);
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let mut inner = self.lock();
        if inner.closed {
            return Err(Refused::Closed);
        }
        if inner.total >= self.limits.total {
            return Err(Refused::Full);
        }
        let subs = inner.users.entry(user.to_string()).or_default();
        if subs.len() >= self.limits.per_user {
            return Err(Refused::UserLimit);
        }
        subs.push(Subscriber { id, only, tx });
        inner.total += 1;
        metrics::gauge!(crate::metrics::EVENT_STREAMS).set(inner.total as f64);
        drop(inner);
        Ok(Subscription {
            hub: self.clone(),
            user: user.to_string(),
            id,
            rx,
        })
    }

    fn remove(&self, user: &str, id: u64) {
        let mut inner = self.lock();
        let Some(subs) = inner.users.get_mut(user) else {
            return;
        };
        let before = subs.len();
        subs.retain(|s| s.id != id);
        let removed = before - subs.len();
        if subs.is_empty() {
            inner.users.remove(user);
        }
        inner.total -= removed;
        metrics::gauge!(crate::metrics::EVENT_STREAMS).set(inner.total as f64);
    }

    /// Whether `user` has a stream open here (else a change of theirs is not even read).
    pub fn follows(&self, user: &str) -> bool {
        self.lock().users.contains_key(user)
    }

    /// The users with a stream open here.
    pub fn users(&self) -> Vec<String> {
        self.lock().users.keys().cloned().collect()
    }

    /// Open streams.
    pub fn streams(&self) -> usize {
        self.lock().total
    }

    /// Hands `change` to every stream of `user` that follows it. A stream whose buffer is
    /// full is dropped (it ends; the browser reconnects and replays).
    pub fn publish(&self, user: &str, change: &Arc<Change>) {
        let mut inner = self.lock();
        let Some(subs) = inner.users.get_mut(user) else {
            return;
        };
        let before = subs.len();
        subs.retain(|s| {
            if s.only.as_ref().is_some_and(|ids| !ids.contains(&change.id)) {
                return true;
            }
            match s.tx.try_send(change.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    metrics::counter!(crate::metrics::EVENT_STREAMS_DROPPED).increment(1);
                    tracing::debug!("event stream fell behind; closing it");
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
        let removed = before - subs.len();
        if subs.is_empty() {
            inner.users.remove(user);
        }
        inner.total -= removed;
        if removed > 0 {
            metrics::gauge!(crate::metrics::EVENT_STREAMS).set(inner.total as f64);
        }
    }

    /// Ends every stream and refuses new ones (shutdown: the HTTP server can then finish).
    pub fn close(&self) {
        let mut inner = self.lock();
        inner.closed = true;
        inner.users.clear();
        inner.total = 0;
        metrics::gauge!(crate::metrics::EVENT_STREAMS).set(0.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(id: Uuid, version: i64) -> Arc<Change> {
        Arc::new(Change {
            id,
            version,
            cursor: version,
            is_final: false,
            data: "{}".into(),
        })
    }

    fn hub(per_user: usize, total: usize, buffer: usize) -> Arc<Hub> {
        Hub::new(Limits {
            per_user,
            total,
            buffer,
        })
    }

    #[test]
    fn changes_reach_only_the_streams_that_follow_them() {
        let hub = hub(4, 10, 4);
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let mut all = hub.subscribe("u", None).unwrap();
        let mut only_a = hub
            .subscribe("u", Some(Arc::new([a].into_iter().collect())))
            .unwrap();
        let mut other = hub.subscribe("v", None).unwrap();
        hub.publish("u", &change(a, 1));
        hub.publish("u", &change(b, 1));
        assert_eq!(all.rx.try_recv().unwrap().id, a);
        assert_eq!(all.rx.try_recv().unwrap().id, b);
        assert_eq!(only_a.rx.try_recv().unwrap().id, a);
        assert!(only_a.rx.try_recv().is_err());
        assert!(other.rx.try_recv().is_err());
        assert_eq!(hub.streams(), 3);
        drop(other);
        assert!(!hub.follows("v"));
        assert_eq!(hub.streams(), 2);
    }

    #[test]
    fn limits_refuse_new_streams_and_slow_streams_are_dropped() {
        let hub = hub(1, 2, 2);
        let mut slow = hub.subscribe("u", None).unwrap();
        assert_eq!(hub.subscribe("u", None).err(), Some(Refused::UserLimit));
        let _v = hub.subscribe("v", None).unwrap();
        assert_eq!(hub.subscribe("w", None).err(), Some(Refused::Full));
        let id = Uuid::new_v4();
        for v in 1..=3 {
            hub.publish("u", &change(id, v));
        }
        // Two buffered, the third found the buffer full: the stream was dropped.
        assert!(!hub.follows("u"));
        assert_eq!(slow.rx.try_recv().unwrap().version, 1);
        assert_eq!(slow.rx.try_recv().unwrap().version, 2);
        assert!(matches!(
            slow.rx.try_recv(),
            Err(mpsc::error::TryRecvError::Disconnected)
        ));
        hub.close();
        assert_eq!(hub.subscribe("x", None).err(), Some(Refused::Closed));
        assert_eq!(hub.streams(), 0);
    }
}
