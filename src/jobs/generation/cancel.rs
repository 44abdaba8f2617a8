//! `generation.cancel`: the user cancelled a generation already sent to its provider.
//! Cancel there, then release the hold; a provider that already finished wins (the poll
//! settles it as usual), and a provider that only acknowledges (a running fal job) is
//! followed by the poll until it reports the cancellation.

use std::sync::Arc;

use super::{settle, GenerationArgs, Pipeline};
use crate::daemon::{JobContext, JobError, Worker};
use crate::generation::{ErrorCode, GenerationState};
use crate::providers::CancelOutcome;

/// The kind.
pub const KIND: &str = "generation.cancel";

/// The cancel worker.
pub struct Cancel(pub Arc<Pipeline>);

impl Worker for Cancel {
    type Args = GenerationArgs;

    fn kind(&self) -> &str {
        KIND
    }

    async fn work(&self, ctx: JobContext, args: GenerationArgs) -> Result<(), JobError> {
        let Some((generation, kind)) =
            super::load_generation(&ctx.pool, args.generation_id).await?
        else {
            return Ok(());
        };
        let request_id = match (generation.state, &generation.provider_request_id) {
            (GenerationState::Submitted, Some(id)) => id.clone(),
            (GenerationState::Queued, _) => {
                return settle::end(
                    &ctx,
                    &generation,
                    GenerationState::Cancelled,
                    ErrorCode::Cancelled,
                    "cancelled before submission",
                )
                .await
            }
            // Submitting: the submit job adopts or settles it, then enqueues this job again.
            _ => return Ok(()),
        };
        let provider = self.0.providers.get(kind);
        let outcome = self
            .0
            .call(&ctx.pool, kind, "cancel", || {
                provider.cancel(&request_id, &generation.provider_meta)
            })
            .await?;
        match outcome {
            Ok(CancelOutcome::Cancelled | CancelOutcome::NotFound) => {
                settle::end(
                    &ctx,
                    &generation,
                    GenerationState::Cancelled,
                    ErrorCode::Cancelled,
                    "cancelled by the user",
                )
                .await
            }
            // Finished first (the poll settles it), or only signalled (the poll sees the end).
            Ok(CancelOutcome::AlreadyFinished | CancelOutcome::Requested) => Ok(()),
            Err(err) if err.is_retryable() => Err(JobError::from(err)),
            Err(err) => {
                tracing::warn!(generation_id = %generation.id, error = %err, "provider refused the cancellation; the generation continues");
                Ok(())
            }
        }
    }
}
