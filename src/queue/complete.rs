//! Recording outcomes. One statement writes a whole batch of outcomes of any kind
//! (`UPDATE ... FROM unnest(...)`), and every row is fenced on `(id, attempt, state =
//! 'running')`: a stale worker whose lease was rescued, or a job cancelled meanwhile,
//! cannot overwrite what happened since.
//!
//! `attempt` only ever grows, so it stays a valid fencing token: an outcome that costs no
//! attempt (snooze, hand-back) raises `max_attempts` by one instead of lowering `attempt`
//! (as River does). Otherwise the next claim would reuse the token, and a retried write of
//! an old outcome (say, after a commit whose answer was lost) could land on the new claim.
//! So `max_attempts` bounds the attempts *spent*, and the separate `failures` column counts
//! the outcomes that append an error (retry, discard; a lost lease in `lease.rs`): it is
//! the backoff exponent.

use std::time::Duration;

use sqlx::{PgConnection, PgPool};

/// `state::text`, not `state`: compared as an enum, the fence matches the predicate of
/// `jobs_running_idx`, and with statistics taken while little ran (say, right after a
/// `VACUUM ANALYZE`) the planner drives the join from that index, estimated at one row,
/// and rescans the whole unnest for each running job: 70,000 running jobs x 5,000 outcomes
/// took 61 s (decision 54). As text the fence is a filter, and each outcome is one primary
/// key probe whatever the statistics say.
pub const COMPLETE_BATCH: &str = r#"
UPDATE genq.jobs j
   SET state = u.state::genq.job_state,
       max_attempts = j.max_attempts + u.refund,
       failures = j.failures + CASE WHEN u.message IS NULL THEN 0 ELSE 1 END,
       run_at = CASE WHEN u.delay IS NULL THEN j.run_at
                     ELSE now() + make_interval(secs => u.delay) END,
       finished_at = CASE WHEN u.state IN ('completed', 'discarded', 'cancelled') THEN now() END,
       errors = CASE WHEN u.message IS NULL THEN j.errors
                     ELSE j.errors || jsonb_build_array(jsonb_build_object(
                          'at', now(), 'attempt', j.attempt, 'error', u.message,
                          'worker', j.worker_id)) END,
       lease_until = NULL,
       worker_id = CASE WHEN u.state IN ('completed', 'discarded', 'cancelled')
                        THEN j.worker_id END
  FROM unnest($1::bigint[], $2::int[], $3::text[], $4::float8[], $5::text[], $6::int[])
       AS u(id, attempt, state, delay, message, refund)
 WHERE j.id = u.id
   AND j.attempt = u.attempt
   AND j.state::text = 'running'
RETURNING j.id
"#;

const COMPLETE_ONE: &str = r#"
UPDATE genq.jobs
   SET state = 'completed', finished_at = now(), lease_until = NULL
 WHERE id = $1 AND attempt = $2 AND state = 'running'
"#;

/// What to write for one finished attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The handler succeeded.
    Completed,
    /// The attempt failed; run again after `delay`.
    Retry {
        /// When to run again.
        delay: Duration,
        /// The error, appended to the job's history.
        message: String,
    },
    /// Final failure: no more attempts.
    Discard {
        /// The error, appended to the job's history.
        message: String,
    },
    /// Run again after `delay` without spending an attempt (`max_attempts` grows by one).
    Snooze {
        /// When to run again.
        delay: Duration,
    },
    /// The worker gives the job back unfinished (shutdown): available at once, without
    /// spending an attempt (`max_attempts` grows by one).
    HandBack,
    /// The attempt was cut short by the infrastructure (the database connection was lost):
    /// not the job's failure. Run again after `delay` without spending an attempt or
    /// growing the backoff; the message goes to the log, not to the job's error history.
    Interrupted {
        /// When to run again (short and fixed).
        delay: Duration,
        /// What interrupted it, for the log.
        message: String,
    },
    /// The handler already recorded completion in its own transaction
    /// ([`complete_in`]); nothing to write.
    AlreadyRecorded,
}

impl Outcome {
    /// The label used in logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Completed | Self::AlreadyRecorded => "completed",
            Self::Retry { .. } => "retried",
            Self::Discard { .. } => "discarded",
            Self::Snooze { .. } => "snoozed",
            Self::HandBack => "handed_back",
            Self::Interrupted { .. } => "interrupted",
        }
    }
}

/// One outcome for the job claimed as `(id, attempt)`.
#[derive(Debug, Clone)]
pub struct Completion {
    /// Job id.
    pub id: i64,
    /// The attempt that produced the outcome (the fencing token).
    pub attempt: i32,
    /// What happened.
    pub outcome: Outcome,
    /// Queue (for metrics).
    pub queue: String,
    /// Kind (for metrics).
    pub kind: String,
}

/// Writes a batch of outcomes in one statement. Returns the ids that were written; the
/// others were fenced out (the job is no longer this attempt's to finish).
pub async fn complete_batch(pool: &PgPool, batch: &[Completion]) -> Result<Vec<i64>, sqlx::Error> {
    let n = batch.len();
    let (mut ids, mut attempts, mut states, mut delays, mut messages, mut refunds) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    // In id order, as the heartbeat locks them (see lease::heartbeat): overlapping
    // statements wait for each other instead of deadlocking.
    let mut sorted: Vec<&Completion> = batch.iter().collect();
    sorted.sort_unstable_by_key(|c| c.id);
    for c in sorted {
        let (state, delay, message, refund): (&str, Option<f64>, Option<&str>, i32) = match &c
            .outcome
        {
            Outcome::AlreadyRecorded => continue,
            Outcome::Completed => ("completed", None, None, 0),
            Outcome::Retry { delay, message } => {
                ("retryable", Some(delay.as_secs_f64()), Some(message), 0)
            }
            Outcome::Discard { message } => ("discarded", None, Some(message), 0),
            Outcome::Snooze { delay } => ("available", Some(delay.as_secs_f64()), None, 1),
            Outcome::HandBack => ("available", None, None, 1),
            Outcome::Interrupted { delay, .. } => ("available", Some(delay.as_secs_f64()), None, 1),
        };
        ids.push(c.id);
        attempts.push(c.attempt);
        states.push(state);
        delays.push(delay);
        messages.push(message);
        refunds.push(refund);
    }
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    crate::db::query_scalar(COMPLETE_BATCH)
        .bind(&ids)
        .bind(&attempts)
        .bind(&states)
        .bind(&delays)
        .bind(&messages)
        .bind(&refunds)
        .fetch_all(pool)
        .await
}

/// Error from [`complete_in`].
#[derive(Debug, thiserror::Error)]
pub enum FencedCompletionError {
    /// The job is no longer this attempt's: its lease was rescued, or it was cancelled.
    /// Roll the caller's transaction back.
    #[error("job {id} attempt {attempt} is no longer running under this worker")]
    Fenced {
        /// Job id.
        id: i64,
        /// The stale attempt.
        attempt: i32,
    },
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Marks the job completed inside the caller's transaction, so the job's success commits
/// (or rolls back) together with the caller's own writes, e.g. a credit capture.
pub async fn complete_in(
    conn: &mut PgConnection,
    id: i64,
    attempt: i32,
) -> Result<(), FencedCompletionError> {
    let done = crate::db::query(COMPLETE_ONE)
        .bind(id)
        .bind(attempt)
        .execute(conn)
        .await?;
    if done.rows_affected() == 1 {
        Ok(())
    } else {
        Err(FencedCompletionError::Fenced { id, attempt })
    }
}
