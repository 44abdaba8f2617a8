//! `[payments]`: the Plisio polling fallback's endpoint and schedule.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[payments]`: the periodic `payments.poll` job, the fallback for Plisio callbacks that
/// never come. Its API key is Plisio's secret key (`[webhooks] plisio_secret_env`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PaymentsConfig {
    /// Plisio's API base. Defaults to `https://api.plisio.net/api/v1`.
    pub plisio_base_url: String,
    /// How often pending invoices are polled (one daemon per interval). Defaults to 5 min.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// A `new`/`pending` payment older than this (since its last change) is polled.
    /// Defaults to 10 min.
    #[serde(with = "humantime_serde")]
    pub poll_after: Duration,
}

impl Default for PaymentsConfig {
    fn default() -> Self {
        Self {
            plisio_base_url: "https://api.plisio.net/api/v1".into(),
            poll_interval: Duration::from_secs(300),
            poll_after: Duration::from_secs(600),
        }
    }
}
