//! The Webhooks page's query: the inbox newest first (all, orphans, or not yet processed),
//! paged by id inside a bounded window of ids like the jobs list (decision 45). Bodies are
//! never shown (they carry user data); their size is.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

const PAGE: &str = r#"
SELECT id, provider, received_at, generation_id, request_id, orphan, job_id, processed_at,
       octet_length(body) AS body_bytes
  FROM genq.webhook_events,
       (SELECT coalesce($1::int8, (SELECT max(id) + 1 FROM genq.webhook_events), 1) AS upper) t
 WHERE id < t.upper AND id >= t.upper - $2
   AND ($3 = 'all' OR ($3 = 'orphans' AND orphan) OR ($3 = 'unprocessed' AND processed_at IS NULL AND NOT orphan))
 ORDER BY id DESC LIMIT $4
"#;

/// Ids scanned per page at most.
pub const SCAN_WINDOW: i64 = 100_000;

/// One stored callback.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventLine {
    /// Id.
    pub id: i64,
    /// Provider.
    pub provider: String,
    /// When received.
    pub received_at: DateTime<Utc>,
    /// The generation it named.
    pub generation_id: Option<Uuid>,
    /// The request id it named.
    pub request_id: Option<String>,
    /// Whether no generation (or invoice) matched.
    pub orphan: bool,
    /// Its reconcile job.
    pub job_id: Option<i64>,
    /// When acted on.
    pub processed_at: Option<DateTime<Utc>>,
    /// Body size (0 once scrubbed).
    pub body_bytes: Option<i32>,
}

/// Events below id `before` (newest when `None`) matching `which` (`all`, `orphans`,
/// `unprocessed`).
pub async fn page(
    pool: &PgPool,
    which: &str,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<EventLine>, sqlx::Error> {
    crate::db::query_as(PAGE)
        .bind(before)
        .bind(SCAN_WINDOW)
        .bind(which)
        .bind(limit)
        .fetch_all(pool)
        .await
}
