//! Fake blob stores on loopback (Vercel Blob, Supabase Storage), beside the fake
//! providers so the tests, the demo and the benchmarks can all use them.

pub mod supabase;
pub mod vercel;

use std::time::Duration;

use tokio::sync::watch;

/// A count of requests a fake received, which a test can wait on instead of polling: the
/// fake bumps it as each request arrives and wakes every waiter.
#[derive(Debug)]
pub(crate) struct Arrivals(watch::Sender<usize>);

impl Default for Arrivals {
    fn default() -> Self {
        Self(watch::Sender::new(0))
    }
}

impl Arrivals {
    /// Counts one more request.
    pub(crate) fn bump(&self) {
        self.0.send_modify(|n| *n += 1);
    }

    /// Waits until at least `n` requests arrived; panics after `within`, naming `what`.
    pub(crate) async fn wait_for(&self, n: usize, within: Duration, what: &str) {
        let mut count = self.0.subscribe();
        let reached = tokio::time::timeout(within, count.wait_for(|c| *c >= n)).await;
        assert!(
            matches!(reached, Ok(Ok(_))),
            "timed out after {within:?} waiting for {n} {what}"
        );
    }
}
