//! Claiming: one statement takes a batch of due jobs of one queue and leases them.
//!
//! Inside `genq.claim`, the CTE fences `FOR UPDATE SKIP LOCKED` so Postgres cannot update past the LIMIT, the
//! partial index `jobs_claimable_idx` holds exactly the claimable rows in claim order, and
//! the paused check and the cap are read once per claim, never per row. Every claim
//! bumps `attempt`: that number is the fencing token of completion.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// `genq.claim` (migrations/0002_operations.sql) holds the statement: paused queues yield
/// nothing, and queues with a fleet-wide `max_running` cap are claimed under a lock.
const CLAIM: &str = "SELECT * FROM genq.claim($1, $2, $3, $4)";

/// A job this worker now holds, fenced by `(id, attempt)`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClaimedJob {
    /// Job id.
    pub id: i64,
    /// Queue.
    pub queue: String,
    /// Kind.
    pub kind: String,
    /// Payload.
    pub payload: serde_json::Value,
    /// This attempt's number (1-based); the fencing token.
    pub attempt: i32,
    /// Attempt limit.
    pub max_attempts: i32,
    /// Priority.
    pub priority: i32,
    /// When the job became due.
    pub run_at: DateTime<Utc>,
    /// When the job was enqueued.
    pub created_at: DateTime<Utc>,
    /// Failed attempts so far (snoozes, hand-backs and interruptions excluded): the
    /// exponent of the next backoff.
    pub failures: i32,
    /// The job's fairness key in a fair queue (`""` for a job enqueued without one);
    /// `None` in a queue that is not fair.
    pub fairness_key: Option<String>,
    /// Fair queues: whether the job's key had more due work than this claim took (its
    /// wait counts as the heavy share); `None` for keyless jobs and queues that are not fair.
    pub key_backlog: Option<bool>,
}

/// Claims up to `limit` due jobs of `queue` for `worker_id`, leased for `lease`.
pub async fn claim(
    pool: &PgPool,
    queue: &str,
    worker_id: &str,
    limit: u32,
    lease: Duration,
) -> Result<Vec<ClaimedJob>, sqlx::Error> {
    crate::db::query_as(CLAIM)
        .bind(queue)
        .bind(worker_id)
        .bind(i32::try_from(limit).unwrap_or(i32::MAX))
        .bind(lease.as_secs_f64())
        .fetch_all(pool)
        .await
}
