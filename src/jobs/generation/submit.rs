//! `generation.submit`: send a generation to its provider, exactly once.
//!
//! The intent (`submitting`) is committed before the call. If the call's outcome is unknown
//! (timeout after sending, crash), the next attempt finds `submitting` and reconciles:
//! BytePlus and Replicate list recent requests, matched on the generation id carried in the
//! callback URL; found means adopt it, not found means it never arrived and submitting again
//! is safe. fal has no lookup: an ambiguous fal submit is never repeated; the generation waits
//! `providers.ambiguous_submit_grace` for fal's webhook (whose URL names the generation) and
//! otherwise fails with its hold released. The user is never charged for a request we cannot
//! see; `genq_generation_ambiguous_submits_total` counts how each unknown outcome ended.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use super::{settle, GenerationArgs, Pipeline};
use crate::daemon::{JobContext, JobError, Worker};
use crate::generation::record;
use crate::generation::Generation as GenerationRow;
use crate::generation::{ErrorCode, GenerationState};
use crate::providers::{ProviderError, ProviderKind, SubmitRequest, Submitted};

/// The kind.
pub const KIND: &str = "generation.submit";

/// First poll after a successful submit.
pub const FIRST_POLL_SECS: f64 = 2.0;

/// The submit worker.
pub struct Submit(pub Arc<Pipeline>);

impl Worker for Submit {
    type Args = GenerationArgs;

    fn kind(&self) -> &str {
        KIND
    }

    async fn work(&self, ctx: JobContext, args: GenerationArgs) -> Result<(), JobError> {
        let pipeline = &self.0;
        let Some((generation, kind)) =
            super::load_generation(&ctx.pool, args.generation_id).await?
        else {
            return Err(JobError::permanent(format!(
                "generation {} does not exist",
                args.generation_id
            )));
        };
        match generation.state {
            GenerationState::Queued | GenerationState::Submitting => {}
            // Already sent (a rerun after the save committed), or already ended: nothing to do.
            _ => return Ok(()),
        }
        if generation.cancel_requested_at.is_some() && generation.state == GenerationState::Queued {
            return settle::end(
                &ctx,
                &generation,
                GenerationState::Cancelled,
                ErrorCode::Cancelled,
                "cancelled before submission",
            )
            .await;
        }
        let request = SubmitRequest {
            generation_id: generation.id,
            model: generation.model.clone(),
            input: generation.input.clone(),
            webhook_url: pipeline.webhook_url(kind, generation.id),
        };
        if generation.state == GenerationState::Submitting {
            match reconcile(pipeline, &ctx, kind, &generation, &request).await? {
                Reconciled::Found(found) => return save_submitted(&ctx, &generation, &found).await,
                Reconciled::Settled => return Ok(()),
                Reconciled::NeverArrived => {}
            }
        }

        // The gate's slot first: once `submitting` is committed, only the request follows.
        let admitted = pipeline.admit(&ctx.pool, kind, "submit").await?;
        let marked = match ctx.pool.acquire().await {
            Ok(mut conn) => record::mark_submitting(&mut conn, generation.id).await,
            Err(err) => Err(err),
        };
        let marked = match marked {
            Ok(marked) => marked,
            Err(err) => {
                pipeline.give_back(&ctx.pool, admitted).await;
                return Err(err.into());
            }
        };
        if !marked {
            pipeline.give_back(&ctx.pool, admitted).await;
            // A cancellation may have arrived after the load: honour it before anything is sent.
            if let Some((now, _)) = super::load_generation(&ctx.pool, generation.id).await? {
                if now.cancel_requested_at.is_some()
                    && matches!(
                        now.state,
                        GenerationState::Queued | GenerationState::Submitting
                    )
                {
                    return settle::end(
                        &ctx,
                        &now,
                        GenerationState::Cancelled,
                        ErrorCode::Cancelled,
                        "cancelled before submission",
                    )
                    .await;
                }
            }
            return Ok(());
        }
        let provider = pipeline.providers.get(kind);
        let result = pipeline
            .call_admitted(&ctx.pool, admitted, || provider.submit(&request))
            .await;
        match result {
            Ok(submitted) => save_submitted(&ctx, &generation, &submitted).await,
            Err(ProviderError::Permanent { message }) => {
                settle::end(
                    &ctx,
                    &generation,
                    GenerationState::Failed,
                    ErrorCode::of_refusal(&message),
                    &format!("{kind} refused the request: {message}"),
                )
                .await
            }
            Err(err @ ProviderError::Retryable { .. }) => {
                let mut conn = ctx.pool.acquire().await?;
                record::back_to_queued(&mut conn, generation.id).await?;
                if ctx.is_last_attempt() {
                    return settle::end(
                        &ctx,
                        &generation,
                        GenerationState::Failed,
                        ErrorCode::ProviderFailed,
                        &format!("{kind} kept failing: {err}"),
                    )
                    .await;
                }
                Err(JobError::from(err))
            }
            // The account is full (nothing was created): back in line, no attempt spent.
            Err(err @ ProviderError::Busy { .. }) => {
                let mut conn = ctx.pool.acquire().await?;
                record::back_to_queued(&mut conn, generation.id).await?;
                tracing::debug!(generation_id = %generation.id, error = %err, "provider account full; submit waits");
                Err(JobError::from(err))
            }
            Err(err @ ProviderError::Ambiguous { .. }) if ctx.is_last_attempt() => {
                count_ambiguous(kind, "failed");
                settle::end(
                    &ctx,
                    &generation,
                    GenerationState::Failed,
                    ErrorCode::ProviderFailed,
                    &format!("submit outcome unknown on the last attempt ({err}); not resubmitted, hold released"),
                )
                .await
            }
            Err(err @ ProviderError::Ambiguous { .. }) => {
                tracing::warn!(generation_id = %generation.id, error = %err, "submit outcome unknown; the next attempt reconciles");
                Err(JobError::retry_after(
                    format!("ambiguous submit: {err}"),
                    Duration::from_secs(5),
                ))
            }
        }
    }
}

