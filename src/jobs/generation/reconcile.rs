//! `generation.reconcile`: what a verified webhook enqueues. A webhook is only a hint ("look
//! now"): the job asks the provider for the authoritative state through the adapter and
//! acts through [`poll::follow`], the path the poll job uses, so a late, duplicated or
//! out-of-order callback changes nothing that the provider does not confirm.
//!
//! - `submitted`: one status call; an end is settled (copy, capture or release, completing
//!   this job in the same transaction); still rendering: done, the poll job keeps following.
//! - `submitting` (the callback beat the submit response): for fal, whose requests cannot
//!   be looked up, the callback's request id is adopted (the generation becomes `submitted`
//!   and gets its poll job), which is what the submit job's `ambiguous_submit_grace` waits
//!   for; for BytePlus and Replicate the job snoozes until the submit job has saved the id.
//! - `failed` without a request id, and a callback names one: the submit was ambiguous and
//!   given up on after the grace, yet the provider ran it. Logged with the request id and
//!   counted (`genq_generation_late_callbacks_total`): the provider bills a render the user
//!   was not charged for. Nothing else changes (the hold is already released).
//! - `queued` or otherwise final: nothing to do.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use uuid::Uuid;

use super::record::{self, GenerationRow};
use super::submit::{count_ambiguous, FIRST_POLL_SECS};
use super::{poll, GenerationArgs, Pipeline};
use crate::credits::GenerationState;
use crate::daemon::{JobContext, JobError, Worker};
use crate::providers::ProviderKind;

/// The kind.
pub const KIND: &str = "generation.reconcile";

/// How often a reconcile waiting for the submit job looks again.
const WAIT_FOR_SUBMIT: Duration = Duration::from_secs(2);

/// The reconcile worker.
pub struct Reconcile(pub Arc<Pipeline>);

impl Worker for Reconcile {
    type Args = GenerationArgs;

    fn kind(&self) -> &str {
        KIND
    }

    async fn work(&self, ctx: JobContext, args: GenerationArgs) -> Result<(), JobError> {
        let id = args.generation_id;
        let Some((generation, kind)) = record::load(&ctx.pool, id).await? else {
            return Ok(());
        };
        let result = match (generation.state, generation.provider_request_id.clone()) {
            (GenerationState::Submitted, Some(request_id)) => {
                match poll::follow(&self.0, &ctx, kind, &generation, &request_id).await {
                    // Still rendering (or the gate said wait): the poll job keeps following.
                    Err(JobError::Snooze { .. }) => Ok(()),
                    other => other,
                }
            }
            (GenerationState::Submitting, _) => {
                if kind == ProviderKind::Fal {
                    if let Some(request_id) = latest_request_id(&ctx.pool, id).await? {
                        return adopt(&ctx, &generation, &request_id).await;
                    }
                }
                let waited = (Utc::now()
                    - generation.submitting_since.unwrap_or(generation.created_at))
                .to_std()
                .unwrap_or_default();
                if waited < self.0.config.ambiguous_submit_grace + Duration::from_secs(60) {
                    // The submit job has not saved the request id yet.
                    return Err(JobError::snooze(WAIT_FOR_SUBMIT));
                }
                Ok(())
            }
            (GenerationState::Failed, None) => {
                if let Some(request_id) = latest_request_id(&ctx.pool, id).await? {
                    tracing::warn!(generation_id = %id, provider = %kind, %request_id,
                        "late callback: the provider ran a request for a generation that already failed (ambiguous submit given up on); it bills that render");
                    metrics::counter!(crate::metrics::LATE_CALLBACKS, "provider" => kind.as_str())
                        .increment(1);
                }
                Ok(())
            }
            _ => Ok(()),
        };
        if result.is_ok() {
            mark_processed(&ctx.pool, id).await?;
        }
        result
    }
}

/// The request id of the newest verified callback for `id` that names one.
async fn latest_request_id(pool: &sqlx::PgPool, id: Uuid) -> Result<Option<String>, JobError> {
    Ok(crate::db::query_scalar(
        "SELECT request_id FROM genq.webhook_events
          WHERE generation_id = $1 AND request_id IS NOT NULL AND NOT orphan
          ORDER BY id DESC LIMIT 1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await?)
}

/// Marks the generation's callbacks received so far as acted upon.
async fn mark_processed(pool: &sqlx::PgPool, id: Uuid) -> Result<(), JobError> {
    let mut conn = pool.acquire().await?;
    mark_processed_in(&mut conn, id).await
}

async fn mark_processed_in(conn: &mut sqlx::PgConnection, id: Uuid) -> Result<(), JobError> {
    let lags: Vec<(String, f64)> = crate::db::query_as(
        "UPDATE genq.webhook_events SET processed_at = now()
          WHERE generation_id = $1 AND processed_at IS NULL
          RETURNING provider, extract(epoch FROM now() - received_at)::float8",
    )
    .bind(id)
    .fetch_all(conn)
    .await?;
    for (provider, secs) in lags {
        metrics::histogram!(crate::metrics::WEBHOOK_RECONCILE_LAG, "provider" => provider)
            .record(secs);
    }
    Ok(())
}

/// A fal callback for a generation still `submitting` names the request it created: mark it
/// submitted with that id and schedule its poll, completing this job, in one transaction.
/// If the submit job saved the id first, the guarded update changes nothing.
async fn adopt(
    ctx: &JobContext,
    generation: &GenerationRow,
    request_id: &str,
) -> Result<(), JobError> {
    let app: String = generation
        .model
        .split('/')
        .take(2)
        .collect::<Vec<_>>()
        .join("/");
    let meta = serde_json::json!({ "app": app, "adopted_from_webhook": true });
    let mut tx = crate::db::begin(&ctx.pool).await?;
    let saved = record::mark_submitted(&mut tx, generation.id, request_id, &meta).await?;
    if let Some(cancel_requested) = saved {
        record::enqueue_follow_up(&mut tx, poll::KIND, generation.id, FIRST_POLL_SECS).await?;
        if cancel_requested {
            record::enqueue_follow_up(&mut tx, super::cancel::KIND, generation.id, 0.0).await?;
        }
        tracing::info!(generation_id = %generation.id, %request_id, "adopted the request named by fal's callback");
        count_ambiguous(ProviderKind::Fal, "adopted");
    }
    mark_processed_in(&mut tx, generation.id).await?;
    ctx.complete_in(&mut tx).await?;
    tx.commit().await?;
    Ok(())
}
