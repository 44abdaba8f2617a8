//! What a job handler is: a [`Worker`] for one kind with typed (serde) arguments, returning
//! a [`JobError`] that says what the executor should do next.

use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use sqlx::{PgConnection, PgPool};

use crate::queue::complete::{complete_in, FencedCompletionError};
use crate::queue::job_control::ControlError;

/// How an attempt failed, and therefore what happens next.
#[derive(Debug, Clone, PartialEq)]
pub enum JobError {
    /// Retry: after `after` if given (e.g. a provider's Retry-After), else after the
    /// configured exponential backoff. Spends an attempt; out of attempts means discarded.
    Retry {
        /// Recorded in the job's error history.
        message: String,
        /// Explicit delay before the next attempt.
        after: Option<Duration>,
    },
    /// Never retry: discard now (validation errors, moderation, bad input).
    Permanent {
        /// Recorded in the job's error history.
        message: String,
    },
    /// Not a failure: run again after `after` without spending an attempt (e.g. a
    /// provider's circuit is open).
    Snooze {
        /// Delay before the job is claimable again.
        after: Duration,
    },
    /// Not the job's failure: the infrastructure went away under it (the database
    /// connection was lost, the server restarted or failed over). The job is handed back
    /// and runs again after a short fixed delay, without spending an attempt or growing its
    /// backoff; the outcome waits in the completer until the database takes it.
    Interrupted {
        /// What was lost, for the log (not the job's error history).
        message: String,
    },
}

impl JobError {
    /// A retryable failure with backoff.
    pub fn retry(message: impl Into<String>) -> Self {
        Self::Retry {
            message: message.into(),
            after: None,
        }
    }

    /// A retryable failure with an explicit delay.
    pub fn retry_after(message: impl Into<String>, after: Duration) -> Self {
        Self::Retry {
            message: message.into(),
            after: Some(after),
        }
    }

    /// A permanent failure.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self::Permanent {
            message: message.into(),
        }
    }

    /// A snooze.
    pub fn snooze(after: Duration) -> Self {
        Self::Snooze { after }
    }

    /// An interruption by the infrastructure (not the job's failure).
    pub fn interrupted(message: impl Into<String>) -> Self {
        Self::Interrupted {
            message: message.into(),
        }
    }
}

impl std::fmt::Display for JobError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Retry { message, .. } => write!(f, "retryable: {message}"),
            Self::Permanent { message } => write!(f, "permanent: {message}"),
            Self::Snooze { after } => write!(f, "snoozed for {after:?}"),
            Self::Interrupted { message } => write!(f, "interrupted: {message}"),
        }
    }
}

impl JobError {
    /// An error with no conversion of its own (e.g. a domain error that wraps a database
    /// error as its `source()`): a lost database connection anywhere in its chain interrupts
    /// the attempt ([`JobError::Interrupted`]); anything else is a retryable failure. Call
    /// it explicitly (`map_err(JobError::failure)`): there is no blanket `From`, so a `?`
    /// only compiles for errors whose conversion says what the executor does with them.
    pub fn failure<E: std::error::Error + Send + Sync + 'static>(err: E) -> Self {
        let interrupted = connection_lost(&err);
        if interrupted {
            crate::db::note_connection_loss();
        }
        let message = format!("{:#}", anyhow::Error::from(err));
        if interrupted {
            Self::interrupted(message)
        } else {
            Self::retry(message)
        }
    }
}

/// A database error: a lost connection (see [`crate::db::is_connection_loss`]) interrupts
/// the attempt; any other (a constraint, a serialization failure, a bug in a statement) is
/// a retryable failure, so a transient fault heals and a persistent one spends the job's
/// attempts and is discarded with its error history.
impl From<sqlx::Error> for JobError {
    fn from(err: sqlx::Error) -> Self {
        Self::failure(err)
    }
}

/// A fenced completion: `Fenced` (another attempt owns the job) is a retry, so the
/// transaction is dropped and the owner settles; a database error as [`From<sqlx::Error>`].
impl From<FencedCompletionError> for JobError {
    fn from(err: FencedCompletionError) -> Self {
        Self::failure(err)
    }
}

/// A job-control error (cancel, retry, snooze of another job): as a database error.
impl From<ControlError> for JobError {
    fn from(err: ControlError) -> Self {
        Self::failure(err)
    }
}

