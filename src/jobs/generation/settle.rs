//! Settlement: the one transaction that ends a generation. Success marks the generation
//! succeeded, captures its hold and completes the job; failure or cancellation marks it,
//! releases the hold and completes the job. One failure captures instead: an output the
//! provider produced (and billed) that cannot be downloaded ([`unfetchable`]). Both are idempotent: a second settlement (a
//! rescued job rerunning, a webhook racing the poll) finds the generation ended and the
//! ledger's unique keys refuse a second capture or release.

use uuid::Uuid;

use crate::credits;
use crate::daemon::{JobContext, JobError};
use crate::generation::record;
use crate::generation::Generation as GenerationRow;
use crate::generation::{ErrorCode, GenerationState};
use crate::retention::{blobs, BlobRole};
use crate::storage::StoredObject;

/// Ends `generation` as succeeded with its `stored` outputs, capturing its credits,
/// registering each output as a blob with its expiry (the generation's end also dates its
/// source uploads, in SQL), and completes the job, all in one transaction.
pub async fn succeed(
    ctx: &JobContext,
    generation: &GenerationRow,
    stored: &[StoredObject],
) -> Result<(), JobError> {
    let output = serde_json::to_value(stored).map_err(JobError::failure)?;
    let mut tx = crate::db::begin(&ctx.pool).await?;
    if let Some(secs) = record::mark_succeeded(&mut tx, generation.id, &output).await? {
        let captured = credits::capture(&mut tx, generation.id).await?;
        for object in stored {
            blobs::register(
                &mut tx,
                &generation.user_id,
                BlobRole::Output,
                &object.store,
                &object.key,
                Some(generation.id),
            )
            .await?;
        }
        ctx.complete_in(&mut tx).await?;
        tx.commit().await?;
        count(
            generation,
            "succeeded",
            secs,
            captured.then_some(("captured", generation.cost)),
        );
    } else {
        ctx.complete_in(&mut tx).await?;
        tx.commit().await?;
    }
    Ok(())
}

/// Ends `generation` as failed or cancelled with its `code` and `reason`, releasing its credits, and
/// completes the job in the same transaction.
pub async fn end(
    ctx: &JobContext,
    generation: &GenerationRow,
    state: GenerationState,
    code: ErrorCode,
    reason: &str,
) -> Result<(), JobError> {
    release_and_end(ctx, generation.id, state, code, reason, Some(generation)).await
}

/// How every error of a generation whose output could not be downloaded begins;
/// `genq.check_ledger()` accepts a capture on a failed generation only with it.
pub const UNFETCHABLE: &str = "output_unfetchable:";

/// Why an output was unfetchable, for the metric.
#[derive(Debug, Clone, Copy)]
pub enum Unfetchable {
    /// The download failed for good (expired, refused by the address policy, too large).
    Permanent,
    /// The download kept failing until the job's last attempt.
    GaveUp,
}

/// Ends `generation` as failed because the provider's output cannot be downloaded, and
/// CAPTURES its hold: the provider produced and billed the render, so releasing would give
/// it away to anyone able to make an output unfetchable. The error starts with
/// [`UNFETCHABLE`]; `genq_generation_outputs_unfetchable_total` counts it for review.
pub async fn unfetchable(
    ctx: &JobContext,
    generation: &GenerationRow,
    why: Unfetchable,
    detail: &str,
) -> Result<(), JobError> {
    let reason = format!("{UNFETCHABLE} {detail}");
    let mut tx = crate::db::begin(&ctx.pool).await?;
    let ended = record::mark_ended(
        &mut tx,
        generation.id,
        GenerationState::Failed,
        ErrorCode::OutputUnfetchable,
        &reason,
    )
    .await?;
    let captured = if ended.is_some() {
        credits::capture(&mut tx, generation.id).await?
    } else {
        false
    };
    ctx.complete_in(&mut tx).await?;
    tx.commit().await?;
    if let Some(secs) = ended {
        let why = match why {
            Unfetchable::Permanent => "permanent",
            Unfetchable::GaveUp => "gave_up",
        };
        tracing::warn!(generation_id = %generation.id, provider = %generation.provider, %reason,
            "output could not be downloaded; generation failed, hold captured (the provider billed it)");
        metrics::counter!(crate::metrics::OUTPUTS_UNFETCHABLE, "provider" => generation.provider.clone(), "reason" => why)
            .increment(1);
        count(
            generation,
            "failed",
            secs,
            captured.then_some(("captured", generation.cost)),
        );
    }
    Ok(())
}

async fn release_and_end(
    ctx: &JobContext,
    id: Uuid,
    state: GenerationState,
    code: ErrorCode,
    reason: &str,
    generation: Option<&GenerationRow>,
) -> Result<(), JobError> {
    let mut tx = crate::db::begin(&ctx.pool).await?;
    let ended = record::mark_ended(&mut tx, id, state, code, reason).await?;
    let released = if ended.is_some() {
        credits::release(&mut tx, id, reason).await?
    } else {
        false
    };
    ctx.complete_in(&mut tx).await?;
    tx.commit().await?;
    if let (Some(secs), Some(g)) = (ended, generation) {
        let label = if state == GenerationState::Cancelled {
            "cancelled"
        } else {
            "failed"
        };
        tracing::info!(generation_id = %id, state = label, %reason, "generation ended without output; hold released");
        count(g, label, secs, released.then_some(("released", g.cost)));
    }
    Ok(())
}

fn count(
    g: &GenerationRow,
    outcome: &'static str,
    secs: f64,
    credits: Option<(&'static str, i64)>,
) {
    metrics::counter!(crate::metrics::GENERATIONS_FINISHED, "provider" => g.provider.clone(), "outcome" => outcome)
        .increment(1);
    metrics::histogram!(crate::metrics::GENERATION_DURATION, "provider" => g.provider.clone(), "outcome" => outcome)
        .record(secs);
    if let Some((kind, amount)) = credits {
        metrics::counter!(crate::metrics::CREDITS, "kind" => kind).increment(amount.max(0) as u64);
    }
}
