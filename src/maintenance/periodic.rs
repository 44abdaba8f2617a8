//! Periodic jobs. Every daemon computes the same time slots from the same schedule and, at
//! each slot, races to advance `genq.periodic_slots`; only the daemon whose upsert moves the
//! slot forward enqueues, in the same statement. So N daemons give exactly one job per slot,
//! even when the job of a slot has already finished before a slower daemon gets there.
//! Slots missed while no daemon ran are not backfilled.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use croner::Cron;
use sqlx::PgPool;
use tokio::sync::watch;

use crate::daemon::config::PeriodicConfig;
use crate::daemon::{sleep_or_stop, Shared};

const ENQUEUE_SLOT: &str = r#"
WITH won AS (
    INSERT INTO genq.periodic_slots AS s (name, last_slot) VALUES ($1, $2)
    ON CONFLICT (name) DO UPDATE SET last_slot = EXCLUDED.last_slot, updated_at = now()
        WHERE s.last_slot < EXCLUDED.last_slot
    RETURNING 1
)
SELECT genq.enqueue($3, $4, $5, $2, 0, 20, $6) FROM won
"#;

/// When a periodic job is due.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// Every fixed interval, aligned to the Unix epoch.
    Every(Duration),
    /// A cron expression (UTC).
    Cron(Box<Cron>),
}

impl Schedule {
    /// The first slot strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        match self {
            Self::Every(every) => {
                let step = i64::try_from(every.as_millis()).ok()?.max(1);
                let next = (t.timestamp_millis().div_euclid(step) + 1) * step;
                Utc.timestamp_millis_opt(next).single()
            }
            Self::Cron(cron) => cron.find_next_occurrence(&t, false).ok(),
        }
    }
}

/// A periodic job definition, parsed.
#[derive(Debug, Clone)]
pub struct Periodic {
    /// Config entry.
    pub config: PeriodicConfig,
    /// Parsed schedule.
    pub schedule: Schedule,
}

impl Periodic {
    /// Parses a config entry.
    pub fn parse(config: &PeriodicConfig) -> Result<Self, String> {
        let schedule = match (&config.cron, config.every) {
            (Some(expr), None) => {
                Schedule::Cron(Box::new(Cron::from_str(expr).map_err(|e| {
                    format!("periodic job {:?}: bad cron {expr:?}: {e}", config.name)
                })?))
            }
            (None, Some(every)) if !every.is_zero() => Schedule::Every(every),
            _ => {
                return Err(format!(
                    "periodic job {:?}: set exactly one non-zero `cron` or `every`",
                    config.name
                ))
            }
        };
        Ok(Self {
            config: config.clone(),
            schedule,
        })
    }
}

/// Enqueues the job of `slot` unless some daemon already did. Returns the new job's id.
pub async fn enqueue_slot(
    pool: &PgPool,
    p: &PeriodicConfig,
    slot: DateTime<Utc>,
) -> Result<Option<i64>, sqlx::Error> {
    let unique_key = format!("periodic:{}:{}", p.name, slot.to_rfc3339());
    crate::db::query_scalar(ENQUEUE_SLOT)
        .bind(&p.name)
        .bind(slot)
        .bind(&p.kind)
        .bind(&p.payload)
        .bind(&p.queue)
        .bind(unique_key)
        .fetch_optional(pool)
        .await
}

/// Runs until `stop` turns true.
pub(crate) async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    // The configured jobs, the engine's prune job, and those the product registered with
    // its kinds (the generation and retention sweeps, the payments poll).
    let mut defs: Vec<PeriodicConfig> = shared.config.periodic.clone();
    defs.push(super::prune::periodic(&shared.config.prune));
    defs.extend(shared.registry.periodic_jobs().iter().cloned());
    let mut entries: Vec<(Periodic, Option<DateTime<Utc>>)> = Vec::new();
    for def in &defs {
        match Periodic::parse(def) {
            Ok(p) => {
                let next = p.schedule.next_after(Utc::now());
                entries.push((p, next));
            }
            Err(e) => tracing::error!(error = %e, "periodic job ignored"),
        }
    }
    loop {
        let Some((index, due)) = entries
            .iter()
            .enumerate()
            .filter_map(|(i, (_, next))| next.map(|n| (i, n)))
            .min_by_key(|(_, n)| *n)
        else {
            return;
        };
        let wait = (due - Utc::now()).to_std().unwrap_or_default();
        if !sleep_or_stop(wait, &mut stop).await {
            return;
        }
        let (p, next) = &mut entries[index];
        match enqueue_slot(&shared.pool, &p.config, due).await {
            Ok(Some(id)) => {
                tracing::debug!(name = %p.config.name, slot = %due, job_id = id, "periodic job enqueued");
                *next = p.schedule.next_after(due);
            }
            Ok(None) => *next = p.schedule.next_after(due),
            Err(err) => {
                tracing::warn!(name = %p.config.name, error = %err, "periodic enqueue failed; retrying");
                // Retry this slot shortly, unless the next one arrives first.
                let retry = Utc::now() + chrono::Duration::seconds(1);
                let following = p.schedule.next_after(due);
                if following.is_some_and(|f| f <= retry) {
                    *next = following;
                } else if !sleep_or_stop(Duration::from_secs(1), &mut stop).await {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interval_slots_align_to_epoch() {
        let s = Schedule::Every(Duration::from_secs(60));
        let t = Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 30).unwrap();
        assert_eq!(
            s.next_after(t),
            Some(Utc.with_ymd_and_hms(2026, 1, 1, 12, 1, 0).unwrap())
        );
        let on = Utc.with_ymd_and_hms(2026, 1, 1, 12, 1, 0).unwrap();
        assert_eq!(
            s.next_after(on),
            Some(Utc.with_ymd_and_hms(2026, 1, 1, 12, 2, 0).unwrap())
        );
    }

    #[test]
    fn cron_slots() {
        let p = Periodic::parse(&PeriodicConfig {
            name: "n".into(),
            kind: "k".into(),
            cron: Some("0 3 * * *".into()),
            every: None,
            queue: "default".into(),
            payload: serde_json::json!({}),
        })
        .unwrap();
        let t = Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap();
        assert_eq!(
            p.schedule.next_after(t),
            Some(Utc.with_ymd_and_hms(2026, 1, 2, 3, 0, 0).unwrap())
        );
    }

    #[test]
    fn bad_cron_is_named() {
        let err = Periodic::parse(&PeriodicConfig {
            name: "n".into(),
            kind: "k".into(),
            cron: Some("not cron".into()),
            every: None,
            queue: "default".into(),
            payload: serde_json::json!({}),
        })
        .unwrap_err();
        assert!(err.contains("bad cron"), "{err}");
    }
}
