//! Fleet-wide queue control: pause, resume, concurrency caps, listing, and the wait behind
//! `drain`. State lives in `genq.queues`, which every claim reads, so a daemon that misses
//! the control notification still obeys.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

const PAUSE_ONE: &str = r#"
INSERT INTO genq.queues AS q (name, paused, paused_at, pause_reason)
VALUES ($1, true, now(), $2)
ON CONFLICT (name) DO UPDATE
   SET paused = true,
       paused_at = CASE WHEN q.paused THEN q.paused_at ELSE now() END,
       pause_reason = EXCLUDED.pause_reason,
       updated_at = now()
RETURNING name
"#;

const PAUSE_ALL: &str = r#"
UPDATE genq.queues
   SET paused = true, paused_at = coalesce(paused_at, now()), pause_reason = $1, updated_at = now()
 WHERE NOT paused
RETURNING name
"#;

const RESUME: &str = r#"
UPDATE genq.queues
   SET paused = false, paused_at = NULL, pause_reason = NULL, updated_at = now()
 WHERE (name = $1 OR $1 IS NULL) AND paused
RETURNING name
"#;

const SET_MAX_RUNNING: &str = r#"
INSERT INTO genq.queues AS q (name, max_running) VALUES ($1, $2)
ON CONFLICT (name) DO UPDATE SET max_running = EXCLUDED.max_running, updated_at = now()
"#;

const ENSURE: &str = "INSERT INTO genq.queues (name) VALUES ($1) ON CONFLICT (name) DO NOTHING";

const CLAIM_POLICY: &str = "SELECT fair, max_running FROM genq.queues WHERE name = $1";

const RUNNING: &str = "SELECT count(*) FROM genq.jobs WHERE queue = $1 AND state = 'running'";

// Non-final counts come through the partial indexes; "completed in the last minute" walks
// the finished index from one minute ago.
const LIST: &str = r#"
SELECT q.name, q.paused, q.paused_at, q.pause_reason, q.max_running,
       coalesce(s.available, 0) AS available, coalesce(s.scheduled, 0) AS scheduled,
       coalesce(s.running, 0) AS running, coalesce(s.retryable, 0) AS retryable,
       extract(epoch FROM now() - s.oldest_available_at)::float8 AS oldest_available_age_secs,
       coalesce(f.completed_last_minute, 0) AS completed_last_minute,
       coalesce(f.discarded_last_minute, 0) AS discarded_last_minute,
       q.fair, q.key_max_active,
       CASE WHEN q.fair THEN (SELECT count(*) FROM genq.fair_keys k
                               WHERE k.queue = q.name AND k.waiting) END AS keys_waiting
  FROM genq.queues q
  LEFT JOIN genq.queue_counts s ON s.queue = q.name
  LEFT JOIN (
    SELECT j.queue,
           count(*) FILTER (WHERE j.state = 'completed') AS completed_last_minute,
           count(*) FILTER (WHERE j.state = 'discarded') AS discarded_last_minute
      FROM genq.jobs j
     WHERE j.state IN ('completed', 'cancelled', 'discarded')
       AND j.finished_at > now() - interval '1 minute'
     GROUP BY j.queue
  ) f ON f.queue = q.name
 ORDER BY q.name
"#;

const NOTIFY: &str = "SELECT pg_notify($1, $2)";

/// Channel on which pause and resume are announced (payload: JSON action and queue).
pub const CONTROL_CHANNEL: &str = "genq_control";

/// One queue, as operators see it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct QueueInfo {
    /// Queue name.
    pub name: String,
    /// Whether claims are stopped fleet-wide.
    pub paused: bool,
    /// Since when.
    pub paused_at: Option<DateTime<Utc>>,
    /// Why (as given by the operator).
    pub pause_reason: Option<String>,
    /// Fleet-wide running cap.
    pub max_running: Option<i32>,
    /// Due jobs waiting to be claimed.
    pub available: i64,
    /// Jobs waiting for a future `run_at`.
    pub scheduled: i64,
    /// Jobs running now, on any daemon.
    pub running: i64,
    /// Jobs waiting for a retry.
    pub retryable: i64,
    /// Age of the oldest due job not yet claimed, in seconds.
    pub oldest_available_age_secs: Option<f64>,
    /// Jobs completed in the last minute.
    pub completed_last_minute: i64,
    /// Jobs discarded in the last minute.
    pub discarded_last_minute: i64,
    /// Claimed fairly across fairness keys (docs/fairness.md).
    pub fair: bool,
    /// Fair queues: the default per-key limit.
    pub key_max_active: Option<i32>,
    /// Fair queues: keys with work waiting for a claim and room to run it.
    pub keys_waiting: Option<i64>,
}

/// Which queues an action applies to.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// One queue (created if unknown, so a queue can be paused before its first job).
    One(&'a str),
    /// Every known queue.
    All,
}

