//! `generation.sweep`: the backstop for callbacks that never come and poll jobs that gave
//! up. A periodic job (maintenance queue, `[sweep] interval`, one run per slot for the
//! fleet) that
//!
//! - gives a `generation.poll` to each generation `submitted` longer than
//!   `[sweep] stale_after` whose poll job is missing or final (discarded after its last
//!   attempt, cancelled by hand), so it is followed again; the poll job's own snoozes and
//!   retries are the backoff, and the sweeper only steps in when none is alive;
//! - fails each generation submitted longer ago than `[sweep] retention` (7 days, the
//!   providers' retention: BytePlus tasks are queryable 7 days) and releases its hold;
//! - fails each generation still `queued`/`submitting`, unchanged for `[sweep] stale_after`,
//!   whose `generation.submit` job is final (discarded after its last attempt, cancelled)
//!   or gone (pruned), and releases its hold: nothing would ever submit it;
//! - frees render slots (docs/fairness.md) that no in-flight generation owns.

use std::sync::Arc;

use serde::Deserialize;
use uuid::Uuid;

use super::{poll, Pipeline};
use crate::config::{PeriodicConfig, SweepConfig};
use crate::credits;
use crate::daemon::{JobContext, JobError, Worker};
use crate::generation::{record, GenerationState};

/// The kind.
pub const KIND: &str = "generation.sweep";

/// Generations handled per run and per category; a larger backlog is finished by later runs.
const BATCH: i64 = 500;

/// The sweep worker.
pub struct Sweep(pub Arc<Pipeline>);

/// Payload (empty).
#[derive(Debug, Deserialize)]
pub struct SweepArgs {}

impl Worker for Sweep {
    type Args = SweepArgs;

    fn kind(&self) -> &str {
        KIND
    }

    async fn work(&self, ctx: JobContext, _args: SweepArgs) -> Result<(), JobError> {
        let config = &self.0.sweep;
        let expired: Vec<Uuid> = record::expired(
            &mut *ctx.pool.acquire().await?,
            config.retention.as_secs_f64(),
            BATCH,
        )
        .await?;
        let reason = format!(
            "no final state from the provider within {} of submission (its retention window); hold released",
            humantime::format_duration(config.retention)
        );
        for id in &expired {
            let mut tx = crate::db::begin(&ctx.pool).await?;
            if record::mark_ended(&mut tx, *id, GenerationState::Failed, &reason)
                .await?
                .is_some()
            {
                credits::release(&mut tx, *id, &reason).await?;
                metrics::counter!(crate::metrics::SWEEPER_ACTIONS, "action" => "expired")
                    .increment(1);
                tracing::warn!(generation_id = %id, "sweeper: generation failed past the retention window");
            }
            tx.commit().await?;
        }
        let unsubmitted: Vec<Uuid> = record::unsubmitted(
            &mut *ctx.pool.acquire().await?,
            config.stale_after.as_secs_f64(),
            BATCH,
        )
        .await?;
        let reason =
            "the submit job ended without submitting (out of attempts or cancelled); hold released";
        for id in &unsubmitted {
            let mut tx = crate::db::begin(&ctx.pool).await?;
            if record::mark_ended(&mut tx, *id, GenerationState::Failed, reason)
                .await?
                .is_some()
            {
                credits::release(&mut tx, *id, reason).await?;
                metrics::counter!(crate::metrics::SWEEPER_ACTIONS, "action" => "unsubmitted")
                    .increment(1);
                tracing::warn!(generation_id = %id, "sweeper: generation failed, its submit job is final");
            }
            tx.commit().await?;
        }
        let stranded: Vec<Uuid> = record::stranded(
            &mut *ctx.pool.acquire().await?,
            config.stale_after.as_secs_f64(),
            BATCH,
        )
        .await?;
        for id in &stranded {
            let mut conn = ctx.pool.acquire().await?;
            record::enqueue_follow_up(&mut conn, poll::KIND, *id, 0.0).await?;
            metrics::counter!(crate::metrics::SWEEPER_ACTIONS, "action" => "polled").increment(1);
            tracing::info!(generation_id = %id, "sweeper: submitted generation had no poll job; polling it again");
        }
        let freed = record::free_unowned_slots(&mut *ctx.pool.acquire().await?).await?;
        if freed > 0 {
            metrics::counter!(crate::metrics::SWEEPER_ACTIONS, "action" => "slot_freed")
                .increment(freed);
            tracing::warn!(
                slots = freed,
                "sweeper: freed render slots no in-flight generation owns"
            );
        }
        Ok(())
    }
}

/// The periodic definition of the sweep job.
pub fn periodic(config: &SweepConfig) -> PeriodicConfig {
    PeriodicConfig {
        name: KIND.into(),
        kind: KIND.into(),
        cron: None,
        every: Some(config.interval),
        queue: crate::daemon::config::MAINTENANCE_QUEUE.into(),
        payload: serde_json::json!({}),
    }
}
