//! Deleting finished jobs after their retention age, in small batches so that no statement
//! holds locks or writes WAL for long. What remains of a job after pruning is nothing: the
//! operational record the privacy policies allow is kept only for the configured age.

use std::time::Duration;

use sqlx::PgPool;

const PRUNE: &str = r#"
DELETE FROM genq.jobs WHERE id IN (
    SELECT id FROM genq.jobs
     WHERE (state IN ('completed', 'cancelled') AND finished_at < now() - make_interval(secs => $1))
        OR (state = 'discarded' AND finished_at < now() - make_interval(secs => $2))
     LIMIT $3
)
"#;

/// Deletes finished jobs older than their age, `batch` rows per statement, at most
/// `max_batches` statements. Returns how many rows were deleted.
pub async fn prune(
    pool: &PgPool,
    completed_after: Duration,
    discarded_after: Duration,
    batch: u32,
    max_batches: u32,
) -> Result<u64, sqlx::Error> {
    let mut total = 0;
    for _ in 0..max_batches {
        let deleted = crate::db::query(PRUNE)
            .bind(completed_after.as_secs_f64())
            .bind(discarded_after.as_secs_f64())
            .bind(i64::from(batch))
            .execute(pool)
            .await?
            .rows_affected();
        total += deleted;
        if deleted < u64::from(batch) {
            break;
        }
    }
    Ok(total)
}
