//! `[sweep]`: the generation sweeper's schedule and ages.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[sweep]`: the periodic `generation.sweep` job.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SweepConfig {
    /// How often it runs (one daemon per interval). Defaults to 5 min.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// A submitted generation older than this with no live poll job gets one. Defaults to 15 min.
    #[serde(with = "humantime_serde")]
    pub stale_after: Duration,
    /// Past this age (the providers' retention) a submitted generation fails and its hold
    /// is released. Defaults to 7 days.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
}

impl Default for SweepConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(300),
            stale_after: Duration::from_secs(900),
            retention: Duration::from_secs(7 * 24 * 3600),
        }
    }
}
