//! Retry delay after a failed attempt. The delay is stored in the row (`run_at`), so a
//! retry survives restarts and is visible to operators; nothing sleeps in memory.
//!
//! The exponent is the job's failure count (`genq.jobs.failures`), not its `attempt`:
//! `attempt` counts every claim, snoozes and hand-backs included, so a poll job that
//! snoozed 80 times through a long render would otherwise wait the maximum after its first
//! real error.

use std::time::Duration;

use rand::Rng;

use crate::daemon::config::BackoffConfig;

/// `min(max, base · 2^(failures-1)) · (1 ± jitter)`, where `failures` counts the failure
/// that just happened (1 for a job's first failure).
pub fn delay(config: &BackoffConfig, failures: i32) -> Duration {
    let exp = failures.saturating_sub(1).clamp(0, 62) as u32;
    let raw = config
        .base
        .checked_mul(1u32.checked_shl(exp.min(31)).unwrap_or(u32::MAX))
        .unwrap_or(config.max)
        .min(config.max);
    if config.jitter <= 0.0 {
        return raw;
    }
    let factor = rand::thread_rng().gen_range(1.0 - config.jitter..=1.0 + config.jitter);
    raw.mul_f64(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_then_caps() {
        let c = BackoffConfig {
            base: Duration::from_secs(1),
            max: Duration::from_secs(60),
            jitter: 0.0,
        };
        let d: Vec<u64> = (1..=9).map(|a| delay(&c, a).as_secs()).collect();
        assert_eq!(d, vec![1, 2, 4, 8, 16, 32, 60, 60, 60]);
        assert_eq!(delay(&c, 1000), Duration::from_secs(60));
    }

    #[test]
    fn jitter_stays_in_band() {
        let c = BackoffConfig {
            base: Duration::from_secs(10),
            max: Duration::from_secs(3600),
            jitter: 0.1,
        };
        for _ in 0..1000 {
            let d = delay(&c, 1).as_secs_f64();
            assert!((9.0..=11.0).contains(&d), "{d}");
        }
    }
}
