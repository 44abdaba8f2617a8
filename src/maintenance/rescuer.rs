//! Lease rescue: jobs whose lease expired (their daemon died, or lost the database longer
//! than a lease) go back to `retryable` with the lost attempt recorded. Runs on every
//! daemon every `worker.rescue_interval` (± 20 % so daemons spread out). The same tick frees
//! limit slots whose job is no longer running (a safety net: the job's own transition
//! frees them; see docs/fairness.md).

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::watch;

use crate::daemon::{sleep_or_stop, Shared};
use crate::queue::lease::rescue_expired;

/// Most jobs rescued per statement.
const RESCUE_BATCH: i64 = 1000;

/// Runs until `stop` turns true.
pub(crate) async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let interval = shared.config.worker.rescue_interval;
    loop {
        let jittered = interval.mul_f64(rand::thread_rng().gen_range(0.8..1.2));
        if !sleep_or_stop(jittered.max(Duration::from_millis(10)), &mut stop).await {
            return;
        }
        match rescue_expired(&shared.pool, RESCUE_BATCH).await {
            Ok(rescued) => {
                for job in &rescued {
                    tracing::warn!(job_id = job.id, kind = %job.kind, queue = %job.queue,
                        "lease expired: job returned to the queue");
                    metrics::counter!(crate::metrics::LEASE_RESCUES, "queue" => job.queue.clone(), "kind" => job.kind.clone())
                        .increment(1);
                    shared.wake(&job.queue);
                }
            }
            Err(err) => {
                crate::db::note_if_connection_loss(&err);
                tracing::warn!(error = %err, "lease rescue failed")
            }
        }
        match crate::queue::fairness::free_orphans(&shared.pool).await {
            Ok(0) => {}
            Ok(n) => tracing::warn!(slots = n, "freed limit slots whose job no longer runs"),
            Err(err) => tracing::debug!(error = %err, "orphan slot sweep failed"),
        }
    }
}