/// Pauses queues fleet-wide. Running jobs carry on; enqueueing keeps working. Returns the
/// queues that were paused by this call (already-paused ones keep their original time).
pub async fn pause(
    pool: &PgPool,
    target: Target<'_>,
    reason: Option<&str>,
) -> Result<Vec<String>, sqlx::Error> {
    let mut tx = crate::db::begin(pool).await?;
    let names: Vec<String> = match target {
        Target::One(q) => {
            crate::db::query_scalar(PAUSE_ONE)
                .bind(q)
                .bind(reason)
                .fetch_all(&mut *tx)
                .await?
        }
        Target::All => {
            crate::db::query_scalar(PAUSE_ALL)
                .bind(reason)
                .fetch_all(&mut *tx)
                .await?
        }
    };
    for name in &names {
        let payload =
            serde_json::json!({"action": "pause", "queue": name, "reason": reason}).to_string();
        crate::db::query(NOTIFY)
            .bind(CONTROL_CHANNEL)
            .bind(payload)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(names)
}

/// Resumes paused queues and wakes every daemon working them. Returns the queues resumed.
pub async fn resume(pool: &PgPool, target: Target<'_>) -> Result<Vec<String>, sqlx::Error> {
    let queue = match target {
        Target::One(q) => Some(q),
        Target::All => None,
    };
    let mut tx = crate::db::begin(pool).await?;
    let names: Vec<String> = crate::db::query_scalar(RESUME)
        .bind(queue)
        .fetch_all(&mut *tx)
        .await?;
    for name in &names {
        let payload = serde_json::json!({"action": "resume", "queue": name}).to_string();
        crate::db::query(NOTIFY)
            .bind(CONTROL_CHANNEL)
            .bind(payload)
            .execute(&mut *tx)
            .await?;
        crate::db::query(NOTIFY)
            .bind(super::JOBS_CHANNEL)
            .bind(name)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(names)
}

/// Sets (or, with `None`, removes) the fleet-wide cap on running jobs of `queue`.
pub async fn set_max_running(
    pool: &PgPool,
    queue: &str,
    max_running: Option<i32>,
) -> Result<(), sqlx::Error> {
    crate::db::query(SET_MAX_RUNNING)
        .bind(queue)
        .bind(max_running)
        .execute(pool)
        .await?;
    Ok(())
}

/// Makes sure a row exists for `queue` (daemons do this for their configured queues).
pub async fn ensure(pool: &PgPool, queue: &str) -> Result<(), sqlx::Error> {
    crate::db::query(ENSURE).bind(queue).execute(pool).await?;
    Ok(())
}

/// How a queue is claimed: fairly across keys, and under a fleet-wide cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, sqlx::FromRow)]
pub struct ClaimPolicy {
    /// Claimed round-robin across fairness keys (`genq.claim_fair`).
    pub fair: bool,
    /// Fleet-wide cap on running jobs.
    pub max_running: Option<i32>,
}

/// The claim policy of `queue` (the defaults for a queue without a row).
pub async fn claim_policy(pool: &PgPool, queue: &str) -> Result<ClaimPolicy, sqlx::Error> {
    Ok(crate::db::query_as(CLAIM_POLICY)
        .bind(queue)
        .fetch_optional(pool)
        .await?
        .unwrap_or_default())
}

/// Jobs of `queue` running now, on any daemon.
pub async fn running(pool: &PgPool, queue: &str) -> Result<i64, sqlx::Error> {
    crate::db::query_scalar(RUNNING)
        .bind(queue)
        .fetch_one(pool)
        .await
}

/// Every queue with its counts.
pub async fn list(pool: &PgPool) -> Result<Vec<QueueInfo>, sqlx::Error> {
    crate::db::query_as(LIST).fetch_all(pool).await
}

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DrainResult {
    /// Whether no job was running before the timeout.
    pub drained: bool,
    /// Jobs still running at the end.
    pub running: i64,
    /// How long it waited, in seconds.
    pub waited_secs: f64,
}

/// Pauses `queue`, then waits until none of its jobs runs or `timeout` passes, calling
/// `progress` with the running count about every `every`. The queue stays paused.
pub async fn drain(
    pool: &PgPool,
    queue: &str,
    reason: Option<&str>,
    timeout: Duration,
    every: Duration,
    mut progress: impl FnMut(i64),
) -> Result<DrainResult, sqlx::Error> {
    pause(pool, Target::One(queue), reason.or(Some("drain"))).await?;
    let started = std::time::Instant::now();
    loop {
        let n = running(pool, queue).await?;
        let waited_secs = started.elapsed().as_secs_f64();
        if n == 0 {
            return Ok(DrainResult {
                drained: true,
                running: 0,
                waited_secs,
            });
        }
        progress(n);
        if started.elapsed() >= timeout {
            return Ok(DrainResult {
                drained: false,
                running: n,
                waited_secs,
            });
        }
        tokio::time::sleep(
            every
                .min(timeout.saturating_sub(started.elapsed()))
                .max(Duration::from_millis(10)),
        )
        .await;
    }
}
