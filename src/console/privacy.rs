//! The Privacy page's queries: blobs due and overdue for deletion by role (through
//! `blobs_due_idx`), the latest deletions (through `deletion_log_at_idx`) and the latest
//! erasure and export requests. The invariants come from `retention::check`.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

// Overdue: due more than an hour ago and still there (the sweep runs far more often).
const DUE: &str = r#"
SELECT role::text AS role,
       count(*) FILTER (WHERE expires_at <= now()) AS due,
       count(*) FILTER (WHERE expires_at <= now() - interval '1 hour') AS overdue,
       count(*) FILTER (WHERE expires_at > now() AND expires_at <= now() + interval '1 day') AS due_within_day
  FROM genq.blobs
 WHERE deleted_at IS NULL AND expires_at IS NOT NULL AND expires_at <= now() + interval '1 day'
 GROUP BY role ORDER BY role
"#;

const DELETIONS: &str = r#"
SELECT id, at, subject, outcome, policy, role::text AS role, store
  FROM genq.deletion_log ORDER BY at DESC LIMIT $1
"#;

const REQUESTS: &str = r#"
(SELECT 'erasure' AS kind, id, coalesce(user_id, '(erased)') AS user_id, requested_at,
        completed_at, due_at AS due_or_expires
   FROM genq.erasure_requests ORDER BY id DESC LIMIT $1)
UNION ALL
(SELECT 'export', id, user_id, requested_at, completed_at, expires_at
   FROM genq.export_requests ORDER BY id DESC LIMIT $1)
ORDER BY requested_at DESC
"#;

/// Blobs of one role due for deletion.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DueLine {
    /// Blob role.
    pub role: String,
    /// Due now.
    pub due: i64,
    /// Due for more than an hour.
    pub overdue: i64,
    /// Due within the next day.
    pub due_within_day: i64,
}

/// One logged deletion (no user id or key on the page).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeletionLine {
    /// Id.
    pub id: i64,
    /// When.
    pub at: DateTime<Utc>,
    /// blob, input, webhook_body.
    pub subject: String,
    /// deleted, superseded, scrubbed.
    pub outcome: String,
    /// The policy that caused it.
    pub policy: String,
    /// Blob role.
    pub role: Option<String>,
    /// Store.
    pub store: Option<String>,
}

/// An erasure or export request.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RequestLine {
    /// erasure or export.
    pub kind: String,
    /// Id.
    pub id: i64,
    /// The user (gone once an erasure completes).
    pub user_id: String,
    /// When asked.
    pub requested_at: DateTime<Utc>,
    /// When done.
    pub completed_at: Option<DateTime<Utc>>,
    /// Erasure: due by; export: the link's expiry.
    pub due_or_expires: Option<DateTime<Utc>>,
}

/// Due and overdue blobs by role.
pub async fn due(pool: &PgPool) -> Result<Vec<DueLine>, sqlx::Error> {
    crate::db::query_as(DUE).fetch_all(pool).await
}

/// The latest `limit` deletions.
pub async fn deletions(pool: &PgPool, limit: i64) -> Result<Vec<DeletionLine>, sqlx::Error> {
    crate::db::query_as(DELETIONS)
        .bind(limit)
        .fetch_all(pool)
        .await
}

/// The latest `limit` erasure and `limit` export requests, newest first.
pub async fn requests(pool: &PgPool, limit: i64) -> Result<Vec<RequestLine>, sqlx::Error> {
    crate::db::query_as(REQUESTS)
        .bind(limit)
        .fetch_all(pool)
        .await
}