/// What reconciling an unknown submit outcome found.
enum Reconciled {
    /// The provider has the request: adopt it.
    Found(Submitted),
    /// The provider provably never got it: submitting again is safe.
    NeverArrived,
    /// It cannot be known; the generation was failed and its hold released.
    Settled,
}

async fn reconcile(
    pipeline: &Pipeline,
    ctx: &JobContext,
    kind: ProviderKind,
    generation: &GenerationRow,
    request: &SubmitRequest,
) -> Result<Reconciled, JobError> {
    let since =
        generation.submitting_since.unwrap_or(generation.created_at) - chrono::Duration::minutes(5);
    let provider = pipeline.providers.get(kind);
    match pipeline
        .call(&ctx.pool, kind, "find", || {
            provider.find_submitted(request, since)
        })
        .await?
    {
        Ok(found) => {
            tracing::info!(generation_id = %generation.id, found = found.is_some(), "reconciled an ambiguous submit");
            count_ambiguous(
                kind,
                if found.is_some() {
                    "found"
                } else {
                    "never_arrived"
                },
            );
            Ok(found.map_or(Reconciled::NeverArrived, Reconciled::Found))
        }
        Err(ProviderError::Permanent { message }) => {
            // No way to look the request up (fal). Wait for its webhook, then give up.
            let waited = (Utc::now()
                - generation.submitting_since.unwrap_or(generation.created_at))
            .to_std()
            .unwrap_or_default();
            if request.webhook_url.is_some() && waited < pipeline.config.ambiguous_submit_grace {
                return Err(JobError::snooze(Duration::from_secs(15)));
            }
            count_ambiguous(kind, "failed");
            settle::end(
                ctx,
                generation,
                GenerationState::Failed,
                ErrorCode::ProviderFailed,
                &format!("submit outcome unknown and {kind} cannot be queried ({message}); not resubmitted, hold released"),
            )
            .await?;
            Ok(Reconciled::Settled)
        }
        Err(err) => Err(JobError::from(err)),
    }
}

/// Counts how a submit whose outcome was unknown ended.
pub(crate) fn count_ambiguous(kind: ProviderKind, resolution: &'static str) {
    metrics::counter!(crate::metrics::AMBIGUOUS_SUBMITS, "provider" => kind.as_str(), "resolution" => resolution)
        .increment(1);
}

/// Saves the provider's request id, keeps the job's render slot for the generation and
/// schedules the first poll, completing the job, in one transaction.
async fn save_submitted(
    ctx: &JobContext,
    generation: &GenerationRow,
    submitted: &Submitted,
) -> Result<(), JobError> {
    let mut tx = crate::db::begin(&ctx.pool).await?;
    let saved = record::mark_submitted(
        &mut tx,
        generation.id,
        &submitted.request_id,
        &submitted.meta,
    )
    .await?;
    if let Some(cancel_requested) = saved {
        // In flight now: the render slot stays taken until the generation is final.
        if let Some(slot) = ctx.keep_slot_in(&mut tx).await? {
            record::set_fair_slot(&mut tx, generation.id, slot).await?;
        }
        record::enqueue_follow_up(&mut tx, super::poll::KIND, generation.id, FIRST_POLL_SECS)
            .await?;
        if cancel_requested {
            record::enqueue_follow_up(&mut tx, super::cancel::KIND, generation.id, 0.0).await?;
        }
    }
    ctx.complete_in(&mut tx).await?;
    tx.commit().await?;
    tracing::info!(generation_id = %generation.id, request_id = %submitted.request_id, "submitted");
    Ok(())
}
