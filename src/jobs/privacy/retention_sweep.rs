//! `retention.sweep`: one daemon per interval finds what the policies made due. Inputs and
//! webhook bodies are scrubbed in place (small batched UPDATEs); due blobs get
//! `retention.delete` jobs, one per store and batch, so a slow or failing store delays
//! only its own deletions. A blob whose delete job ended (or was pruned) while the blob
//! still exists is scheduled again: deletions are retried until done.

use std::sync::Arc;

use serde::Deserialize;

use super::Retention;
use crate::config::PeriodicConfig;
use crate::daemon::{JobContext, JobError, Worker};
use crate::retention::RetentionConfig;
use crate::retention::{blobs, scrub};

/// The kind.
pub const KIND: &str = "retention.sweep";

/// Rows per scrub statement.
const SCRUB_BATCH: i64 = 1000;
/// Scrub statements per kind and run.
const SCRUB_MAX_BATCHES: u32 = 50;
/// Blobs scheduled per transaction.
const SCHEDULE_LIMIT: i64 = 10_000;
/// Scheduling transactions per run: a backlog of up to 100,000 due blobs is scheduled by
/// one run; a larger one by the next runs.
const SCHEDULE_ROUNDS: u32 = 10;

/// The sweep worker.
pub struct Sweep(pub Arc<Retention>);

/// Payload (empty).
#[derive(Debug, Deserialize)]
pub struct SweepArgs {}

impl Worker for Sweep {
    type Args = SweepArgs;

    fn kind(&self) -> &str {
        KIND
    }

    async fn work(&self, ctx: JobContext, _args: SweepArgs) -> Result<(), JobError> {
        let scrubbed = scrub::scrub_due(&ctx.pool, SCRUB_BATCH, SCRUB_MAX_BATCHES).await?;
        for (kind, n) in [
            ("input", scrubbed.inputs),
            ("webhook_body", scrubbed.webhook_bodies),
        ] {
            if n > 0 {
                metrics::counter!(crate::metrics::RETENTION_SCRUBBED, "kind" => kind)
                    .increment(n as u64);
            }
        }
        let mut scheduled = blobs::Scheduled::default();
        for _ in 0..SCHEDULE_ROUNDS {
            let round =
                blobs::schedule_deletions(&ctx.pool, None, self.0.config.batch, SCHEDULE_LIMIT)
                    .await?;
            scheduled.jobs += round.jobs;
            scheduled.blobs += round.blobs;
            if round.blobs < SCHEDULE_LIMIT as u64 {
                break;
            }
        }
        if scrubbed != scrub::Scrubbed::default() || scheduled.jobs > 0 {
            tracing::info!(
                inputs_scrubbed = scrubbed.inputs,
                webhook_bodies_scrubbed = scrubbed.webhook_bodies,
                delete_jobs = scheduled.jobs,
                blobs_due = scheduled.blobs,
                "retention sweep"
            );
        }
        Ok(())
    }
}

/// The periodic definition of the sweep.
pub fn periodic(config: &RetentionConfig) -> PeriodicConfig {
    PeriodicConfig {
        name: KIND.into(),
        kind: KIND.into(),
        cron: None,
        every: Some(config.interval),
        queue: super::QUEUE.into(),
        payload: serde_json::json!({}),
    }
}
