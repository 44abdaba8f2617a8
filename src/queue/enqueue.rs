//! Enqueueing from Rust. Both paths call the SQL API (`genq.enqueue`, `genq.enqueue_many`),
//! so Rust, TypeScript and plain SQL callers share one implementation of unique keys and
//! wake-ups. Bulk enqueue binds one typed array per column (`genq.enqueue_many(text[],
//! jsonb[], ...)`, migration 0018) rather than one JSON document: Postgres reads each
//! payload once instead of parsing a document and taking it apart again (decision 52).
//! A large batch that needs none of `genq.enqueue_many`'s own work (no unique keys) is
//! copied instead ([`super::enqueue_copy`], decision 55): the table's checks and its
//! intake trigger hold the same rules for copied rows.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};

use super::enqueue_copy::{copy_jobs, copy_shape};

/// `genq.enqueue(...)`: one job, inside the executor's transaction.
const ENQUEUE: &str = "SELECT genq.enqueue($1, $2, $3, coalesce($4, now()), $5, $6, $7, $8, $9)";
/// `genq.enqueue_many(text[], jsonb[], ...)`: many jobs in one statement, one array per
/// column (the casts pick the array overload; `genq.enqueue_many(jsonb)` delegates to it).
const ENQUEUE_MANY: &str = "SELECT genq.enqueue_many($1::text[], $2::jsonb[], $3::text[], \
     $4::timestamptz[], $5::int4[], $6::int4[], $7::text[], $8::text[], $9::text[])";

/// A job payload type with a fixed kind, for typed enqueueing and typed handlers.
pub trait JobArgs: Serialize {
    /// The job kind, e.g. `"generation.submit"`.
    const KIND: &'static str;
}

/// A job to enqueue, built with chained options.
///
/// ```
/// let job = genq::NewJob::new("noop", serde_json::json!({"n": 1}))
///     .queue("default")
///     .priority(-1)
///     .unique_key("noop:1");
/// assert_eq!(job.kind, "noop");
/// ```
#[derive(Debug, Clone, Serialize)]
pub struct NewJob {
    /// Job kind; selects the handler.
    pub kind: String,
    /// JSON payload handed to the handler.
    pub payload: serde_json::Value,
    /// Queue. Defaults to `default`.
    pub queue: String,
    /// Earliest start. Defaults to now.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_at: Option<DateTime<Utc>>,
    /// Lower runs first. Defaults to 0.
    pub priority: i32,
    /// Attempts before the job is discarded. Defaults to 20.
    pub max_attempts: i32,
    /// While a job with this key is not final, enqueueing another returns the existing id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unique_key: Option<String>,
    /// Who the job is for (e.g. a user id): a fair queue shares its claims out across keys
    /// and limits each key (docs/fairness.md). Ignored by queues that are not fair.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fairness_key: Option<String>,
    /// A group whose limit the job counts against while it runs (fair queues).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit_group: Option<String>,
}

impl NewJob {
    /// A job of `kind` with `payload` and default options.
    pub fn new(kind: impl Into<String>, payload: serde_json::Value) -> Self {
        Self {
            kind: kind.into(),
            payload,
            queue: "default".into(),
            run_at: None,
            priority: 0,
            max_attempts: 20,
            unique_key: None,
            fairness_key: None,
            limit_group: None,
        }
    }

    /// A job from typed arguments.
    pub fn from_args<A: JobArgs>(args: &A) -> Result<Self, serde_json::Error> {
        Ok(Self::new(A::KIND, serde_json::to_value(args)?))
    }

    /// Sets the queue.
    pub fn queue(mut self, queue: impl Into<String>) -> Self {
        self.queue = queue.into();
        self
    }

    /// Sets the earliest start.
    pub fn run_at(mut self, at: DateTime<Utc>) -> Self {
        self.run_at = Some(at);
        self
    }

    /// Sets the priority (lower runs first).
    pub fn priority(mut self, priority: i32) -> Self {
        self.priority = priority;
        self
    }

    /// Sets the attempt limit.
    pub fn max_attempts(mut self, n: i32) -> Self {
        self.max_attempts = n;
        self
    }

    /// Sets the unique key.
    pub fn unique_key(mut self, key: impl Into<String>) -> Self {
        self.unique_key = Some(key.into());
        self
    }

    /// Sets the fairness key.
    pub fn fairness_key(mut self, key: impl Into<String>) -> Self {
        self.fairness_key = Some(key.into());
        self
    }

