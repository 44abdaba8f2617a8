//! Claiming: one statement takes a batch of due jobs of one queue and leases them.
//!
//! The CTE fences `FOR UPDATE SKIP LOCKED` so Postgres cannot update past the LIMIT, the
//! partial index `jobs_claimable_idx` holds exactly the claimable rows in claim order, and
//! the paused check is an uncorrelated sub-select (evaluated once, not per row). Every claim
//! bumps `attempt`: that number is the fencing token of completion.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;

const CLAIM: &str = r#"
WITH picked AS (
    SELECT j.id
      FROM genq.jobs j
     WHERE j.queue = $1
       AND j.state IN ('available', 'retryable')
       AND j.run_at <= now()
       AND NOT EXISTS (SELECT 1 FROM genq.queues q WHERE q.name = $1 AND q.paused)
     ORDER BY j.priority, j.run_at, j.id
     LIMIT $3
       FOR UPDATE SKIP LOCKED
)
UPDATE genq.jobs j
   SET state = 'running',
       attempt = j.attempt + 1,
       attempted_at = now(),
       lease_until = now() + make_interval(secs => $4),
       worker_id = $2
  FROM picked
 WHERE j.id = picked.id
RETURNING j.id, j.queue, j.kind, j.payload, j.attempt, j.max_attempts, j.priority,
          j.run_at, j.created_at
"#;

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
}

/// Claims up to `limit` due jobs of `queue` for `worker_id`, leased for `lease`.
pub async fn claim(
    pool: &PgPool,
    queue: &str,
    worker_id: &str,
    limit: u32,
    lease: Duration,
) -> Result<Vec<ClaimedJob>, sqlx::Error> {
    sqlx::query_as(CLAIM)
        .bind(queue)
        .bind(worker_id)
        .bind(i64::from(limit))
        .bind(lease.as_secs_f64())
        .fetch_all(pool)
        .await
}
