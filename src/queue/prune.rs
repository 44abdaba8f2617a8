//! Deleting finished jobs after their retention age, in small batches so that no statement
//! holds locks or writes WAL for long. What remains of a job after pruning is nothing: the
//! operational record the privacy policies allow is kept only for the configured age.
//!
//! Each batch is one range scan of `jobs_finished_idx (state, finished_at)` (migration
//! 0019) for one final state, oldest first, starting where the previous batch of the run
//! ended (keyset): a batch never walks the index entries of rows deleted before it, nor
//! the rows of another state (discarded jobs are kept longer than completed ones), so a
//! run's cost is proportional to what it deletes (decision 53).

use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// One batch of one state: `$1` state, `$2` age (s), `$3` keyset start (NULL: from the
/// oldest), `$4` batch.
/// Returns how many rows went and the newest `finished_at` among them.
const PRUNE: &str = r#"
WITH doomed AS (
    SELECT id, finished_at FROM genq.jobs
     WHERE state = $1::genq.job_state
       AND finished_at >= coalesce($3, '-infinity'::timestamptz)
       AND finished_at < now() - make_interval(secs => $2)
     ORDER BY finished_at
     LIMIT $4
), gone AS (
    DELETE FROM genq.jobs j USING doomed d WHERE j.id = d.id RETURNING d.finished_at
)
SELECT count(*), max(finished_at) FROM gone
"#;

/// Deletes finished jobs older than their age (`completed_after` for completed and
/// cancelled jobs, `discarded_after` for discarded ones), `batch` rows per statement,
/// until none is left or `budget` is spent (the next run goes on). Returns how many rows
/// were deleted.
pub async fn prune(
    pool: &PgPool,
    completed_after: Duration,
    discarded_after: Duration,
    batch: u32,
    budget: Duration,
) -> Result<u64, sqlx::Error> {
    let started = Instant::now();
    let mut total = 0;
    for (state, age) in [
        ("completed", completed_after),
        ("cancelled", completed_after),
        ("discarded", discarded_after),
    ] {
        let mut from: Option<DateTime<Utc>> = None;
        loop {
            let (deleted, newest): (i64, Option<DateTime<Utc>>) = crate::db::query_as(PRUNE)
                .bind(state)
                .bind(age.as_secs_f64())
                .bind(from)
                .bind(i64::from(batch))
                .fetch_one(pool)
                .await?;
            total += deleted as u64;
            if deleted < i64::from(batch) || started.elapsed() >= budget {
                break;
            }
            // Rows finished in the same instant as the newest one may remain: start there.
            from = newest.or(from);
        }
        if started.elapsed() >= budget {
            break;
        }
    }
    Ok(total)
}
