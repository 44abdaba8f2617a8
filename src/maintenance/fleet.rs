//! The fleet as operators see it: every daemon upserts a row in `genq.daemons` at each
//! statistics sample (version, queues, jobs running, draining) and deletes it on a clean
//! shutdown, so the console can list who is alive without asking each daemon. The daemon
//! that wins the sample also folds the sample into `genq.queue_history` (one row per queue
//! per minute, 24 hours kept) for the console's charts.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

const BEAT: &str = r#"
INSERT INTO genq.daemons AS d (worker_id, version, queues, running, draining)
VALUES ($1, $2, $3, $4, $5)
ON CONFLICT (worker_id) DO UPDATE
   SET version = EXCLUDED.version, queues = EXCLUDED.queues, running = EXCLUDED.running,
       draining = EXCLUDED.draining, heartbeat_at = now()
"#;

const LEAVE: &str = "DELETE FROM genq.daemons WHERE worker_id = $1";

const RECORD_HISTORY: &str = "SELECT genq.record_queue_history()";

const DAEMONS: &str = r#"
SELECT worker_id, version, queues, running, draining, started_at, heartbeat_at,
       extract(epoch FROM now() - heartbeat_at)::float8 AS silent_secs
  FROM genq.daemons ORDER BY worker_id
"#;

// The primary key (minute, queue) serves the range.
const HISTORY: &str = r#"
SELECT minute, queue, available, running, retryable, completed, discarded
  FROM genq.queue_history
 WHERE minute >= date_trunc('minute', now()) - make_interval(mins => $1)
 ORDER BY minute, queue
"#;

/// One daemon's last report.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct DaemonRow {
    /// Its worker id.
    pub worker_id: String,
    /// The genq version it runs.
    pub version: String,
    /// The queues it works.
    pub queues: Vec<String>,
    /// Jobs it ran at its last report.
    pub running: i32,
    /// Whether it has stopped claiming.
    pub draining: bool,
    /// When it first reported.
    pub started_at: DateTime<Utc>,
    /// Its last report.
    pub heartbeat_at: DateTime<Utc>,
    /// Seconds since its last report.
    pub silent_secs: f64,
}

/// One queue in one minute.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct HistoryRow {
    /// The minute.
    pub minute: DateTime<Utc>,
    /// The queue.
    pub queue: String,
    /// Due jobs waiting at the minute's last sample.
    pub available: i64,
    /// Jobs running then.
    pub running: i64,
    /// Jobs waiting for a retry then.
    pub retryable: i64,
    /// Jobs completed in the minute.
    pub completed: i64,
    /// Jobs discarded in the minute.
    pub discarded: i64,
}

/// Reports this daemon alive.
pub async fn beat(
    pool: &PgPool,
    worker_id: &str,
    queues: &[String],
    running: usize,
    draining: bool,
) -> Result<(), sqlx::Error> {
    crate::db::query(BEAT)
        .bind(worker_id)
        .bind(env!("CARGO_PKG_VERSION"))
        .bind(queues)
        .bind(i32::try_from(running).unwrap_or(i32::MAX))
        .bind(draining)
        .execute(pool)
        .await?;
    Ok(())
}

/// Removes this daemon's row (clean shutdown).
pub async fn leave(pool: &PgPool, worker_id: &str) -> Result<(), sqlx::Error> {
    crate::db::query(LEAVE)
        .bind(worker_id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Folds the latest sample into the per-minute history (the sample's winner calls it).
pub async fn record_history(pool: &PgPool) -> Result<i64, sqlx::Error> {
    crate::db::query_scalar(RECORD_HISTORY)
        .fetch_one(pool)
        .await
}

/// Every daemon that reported in the last hour.
pub async fn daemons(pool: &PgPool) -> Result<Vec<DaemonRow>, sqlx::Error> {
    crate::db::query_as(DAEMONS).fetch_all(pool).await
}

/// The history of the last `minutes` minutes, oldest first.
pub async fn history(pool: &PgPool, minutes: i32) -> Result<Vec<HistoryRow>, sqlx::Error> {
    crate::db::query_as(HISTORY)
        .bind(minutes)
        .fetch_all(pool)
        .await
}
