//! The console's audit (`genq.console_audit`): one row per action, written after the action
//! with the number of rows it affected, read newest first by the Audit page.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

const RECORD: &str = r#"
INSERT INTO genq.console_audit (actor, action, target, affected_count, detail)
VALUES ($1, $2, $3, $4, $5)
"#;

// Keyset on the primary key: newest first, `before` pages back.
const LIST: &str = r#"
SELECT id, at, actor, action, target, affected_count, detail
  FROM genq.console_audit
 WHERE id < $1
 ORDER BY id DESC
 LIMIT $2
"#;

/// One audited action.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct AuditRow {
    /// Id.
    pub id: i64,
    /// When.
    pub at: DateTime<Utc>,
    /// Role and session tag.
    pub actor: String,
    /// What (e.g. `queue.pause`).
    pub action: String,
    /// On what (a queue, a job id, a filter).
    pub target: Option<String>,
    /// Rows affected.
    pub affected_count: i64,
    /// Parameters (a reason, a cap, a filter).
    pub detail: serde_json::Value,
}

/// Writes one audit row.
pub async fn record(
    pool: &PgPool,
    actor: &str,
    action: &str,
    target: Option<&str>,
    affected: i64,
    detail: serde_json::Value,
) -> Result<(), sqlx::Error> {
    crate::db::query(RECORD)
        .bind(actor)
        .bind(action)
        .bind(target)
        .bind(affected)
        .bind(detail)
        .execute(pool)
        .await?;
    Ok(())
}

/// A page of the audit, newest first, older than `before`.
pub async fn list(
    pool: &PgPool,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<AuditRow>, sqlx::Error> {
    crate::db::query_as(LIST)
        .bind(before.unwrap_or(i64::MAX))
        .bind(limit)
        .fetch_all(pool)
        .await
}
