//! Runs one attempt and turns whatever happened into an [`Outcome`]: success, a returned
//! error, a panic, a timeout, an unknown kind, or a payload that does not decode. Nothing a
//! handler does can take the worker down with it.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;

use super::handler::{ErasedWorker, JobContext, JobError};
use crate::daemon::config::BackoffConfig;
use crate::queue::backoff;
use crate::queue::claim::ClaimedJob;
use crate::queue::Outcome;

/// How long a job interrupted by the infrastructure waits before it is claimable again:
/// short and fixed (its outcome is written only once the database is back anyway).
pub const INTERRUPTED_DELAY: Duration = Duration::from_secs(1);

/// Runs `job` with `worker` (None: no handler for its kind). The attempt's time limit is
/// the operator's `[timeouts]` entry for the kind if any, else the worker's own
/// [`ErasedWorker::timeout`], else `default_timeout`.
pub async fn execute(
    job: ClaimedJob,
    worker: Option<Arc<dyn ErasedWorker>>,
    ctx: JobContext,
    configured_timeout: Option<Duration>,
    default_timeout: Duration,
    backoff_config: &BackoffConfig,
) -> Outcome {
    let Some(worker) = worker else {
        return Outcome::Discard {
            message: format!(
                "unknown job kind {:?}: no handler is registered for it",
                job.kind
            ),
        };
    };
    let timeout = configured_timeout
        .or_else(|| worker.timeout())
        .unwrap_or(default_timeout);
    let attempt = match worker.start(ctx.clone(), job.payload) {
        Ok(f) => f,
        Err(serde_error) => {
            return Outcome::Discard {
                message: format!(
                    "payload of job kind {:?} does not match its handler: {serde_error}",
                    job.kind
                ),
            }
        }
    };
    let failure = |message: String, after: Option<Duration>| {
        if job.attempt >= job.max_attempts {
            Outcome::Discard {
                message: format!(
                    "{message} (attempt {} of {}, no attempts left)",
                    job.attempt, job.max_attempts
                ),
            }
        } else {
            Outcome::Retry {
                delay: after.unwrap_or_else(|| backoff::delay(backoff_config, job.failures + 1)),
                message,
            }
        }
    };
    match tokio::time::timeout(timeout, AssertUnwindSafe(attempt).catch_unwind()).await {
        Err(_) => failure(
            format!("timed out after {}", humantime::format_duration(timeout)),
            None,
        ),
        Ok(Err(panic)) => failure(format!("panicked: {}", panic_message(&*panic)), None),
        Ok(Ok(Ok(()))) if ctx.completion_recorded() => Outcome::AlreadyRecorded,
        Ok(Ok(Ok(()))) => Outcome::Completed,
        Ok(Ok(Err(JobError::Retry { message, after }))) => failure(message, after),
        Ok(Ok(Err(JobError::Permanent { message }))) => Outcome::Discard { message },
        Ok(Ok(Err(JobError::Snooze { after }))) => Outcome::Snooze { delay: after },
        Ok(Ok(Err(JobError::Interrupted { message }))) => Outcome::Interrupted {
            delay: INTERRUPTED_DELAY,
            message,
        },
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic payload".to_string()
    }
}
