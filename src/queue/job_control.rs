//! Operator and application control of single jobs: show, retry, cancel.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use super::state::JobState;

const SHOW: &str = r#"
SELECT id, queue, kind, payload, state, priority, attempt, max_attempts, failures, run_at, lease_until,
       worker_id, unique_key, errors, created_at, attempted_at, finished_at,
       fairness_key, limit_group, genq.job_wait_reason(id) AS waiting_for
  FROM genq.jobs WHERE id = $1
"#;

// Final (and scheduled-retry) jobs become available now; a job out of attempts gets one more,
// and the backoff schedule starts over.
const RETRY: &str = r#"
UPDATE genq.jobs
   SET state = 'available', run_at = now(), finished_at = NULL, lease_until = NULL,
       worker_id = NULL, max_attempts = greatest(max_attempts, attempt + 1), failures = 0
 WHERE id = $1 AND state IN ('completed', 'discarded', 'cancelled', 'retryable', 'available')
RETURNING id, queue, kind, payload, state, priority, attempt, max_attempts, failures, run_at, lease_until,
          worker_id, unique_key, errors, created_at, attempted_at, finished_at,
          fairness_key, limit_group, NULL::text AS waiting_for
"#;

const CANCEL: &str = r#"
WITH old AS (SELECT id, state FROM genq.jobs WHERE id = $1 FOR UPDATE)
UPDATE genq.jobs j
   SET state = 'cancelled', finished_at = now(), lease_until = NULL
  FROM old
 WHERE j.id = old.id AND old.state IN ('available', 'retryable', 'running')
RETURNING old.state
"#;

const NOTIFY: &str = "SELECT pg_notify($1, $2)";

/// A job row as operators see it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct JobRow {
    /// Id.
    pub id: i64,
    /// Queue.
    pub queue: String,
    /// Kind.
    pub kind: String,
    /// Payload.
    pub payload: serde_json::Value,
    /// State.
    pub state: JobState,
    /// Priority (lower first).
    pub priority: i32,
    /// Attempts started.
    pub attempt: i32,
    /// Attempt limit (raised by one for each attempt that did not count).
    pub max_attempts: i32,
    /// Failed attempts (the backoff exponent).
    pub failures: i32,
    /// Earliest next start.
    pub run_at: DateTime<Utc>,
    /// Lease expiry while running.
    pub lease_until: Option<DateTime<Utc>>,
    /// Worker holding (or that finished) it.
    pub worker_id: Option<String>,
    /// Unique key.
    pub unique_key: Option<String>,
    /// One entry per failed attempt.
    pub errors: serde_json::Value,
    /// Enqueue time.
    pub created_at: DateTime<Utc>,
    /// Last claim time.
    pub attempted_at: Option<DateTime<Utc>>,
    /// When it reached a final state.
    pub finished_at: Option<DateTime<Utc>>,
    /// Fairness key (fair queues: `""` for a keyless job).
    pub fairness_key: Option<String>,
    /// Limit group.
    pub limit_group: Option<String>,
    /// Why a job that waits to be claimed is not running yet: paused queue, scheduled, the
    /// queue's cap, its key's or group's limit, or its turn (`genq.job_wait_reason`).
    pub waiting_for: Option<String>,
}

/// Errors of job control, with messages meant for operators.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No such job (it may have been pruned).
    #[error("job {0} not found")]
    NotFound(i64),
    /// The job's state does not allow the action.
    #[error("job {id} is {state}: {why}")]
    WrongState {
        /// Job id.
        id: i64,
        /// Its state.
        state: JobState,
        /// What the operator can do instead.
        why: &'static str,
    },
    /// Another job holds the unique key.
    #[error("job {0} cannot be retried: another job with the same unique key is pending")]
    UniqueKeyHeld(i64),
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Fetches one job.
pub async fn show(pool: &PgPool, id: i64) -> Result<JobRow, ControlError> {
    crate::db::query_as(SHOW)
        .bind(id)
        .fetch_optional(pool)
        .await?
        .ok_or(ControlError::NotFound(id))
}

/// Makes a job available to run now. Running jobs are refused (cancel them first).
/// Returns the job as the retry left it (a daemon may claim it a moment later).
pub async fn retry(pool: &PgPool, id: i64) -> Result<JobRow, ControlError> {
    let mut tx = crate::db::begin(pool).await?;
    let row: Option<JobRow> = match crate::db::query_as(RETRY)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await
    {
        Ok(row) => row,
        Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("23505") => {
            return Err(ControlError::UniqueKeyHeld(id))
        }
        Err(e) => return Err(e.into()),
    };
    let Some(row) = row else {
        drop(tx);
        let job = show(pool, id).await?;
        return Err(ControlError::WrongState {
            id,
            state: job.state,
            why: "a running job cannot be retried; cancel it first",
        });
    };
    crate::db::query(NOTIFY)
        .bind(super::JOBS_CHANNEL)
        .bind(&row.queue)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(row)
}

/// Cancels a job that has not finished. A running job's worker is told to stop, and its
/// late completion is fenced out. Returns the job and the state it was cancelled from.
pub async fn cancel(pool: &PgPool, id: i64) -> Result<(JobRow, JobState), ControlError> {
    let mut tx = crate::db::begin(pool).await?;
    let from: Option<JobState> = crate::db::query_scalar(CANCEL)
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
    let Some(from) = from else {
        drop(tx);
        let job = show(pool, id).await?;
        return Err(ControlError::WrongState {
            id,
            state: job.state,
            why: "only available, retryable or running jobs can be cancelled",
        });
    };
    if from == JobState::Running {
        crate::db::query(NOTIFY)
            .bind(super::CANCEL_CHANNEL)
            .bind(id.to_string())
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok((show(pool, id).await?, from))
}
