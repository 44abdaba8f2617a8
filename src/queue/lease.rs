//! Leases: heartbeats extend the leases of jobs a worker still runs; rescue returns jobs
//! whose lease expired (their worker died or lost the database) to the claimable set.
//! Rescue is leaderless: every daemon runs it, and SKIP LOCKED keeps them out of each
//! other's way.

use std::time::Duration;

use sqlx::PgPool;

/// The fence compares `state::text` so that each job is a primary key probe, never a rescan
/// of the unnest per running job (see `COMPLETE_BATCH` in complete.rs, decision 54).
pub const HEARTBEAT: &str = r#"
UPDATE genq.jobs j
   SET lease_until = now() + make_interval(secs => $3)
  FROM unnest($1::bigint[], $2::int[]) AS u(id, attempt)
 WHERE j.id = u.id AND j.attempt = u.attempt AND j.state::text = 'running'
RETURNING j.id
"#;

const RESCUE: &str = r#"
WITH expired AS (
    SELECT id FROM genq.jobs
     WHERE state = 'running' AND lease_until < now()
     ORDER BY lease_until
     LIMIT $1
       FOR UPDATE SKIP LOCKED
)
UPDATE genq.jobs j
   SET state = CASE WHEN j.attempt >= j.max_attempts THEN 'discarded'
                    ELSE 'retryable' END::genq.job_state,
       run_at = now(),
       failures = j.failures + 1,
       finished_at = CASE WHEN j.attempt >= j.max_attempts THEN now() END,
       errors = j.errors || jsonb_build_array(jsonb_build_object(
           'at', now(), 'attempt', j.attempt, 'worker', j.worker_id,
           'error', format('lease expired: worker %s stopped heartbeating', j.worker_id))),
       lease_until = NULL,
       worker_id = NULL
  FROM expired
 WHERE j.id = expired.id
RETURNING j.id, j.queue, j.kind
"#;

const WAKE: &str = "SELECT pg_notify($1, q) FROM unnest($2::text[]) AS q";

/// Extends the leases of `(id, attempt)` pairs. Returns the ids still held; a missing id
/// means this worker lost the job (rescued elsewhere, or cancelled).
pub async fn heartbeat(
    pool: &PgPool,
    ids: &[i64],
    attempts: &[i32],
    lease: Duration,
) -> Result<Vec<i64>, sqlx::Error> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    // Rows are locked in id order, as the batched completion locks them: two statements
    // over overlapping jobs then wait for each other instead of deadlocking.
    let mut pairs: Vec<(i64, i32)> = ids.iter().copied().zip(attempts.iter().copied()).collect();
    pairs.sort_unstable();
    let (ids, attempts): (Vec<i64>, Vec<i32>) = pairs.into_iter().unzip();
    crate::db::query_scalar(HEARTBEAT)
        .bind(&ids)
        .bind(&attempts)
        .bind(lease.as_secs_f64())
        .fetch_all(pool)
        .await
}

/// A job returned to the claimable set by [`rescue_expired`].
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RescuedJob {
    /// Job id.
    pub id: i64,
    /// Queue.
    pub queue: String,
    /// Kind.
    pub kind: String,
}

/// Returns up to `limit` jobs with expired leases to `retryable` (or `discarded` when that
/// was their last attempt), recording the lost attempt in their error history.
pub async fn rescue_expired(pool: &PgPool, limit: i64) -> Result<Vec<RescuedJob>, sqlx::Error> {
    let rescued: Vec<RescuedJob> = crate::db::query_as(RESCUE)
        .bind(limit)
        .fetch_all(pool)
        .await?;
    if !rescued.is_empty() {
        let mut queues: Vec<&str> = rescued.iter().map(|j| j.queue.as_str()).collect();
        queues.sort_unstable();
        queues.dedup();
        // Any daemon may take the rescued jobs: wake them all, not just this one.
        wake_queues(pool, &queues).await?;
    }
    Ok(rescued)
}

/// Wakes every daemon working `queues` (jobs became claimable without an enqueue).
pub async fn wake_queues(pool: &PgPool, queues: &[&str]) -> Result<(), sqlx::Error> {
    crate::db::query(WAKE)
        .bind(super::JOBS_CHANNEL)
        .bind(queues)
        .execute(pool)
        .await?;
    Ok(())
}