    /// Sets the limit group.
    pub fn limit_group(mut self, group: impl Into<String>) -> Self {
        self.limit_group = Some(group.into());
        self
    }
}

/// Enqueues jobs. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Client {
    pool: PgPool,
}

impl Client {
    /// A client over a pool (for enqueues outside any transaction).
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Enqueues one job in its own transaction. Returns its id (or the id of the
    /// non-final job already holding its unique key).
    pub async fn enqueue(&self, job: &NewJob) -> Result<i64, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        enqueue_in(&mut conn, job).await
    }

    /// Enqueues many jobs in one statement. Returns how many were inserted (jobs whose
    /// unique key is held are skipped).
    pub async fn enqueue_many(&self, jobs: &[NewJob]) -> Result<i64, sqlx::Error> {
        let mut conn = self.pool.acquire().await?;
        enqueue_many_in(&mut conn, jobs).await
    }
}

/// Enqueues one job on the caller's connection or transaction: if the transaction rolls
/// back, the job never existed.
///
/// ```no_run
/// # async fn f(pool: sqlx::PgPool) -> Result<(), sqlx::Error> {
/// let mut tx = genq::db::begin(&pool).await?;
/// // ... the caller's own writes ...
/// let id = genq::queue::enqueue::enqueue_in(&mut tx, &genq::NewJob::new("noop", serde_json::json!({}))).await?;
/// tx.commit().await?;
/// # let _ = id; Ok(()) }
/// ```
pub async fn enqueue_in(conn: &mut PgConnection, job: &NewJob) -> Result<i64, sqlx::Error> {
    crate::db::query_scalar(ENQUEUE)
        .bind(&job.kind)
        .bind(&job.payload)
        .bind(&job.queue)
        .bind(job.run_at)
        .bind(job.priority)
        .bind(job.max_attempts)
        .bind(&job.unique_key)
        .bind(&job.fairness_key)
        .bind(&job.limit_group)
        .fetch_one(conn)
        .await
}

/// Enqueues many jobs on the caller's connection or transaction, in one statement. Returns
/// how many were inserted: a job whose unique key is held by a non-final job, or by an
/// earlier job of the same batch, is skipped. Each queue that got a job due now is woken
/// once, at commit. A batch of at least [`super::enqueue_copy::COPY_MIN_JOBS`] jobs without
/// unique keys is written with `COPY`: same rules and result, faster (docs/benchmarks.md).
pub async fn enqueue_many_in(conn: &mut PgConnection, jobs: &[NewJob]) -> Result<i64, sqlx::Error> {
    match copy_shape(jobs) {
        Some(shape) => copy_jobs(conn, jobs, shape).await,
        None => enqueue_many_bound(conn, jobs).await,
    }
}

/// [`enqueue_many_in`] always as one `genq.enqueue_many` statement with bound arrays,
/// whatever the batch: what a batch with unique keys, or a small one, takes.
pub async fn enqueue_many_bound(
    conn: &mut PgConnection,
    jobs: &[NewJob],
) -> Result<i64, sqlx::Error> {
    crate::db::query_scalar(ENQUEUE_MANY)
        .bind(column(jobs, |j| j.kind.as_str()))
        .bind(column(jobs, |j| &j.payload))
        .bind(column(jobs, |j| j.queue.as_str()))
        .bind(optional_column(jobs, |j| j.run_at))
        .bind(column(jobs, |j| j.priority))
        .bind(column(jobs, |j| j.max_attempts))
        .bind(optional_column(jobs, |j| j.unique_key.as_deref()))
        .bind(optional_column(jobs, |j| j.fairness_key.as_deref()))
        .bind(optional_column(jobs, |j| j.limit_group.as_deref()))
        .fetch_one(conn)
        .await
}

/// One column of the batch, borrowed from the jobs.
fn column<'a, T>(jobs: &'a [NewJob], get: impl Fn(&'a NewJob) -> T) -> Vec<T> {
    jobs.iter().map(get).collect()
}

/// An optional column: NULL (every job takes the default) when no job sets it, so a batch
/// without unique keys sends one NULL rather than an array of them.
fn optional_column<'a, T>(
    jobs: &'a [NewJob],
    get: impl Fn(&'a NewJob) -> Option<T>,
) -> Option<Vec<Option<T>>> {
    jobs.iter()
        .any(|j| get(j).is_some())
        .then(|| column(jobs, get))
}
