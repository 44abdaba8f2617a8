//! `[payments]`: the Plisio polling fallback's endpoint, schedule and bounds.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[payments]`: the periodic `payments.poll` job, the fallback for Plisio callbacks that
/// never come. Its API key is Plisio's secret key (`[webhooks] plisio_secret_env`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PaymentsConfig {
    /// Plisio's API base. Defaults to `https://api.plisio.net/api/v1`.
    pub plisio_base_url: String,
    /// How often the poll job runs (one daemon per interval), and the wait after a
    /// payment's first poll. Defaults to 5 min.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// A `new`/`pending` payment older than this (since its last change) is polled.
    /// Defaults to 10 min.
    #[serde(with = "humantime_serde")]
    pub poll_after: Duration,
    /// Payments polled per run at most; the rest wait for later runs. Defaults to 200.
    pub poll_batch: u32,
    /// The longest wait between two polls of a payment: the wait doubles from
    /// `poll_interval` after each poll that leaves it open, up to this (or `poll_interval`
    /// if that is longer: a config that set only a long interval keeps working). Defaults
    /// to 1 h.
    #[serde(with = "humantime_serde")]
    pub poll_max_backoff: Duration,
    /// A payment Plisio has never known (every poll answered "no such operation", no
    /// callback came) stops being polled once it is older than this; its status is kept
    /// (decision 56). Defaults to 7 days.
    #[serde(with = "humantime_serde")]
    pub give_up_unknown_after: Duration,
}

impl Default for PaymentsConfig {
    fn default() -> Self {
        Self {
            plisio_base_url: "https://api.plisio.net/api/v1".into(),
            poll_interval: Duration::from_secs(300),
            poll_after: Duration::from_secs(600),
            poll_batch: 200,
            poll_max_backoff: Duration::from_secs(3600),
            give_up_unknown_after: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

impl PaymentsConfig {
    /// The poll's backoff: from `poll_interval`, capped at `poll_max_backoff` (at least
    /// `poll_interval`).
    pub fn backoff(&self) -> crate::payments::poll::Backoff {
        crate::payments::poll::Backoff {
            base: self.poll_interval,
            max: self.poll_max_backoff.max(self.poll_interval),
        }
    }

    /// Checks relations between fields that serde cannot.
    pub fn validate(&self) -> Result<(), String> {
        if self.poll_interval.is_zero() {
            return Err("payments.poll_interval must be more than 0".into());
        }
        if self.poll_batch == 0 {
            return Err("payments.poll_batch must be at least 1".into());
        }
        if self.poll_max_backoff.is_zero() {
            return Err("payments.poll_max_backoff must be more than 0".into());
        }
        if self.give_up_unknown_after.is_zero() {
            return Err("payments.give_up_unknown_after must be more than 0".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_bounds_are_refused() {
        assert_eq!(PaymentsConfig::default().validate(), Ok(()));
        let refused = |change: fn(&mut PaymentsConfig)| {
            let mut c = PaymentsConfig::default();
            change(&mut c);
            c.validate().is_err()
        };
        assert!(refused(|c| c.poll_interval = Duration::ZERO));
        assert!(refused(|c| c.poll_batch = 0));
        assert!(refused(|c| c.poll_max_backoff = Duration::ZERO));
        // A long interval alone still works: the cap is never below it.
        let c = PaymentsConfig {
            poll_interval: Duration::from_secs(2 * 3600),
            ..Default::default()
        };
        assert_eq!(c.validate(), Ok(()));
        assert_eq!(c.backoff().max, c.poll_interval);
        assert!(refused(|c| c.give_up_unknown_after = Duration::ZERO));
    }
}
