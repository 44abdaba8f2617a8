//! `genq.prune`: deletes finished jobs past their retention age. Enqueued as a periodic job
//! in the maintenance queue, so one daemon of the fleet prunes per interval.

use serde::Deserialize;

use crate::daemon::config::{PeriodicConfig, PruneConfig, MAINTENANCE_QUEUE};
use crate::daemon::{JobContext, JobError, Worker};
use crate::queue::prune::prune;

/// The kind.
pub const KIND: &str = "genq.prune";

/// The least time a run may spend deleting (with a shorter interval).
const MIN_BUDGET: std::time::Duration = std::time::Duration::from_secs(1);

/// The prune worker.
pub struct Prune {
    config: PruneConfig,
}

impl Prune {
    /// A prune worker with these ages.
    pub fn new(config: &PruneConfig) -> Self {
        Self {
            config: config.clone(),
        }
    }
}

/// Payload (empty).
#[derive(Debug, Deserialize)]
pub struct PruneArgs {}

impl Worker for Prune {
    type Args = PruneArgs;

    fn kind(&self) -> &str {
        KIND
    }

    async fn work(&self, ctx: JobContext, _args: PruneArgs) -> Result<(), JobError> {
        let deleted = prune(
            &ctx.pool,
            self.config.completed_after,
            self.config.discarded_after,
            self.config.batch,
            // Up to one interval: a run catches up on any backlog the fleet can produce in
            // an interval, and never overlaps the next run by much (decision 53).
            self.config.interval.max(MIN_BUDGET),
        )
        .await?;
        if deleted > 0 {
            tracing::info!(deleted, "pruned finished jobs");
        }
        metrics::counter!(crate::metrics::JOBS_PRUNED).increment(deleted);
        Ok(())
    }
}

/// The periodic definition of the prune job.
pub fn periodic(config: &PruneConfig) -> PeriodicConfig {
    PeriodicConfig {
        name: KIND.into(),
        kind: KIND.into(),
        cron: None,
        every: Some(config.interval),
        queue: MAINTENANCE_QUEUE.into(),
        payload: serde_json::json!({}),
    }
}
