//! How much is due and not yet deleted, by kind: the numbers behind
//! `genq_retention_due` / `genq_retention_overdue` and `genq privacy status`. The promise
//! holds while nothing is overdue. Every daemon runs this each sample interval, so each
//! part reads only due rows through a partial index (never every unscrubbed generation).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

/// Every kind the backlog reports, so a kind with nothing due reads 0, not absent.
pub const KINDS: &[&str] = &[
    "source",
    "reference",
    "output",
    "export",
    "input",
    "webhook_body",
    "erasure",
];

const BACKLOG: &str = r#"
SELECT role::text, count(*), count(*) FILTER (WHERE expires_at < now() - make_interval(secs => $1)), min(expires_at)
  FROM genq.blobs
 WHERE deleted_at IS NULL AND expires_at <= now()
 GROUP BY role
UNION ALL
SELECT 'input', count(*), count(*) FILTER (WHERE d.due_at < now() - make_interval(secs => $1)),
       min(d.due_at)
  FROM (SELECT g.finished_at + k.keep AS due_at
          FROM genq.generations g, (SELECT genq.policy_keep('inputs') AS keep) k
         WHERE g.scrubbed_at IS NULL AND g.finished_at IS NOT NULL
           AND g.finished_at <= now() - k.keep AND g.deleted_at IS NULL
        UNION ALL
        SELECT g.deleted_at FROM genq.generations g
         WHERE g.scrubbed_at IS NULL AND g.deleted_at IS NOT NULL
           AND g.state IN ('succeeded', 'failed', 'cancelled')) d
UNION ALL
SELECT 'webhook_body', count(*), count(*) FILTER (WHERE w.received_at + k.keep < now() - make_interval(secs => $1)),
       min(w.received_at + k.keep)
  FROM genq.webhook_events w, (SELECT genq.policy_keep('webhook_bodies') AS keep) k
 WHERE w.body IS NOT NULL AND w.received_at <= now() - k.keep
UNION ALL
SELECT 'erasure', count(*), count(*) FILTER (WHERE due_at < now()), min(due_at)
  FROM genq.erasure_requests WHERE completed_at IS NULL
"#;

/// One kind's backlog.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Backlog {
    /// `source`, `reference`, `output`, `export` (blobs), `input`, `webhook_body`, or
    /// `erasure` (pending requests).
    pub kind: String,
    /// Due and not yet done (for `erasure`: requests not completed).
    pub due: i64,
    /// Due for longer than the grace (for `erasure`: past the due date).
    pub overdue: i64,
    /// The earliest due date among them.
    pub oldest_due_at: Option<DateTime<Utc>>,
}

/// The backlog of every kind in [`KINDS`]; `overdue_after` is the grace before a due item
/// counts as overdue.
pub async fn backlog(pool: &PgPool, overdue_after: Duration) -> sqlx::Result<Vec<Backlog>> {
    let rows: Vec<(String, i64, i64, Option<DateTime<Utc>>)> = crate::db::query_as(BACKLOG)
        .bind(overdue_after.as_secs_f64())
        .fetch_all(pool)
        .await?;
    Ok(KINDS
        .iter()
        .map(|kind| {
            let row = rows.iter().find(|r| r.0 == *kind);
            Backlog {
                kind: kind.to_string(),
                due: row.map_or(0, |r| r.1),
                overdue: row.map_or(0, |r| r.2),
                oldest_due_at: row.and_then(|r| r.3),
            }
        })
        .collect())
}
