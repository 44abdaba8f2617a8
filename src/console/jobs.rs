//! The Jobs page's listing: jobs matching a filter, newest first, in pages keyed by id.
//!
//! Every page walks the primary key backwards inside a window of at most [`SCAN_WINDOW`]
//! ids below the page's start, whatever the filter: a selective filter (a rare kind, a
//! text search in payloads and errors) can therefore never scan the whole table for one
//! page. A window that yields fewer rows than a page offers "older" from where the window
//! ended. Bulk actions act on at most [`BULK_MAX`] matching jobs per confirmation.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;

use crate::queue::JobState;

const MAX_ID: &str = "SELECT coalesce(max(id), 0) FROM genq.jobs";

/// A page of jobs: the primary key walked backwards from `$1` (exclusive) down to `$2`.
/// Bulk actions take their ids from the same statement over the whole table.
const PAGE: &str = r#"
SELECT id, queue, kind, state, attempt, max_attempts, run_at, created_at, finished_at, worker_id,
       left(errors -> -1 ->> 'error', 200) AS last_error
  FROM genq.jobs
 WHERE id < $1 AND id >= $2
   AND ($3::text IS NULL OR queue = $3)
   AND ($4::text IS NULL OR kind = $4)
   AND ($5::genq.job_state IS NULL OR state = $5)
   AND ($6::timestamptz IS NULL OR created_at >= $6)
   AND ($7::timestamptz IS NULL OR created_at < $7)
   AND ($8::text IS NULL OR strpos(lower(payload::text), lower($8)) > 0
                         OR strpos(lower(errors::text), lower($8)) > 0)
 ORDER BY id DESC
 LIMIT $9
"#;

/// Ids scanned per page at most.
pub const SCAN_WINDOW: i64 = 100_000;
/// Jobs one bulk action touches at most.
pub const BULK_MAX: i64 = 1_000;

/// What the operator filters on; every field optional.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobFilter {
    /// Exact queue.
    pub queue: Option<String>,
    /// Exact kind.
    pub kind: Option<String>,
    /// Exact state.
    pub state: Option<JobState>,
    /// Text (case-insensitive) in the payload or the error history.
    pub text: Option<String>,
    /// Created at or after.
    pub from: Option<DateTime<Utc>>,
    /// Created before.
    pub to: Option<DateTime<Utc>>,
}

/// One line of the list.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct JobLine {
    /// Id.
    pub id: i64,
    /// Queue.
    pub queue: String,
    /// Kind.
    pub kind: String,
    /// State.
    pub state: JobState,
    /// Attempts started.
    pub attempt: i32,
    /// Attempt limit.
    pub max_attempts: i32,
    /// Next start.
    pub run_at: DateTime<Utc>,
    /// Enqueue time.
    pub created_at: DateTime<Utc>,
    /// Final time.
    pub finished_at: Option<DateTime<Utc>>,
    /// Worker.
    pub worker_id: Option<String>,
    /// The last error, shortened.
    pub last_error: Option<String>,
}

/// A page and where the next one starts.
#[derive(Debug, Clone)]
pub struct JobPage {
    /// The jobs, newest first.
    pub jobs: Vec<JobLine>,
    /// The `before` of the next (older) page; `None` at the start of the table.
    pub older: Option<i64>,
}

async fn select(
    pool: &PgPool,
    filter: &JobFilter,
    upper: i64,
    lower: i64,
    limit: i64,
) -> Result<Vec<JobLine>, sqlx::Error> {
    crate::db::query_as(PAGE)
        .bind(upper)
        .bind(lower)
        .bind(filter.queue.as_deref())
        .bind(filter.kind.as_deref())
        .bind(filter.state)
        .bind(filter.from)
        .bind(filter.to)
        .bind(filter.text.as_deref())
        .bind(limit)
        .fetch_all(pool)
        .await
}

async fn upper(pool: &PgPool, before: Option<i64>) -> Result<i64, sqlx::Error> {
    match before {
        Some(b) => Ok(b),
        None => Ok(crate::db::query_scalar::<i64>(MAX_ID)
            .fetch_one(pool)
            .await?
            + 1),
    }
}

/// The page of jobs matching `filter` below id `before` (newest first when `None`).
pub async fn page(
    pool: &PgPool,
    filter: &JobFilter,
    before: Option<i64>,
    limit: i64,
) -> Result<JobPage, sqlx::Error> {
    let upper = upper(pool, before).await?;
    let lower = (upper - SCAN_WINDOW).max(1);
    let jobs = select(pool, filter, upper, lower, limit).await?;
    let older = if jobs.len() as i64 == limit {
        jobs.last().map(|j| j.id)
    } else if lower > 1 {
        Some(lower)
    } else {
        None
    };
    Ok(JobPage { jobs, older })
}

/// The ids a bulk action on `filter` touches: the newest [`BULK_MAX`] matches.
pub async fn bulk_ids(pool: &PgPool, filter: &JobFilter) -> Result<Vec<i64>, sqlx::Error> {
    let lines = select(pool, filter, i64::MAX, 0, BULK_MAX).await?;
    Ok(lines.into_iter().map(|j| j.id).collect())
}
