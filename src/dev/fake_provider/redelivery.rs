//! Redelivery of failed webhooks, as the real providers do it, so the suite exercises the
//! path real deployments rely on when a callback reaches a daemon that is down (a fal
//! submit whose answer was lost is only found again through its callback).
//!
//! A delivery fails on no answer (refused, timed out) or a non-2xx status; the fake then
//! tries again after each delay of the provider's schedule, multiplied by
//! [`FakeConfig::webhook_retry_scale`](super::FakeConfig) (0: never retry, 1: real time,
//! 0.01: a two-hour fal schedule in 77 s), and gives up after the last one:
//!
//! - fal: "retried 10 times over 2 hours" — 10 attempts, the retries 15 s after the first
//!   failure and doubling (15 s ... 64 min, 2 h 8 min in all); fal does not publish the delays.
//! - BytePlus: callbacks "retried 3 times"; delays unpublished, taken as 15 s, 1 min, 5 min.
//! - Replicate: only the terminal webhook, "several times on an exponential backoff, the
//!   final retry about 1 minute after the prediction completed": 2, 4, 8, 16, 32 s.
//!
//! `POST /_fake/webhooks/refuse {"times": N}` makes the next N delivery attempts fail
//! without being sent (a load balancer's 502), for tests that need a lost first callback
//! while the daemon is up.

use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use super::state::{Job, Shared};
use super::webhooks::deliver;
use crate::providers::ProviderKind;

const FAL: [Duration; 9] = [
    Duration::from_secs(15),
    Duration::from_secs(30),
    Duration::from_secs(60),
    Duration::from_secs(120),
    Duration::from_secs(240),
    Duration::from_secs(480),
    Duration::from_secs(960),
    Duration::from_secs(1920),
    Duration::from_secs(3840),
];
const BYTEPLUS: [Duration; 3] = [
    Duration::from_secs(15),
    Duration::from_secs(60),
    Duration::from_secs(300),
];
const REPLICATE: [Duration; 5] = [
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
    Duration::from_secs(16),
    Duration::from_secs(32),
];

/// The delays before each retry of a failed final webhook, at real time.
pub fn schedule(kind: ProviderKind) -> &'static [Duration] {
    match kind {
        ProviderKind::Fal => &FAL,
        ProviderKind::BytePlus => &BYTEPLUS,
        ProviderKind::Replicate => &REPLICATE,
    }
}

/// Delivery attempts still to be refused (`/_fake/webhooks/refuse`).
#[derive(Default)]
pub(super) struct Refusals(AtomicU32);

impl Refusals {
    pub fn set(&self, times: u32) {
        self.0.store(times, Ordering::SeqCst);
    }

    /// Uses up one refusal if any is left.
    pub fn take(&self) -> bool {
        self.0
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

/// Delivers `job`'s final webhook to `url`, retrying on the provider's schedule (scaled)
/// until one attempt gets a 2xx, the schedule ends or the fake stops.
pub(super) async fn deliver_with_retries(state: &Shared, job: &Job, url: &str) {
    if deliver(state, job, url).await {
        return;
    }
    let scale = state.cfg.webhook_retry_scale;
    if scale <= 0.0 {
        return;
    }
    for delay in schedule(job.provider) {
        state.sleep(delay.mul_f64(scale)).await;
        if state.stopping() {
            return;
        }
        state.count_webhook_retry();
        if deliver(state, job, url).await {
            return;
        }
    }
    state.count_webhook_abandoned();
    tracing::debug!(job = %job.id, "fake provider: webhook abandoned after its retries");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedules_match_what_the_providers_publish() {
        let total = |k| schedule(k).iter().sum::<Duration>();
        // fal: 10 attempts over about two hours.
        assert_eq!(schedule(ProviderKind::Fal).len() + 1, 10);
        assert!((Duration::from_secs(6600)..Duration::from_secs(8400))
            .contains(&total(ProviderKind::Fal)));
        // BytePlus: retried 3 times.
        assert_eq!(schedule(ProviderKind::BytePlus).len(), 3);
        // Replicate: the last retry about a minute after completion.
        assert!((Duration::from_secs(50)..Duration::from_secs(75))
            .contains(&total(ProviderKind::Replicate)));
    }

    #[test]
    fn refusals_are_used_up_one_at_a_time() {
        let r = Refusals::default();
        assert!(!r.take());
        r.set(2);
        assert!(r.take());
        assert!(r.take());
        assert!(!r.take());
    }
}