/// Whether `err` is, wraps or was caused by a lost database connection
/// ([`crate::db::is_connection_loss`]). The classification every conversion of a database
/// error into a [`JobError`] goes through. Engine errors that wrap a sqlx error
/// transparently (so their `source()` skips it) are unwrapped by type.
pub fn connection_lost(err: &(dyn std::error::Error + 'static)) -> bool {
    use crate::db::is_connection_loss;
    if let Some(FencedCompletionError::Database(e)) = err.downcast_ref() {
        return is_connection_loss(e);
    }
    if let Some(ControlError::Database(e)) = err.downcast_ref() {
        return is_connection_loss(e);
    }
    std::iter::successors(Some(err), |e| e.source()).any(|e| {
        e.downcast_ref::<sqlx::Error>()
            .is_some_and(is_connection_loss)
    })
}

/// What a handler knows about the attempt it runs.
#[derive(Debug, Clone)]
pub struct JobContext {
    /// Job id.
    pub id: i64,
    /// This attempt (1-based). Together with `id`, the fencing token.
    pub attempt: i32,
    /// Attempt limit.
    pub max_attempts: i32,
    /// Queue.
    pub queue: String,
    /// Kind.
    pub kind: String,
    /// The daemon's pool, for the handler's own queries.
    pub pool: PgPool,
    recorded: Arc<AtomicBool>,
}

impl JobContext {
    pub(crate) fn new(
        id: i64,
        attempt: i32,
        max_attempts: i32,
        queue: String,
        kind: String,
        pool: PgPool,
    ) -> Self {
        Self {
            id,
            attempt,
            max_attempts,
            queue,
            kind,
            pool,
            recorded: Arc::new(AtomicBool::new(false)),
        }
    }

    /// Records this job's completion inside the caller's transaction, so it commits
    /// together with the handler's own writes (e.g. a credit capture). Fails with
    /// [`FencedCompletionError::Fenced`] if this attempt no longer owns the job; the caller
    /// must then roll back. Call it last before commit and return `Ok(())` after commit.
    /// `?` turns a fenced error into a retry (`From<FencedCompletionError> for JobError`): the transaction is
    /// dropped, so rolled back, and the attempt that now owns the job settles it.
    pub async fn complete_in(&self, conn: &mut PgConnection) -> Result<(), FencedCompletionError> {
        complete_in(conn, self.id, self.attempt).await?;
        self.recorded.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Keeps the limit slot this attempt holds (fair queues, docs/fairness.md) past the
    /// job's end, inside the caller's transaction, and returns its id for the caller to
    /// store with the slot's new owner; that owner frees it later with
    /// [`crate::queue::fairness::release_in`]. `None`: the job holds no slot (or this
    /// attempt no longer owns the job). Call it before [`JobContext::complete_in`].
    pub async fn keep_slot_in(&self, conn: &mut PgConnection) -> Result<Option<i64>, sqlx::Error> {
        crate::queue::fairness::keep_in(conn, self.id, self.attempt).await
    }

    /// Whether [`JobContext::complete_in`] succeeded in this attempt.
    pub fn completion_recorded(&self) -> bool {
        self.recorded.load(Ordering::SeqCst)
    }

    /// Whether this is the last attempt the job has.
    pub fn is_last_attempt(&self) -> bool {
        self.attempt >= self.max_attempts
    }
}

/// A handler for one job kind.
pub trait Worker: Send + Sync + 'static {
    /// The payload type; a payload that does not deserialize discards the job at once.
    type Args: DeserializeOwned + Send + 'static;

    /// The kind this worker handles.
    fn kind(&self) -> &str;

    /// Attempt time limit, overriding configuration. Defaults to none.
    fn timeout(&self) -> Option<Duration> {
        None
    }

    /// Runs one attempt.
    fn work(
        &self,
        ctx: JobContext,
        args: Self::Args,
    ) -> impl Future<Output = Result<(), JobError>> + Send;
}

/// A boxed attempt.
pub type AttemptFuture = Pin<Box<dyn Future<Output = Result<(), JobError>> + Send>>;

/// A [`Worker`] with its argument type erased, as the executor sees it.
pub trait ErasedWorker: Send + Sync {
    /// Decodes the payload and starts the attempt; a decode error is returned as text.
    fn start(&self, ctx: JobContext, payload: serde_json::Value) -> Result<AttemptFuture, String>;
    /// The worker's own timeout.
    fn timeout(&self) -> Option<Duration>;
}

struct Erased<W>(Arc<W>);

impl<W: Worker> ErasedWorker for Erased<W> {
    fn start(&self, ctx: JobContext, payload: serde_json::Value) -> Result<AttemptFuture, String> {
        let args: W::Args = serde_json::from_value(payload).map_err(|e| e.to_string())?;
        let worker = self.0.clone();
        Ok(Box::pin(async move { worker.work(ctx, args).await }))
    }

    fn timeout(&self) -> Option<Duration> {
        self.0.timeout()
    }
}

/// A worker made from a closure, for small handlers and tests.
pub struct FnWorker<A, F> {
    kind: String,
    f: F,
    _args: PhantomData<fn(A)>,
}

impl<A, F, Fut> Worker for FnWorker<A, F>
where
    A: DeserializeOwned + Send + 'static,
    F: Fn(JobContext, A) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<(), JobError>> + Send + 'static,
{
    type Args = A;

    fn kind(&self) -> &str {
        &self.kind
    }

    fn work(&self, ctx: JobContext, args: A) -> impl Future<Output = Result<(), JobError>> + Send {
        (self.f)(ctx, args)
    }
}

/// Handlers by kind.
#[derive(Default, Clone)]
pub struct Registry {
    workers: HashMap<String, Arc<dyn ErasedWorker>>,
    /// Periodic jobs and hooks the product registers with its kinds (`daemon::hooks`).
    pub(crate) hooks: super::hooks::Hooks,
}

impl Registry {
    /// An empty registry (the daemon adds the built-in kinds itself).
    pub fn new() -> Self {
        Self::default()
    }

    /// Registers a worker for its kind, replacing any earlier one.
    pub fn register<W: Worker>(&mut self, worker: W) -> &mut Self {
        let kind = worker.kind().to_string();
        self.workers
            .insert(kind, Arc::new(Erased(Arc::new(worker))));
        self
    }

    /// Registers a closure for `kind`.
    ///
    /// ```
    /// let mut registry = genq::Registry::new();
    /// registry.register_fn("email.send", |_ctx, args: serde_json::Value| async move {
    ///     let _ = args;
    ///     Ok(())
    /// });
    /// assert!(registry.contains("email.send"));
    /// ```
    pub fn register_fn<A, F, Fut>(&mut self, kind: impl Into<String>, f: F) -> &mut Self
    where
        A: DeserializeOwned + Send + 'static,
        F: Fn(JobContext, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), JobError>> + Send + 'static,
    {
        self.register(FnWorker {
            kind: kind.into(),
            f,
            _args: PhantomData,
        })
    }

    /// The handler of `kind`.
    pub fn get(&self, kind: &str) -> Option<Arc<dyn ErasedWorker>> {
        self.workers.get(kind).cloned()
    }

    /// Whether `kind` has a handler.
    pub fn contains(&self, kind: &str) -> bool {
        self.workers.contains_key(kind)
    }

    /// Registered kinds, sorted.
    pub fn kinds(&self) -> Vec<String> {
        let mut kinds: Vec<String> = self.workers.keys().cloned().collect();
        kinds.sort();
        kinds
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn io_reset() -> sqlx::Error {
        sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset))
    }

    /// A domain error that names its database cause as `source()`.
    #[derive(Debug, thiserror::Error)]
    #[error("copying output")]
    struct Wrapped(#[source] sqlx::Error);

    #[test]
    fn a_lost_connection_interrupts_instead_of_failing() {
        for err in [
            io_reset(),
            sqlx::Error::PoolTimedOut,
            sqlx::Error::PoolClosed,
        ] {
            assert!(matches!(JobError::from(err), JobError::Interrupted { .. }));
        }
        let fenced_db = FencedCompletionError::Database(io_reset());
        assert!(matches!(
            JobError::from(fenced_db),
            JobError::Interrupted { .. }
        ));
        let control_db = ControlError::Database(sqlx::Error::PoolTimedOut);
        assert!(matches!(
            JobError::from(control_db),
            JobError::Interrupted { .. }
        ));
        let wrapped = JobError::failure(Wrapped(io_reset()));
        assert!(
            matches!(&wrapped, JobError::Interrupted { message } if message.starts_with("copying output")),
            "{wrapped:?}"
        );
    }

    #[test]
    fn other_errors_stay_retryable_failures() {
        assert!(matches!(
            JobError::from(sqlx::Error::RowNotFound),
            JobError::Retry { after: None, .. }
        ));
        let fenced = FencedCompletionError::Fenced { id: 1, attempt: 2 };
        assert!(matches!(JobError::from(fenced), JobError::Retry { .. }));
        // An I/O error that is not the database's (a provider's socket) is the job's failure.
        let provider_io = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        assert!(matches!(
            JobError::failure(provider_io),
            JobError::Retry { .. }
        ));
        assert!(matches!(
            JobError::failure(Wrapped(sqlx::Error::RowNotFound)),
            JobError::Retry { .. }
        ));
    }
}
