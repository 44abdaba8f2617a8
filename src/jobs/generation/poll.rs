//! `generation.poll`: follow a submitted generation to its end. While the provider renders,
//! the job snoozes (no attempt spent, no worker slot held) with a delay that grows with the
//! render's age, recording the provider's progress when it changed; when the provider reports an end, the outputs are copied to our store and
//! the generation is settled in one transaction with the job's completion.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;

use super::settle::Unfetchable;
use super::{settle, GenerationArgs, Pipeline};
use crate::daemon::{JobContext, JobError, Worker};
use crate::generation::record;
use crate::generation::Generation as GenerationRow;
use crate::generation::{ErrorCode, GenerationState};
use crate::providers::{ProviderError, ProviderKind, RemoteOutput, RemoteStatus};
use crate::storage::{copy_output, CopyFailure, StorageError};

/// The kind.
pub const KIND: &str = "generation.poll";

/// A render older than this is given up (providers keep tasks for days, not weeks).
pub const MAX_RENDER_TIME: Duration = Duration::from_secs(24 * 3600);

/// The poll worker.
pub struct Poll(pub Arc<Pipeline>);

impl Worker for Poll {
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
        let (GenerationState::Submitted, Some(request_id)) =
            (generation.state, generation.provider_request_id.clone())
        else {
            // Ended already (webhook, cancel), or not yet submitted (the submit job owns it).
            return Ok(());
        };
        follow(&self.0, &ctx, kind, &generation, &request_id).await
    }
}

/// Asks the provider once and acts on the answer. Shared with webhook reconciliation.
pub async fn follow(
    pipeline: &Pipeline,
    ctx: &JobContext,
    kind: ProviderKind,
    generation: &GenerationRow,
    request_id: &str,
) -> Result<(), JobError> {
    let provider = pipeline.providers.get(kind);
    let status = pipeline
        .call(&ctx.pool, kind, "status", || {
            provider.status(request_id, &generation.provider_meta)
        })
        .await?;
    let age = (Utc::now() - generation.submitted_at.unwrap_or(generation.created_at))
        .to_std()
        .unwrap_or_default();
    match status {
        Ok(RemoteStatus::Queued(progress) | RemoteStatus::Running(progress)) => {
            if age > MAX_RENDER_TIME {
                return settle::end(
                    ctx,
                    generation,
                    GenerationState::Failed,
                    ErrorCode::Timeout,
                    "the provider did not finish within 24 h",
                )
                .await;
            }
            // Written only when it changed: an unchanged poll notifies nobody.
            let mut conn = ctx.pool.acquire().await?;
            record::record_progress(&mut conn, generation.id, &progress).await?;
            Err(JobError::snooze(next_poll(age)))
        }
        Ok(RemoteStatus::Succeeded { outputs }) => {
            let stored = match copy_outputs(pipeline, generation, &outputs).await {
                Ok(stored) => stored,
                // The provider produced and billed it: failed, hold captured.
                Err(CopyFailure::Source(StorageError::Permanent { message })) => {
                    return settle::unfetchable(ctx, generation, Unfetchable::Permanent, &message)
                        .await;
                }
                Err(CopyFailure::Source(StorageError::Retryable { message, .. }))
                    if ctx.is_last_attempt() =>
                {
                    return settle::unfetchable(ctx, generation, Unfetchable::GaveUp, &message)
                        .await;
                }
                // Our store failed: our fault, the user is not charged.
                Err(CopyFailure::Store(StorageError::Permanent { message })) => {
                    return settle::end(
                        ctx,
                        generation,
                        GenerationState::Failed,
                        ErrorCode::StorageFailed,
                        &format!("output could not be stored: {message}"),
                    )
                    .await;
                }
                Err(CopyFailure::Store(StorageError::Retryable { message, .. }))
                    if ctx.is_last_attempt() =>
                {
                    return settle::end(
                        ctx,
                        generation,
                        GenerationState::Failed,
                        ErrorCode::StorageFailed,
                        &format!("output could not be stored after every attempt: {message}"),
                    )
                    .await;
                }
                Err(failure) => {
                    return Err(match failure.into_inner() {
                        StorageError::Retryable {
                            message,
                            retry_after: Some(d),
                        } => JobError::retry_after(format!("copying output: {message}"), d),
                        other => JobError::retry(format!("copying output: {}", other.message())),
                    });
                }
            };
            settle::succeed(ctx, generation, &stored).await
        }
        Ok(RemoteStatus::Failed { reason }) => {
            settle::end(
                ctx,
                generation,
                GenerationState::Failed,
                ErrorCode::of_failure(&reason),
                &format!("{kind}: {reason}"),
            )
            .await
        }
        Ok(RemoteStatus::Expired { reason }) => {
            settle::end(
                ctx,
                generation,
                GenerationState::Failed,
                ErrorCode::Timeout,
                &format!("{kind}: expired: {reason}"),
            )
            .await
        }
        Ok(RemoteStatus::Cancelled) => {
            settle::end(
                ctx,
                generation,
                GenerationState::Cancelled,
                ErrorCode::Cancelled,
                &format!("cancelled at {kind}"),
            )
            .await
        }
        Err(ProviderError::Permanent { message }) => {
            settle::end(
                ctx,
                generation,
                GenerationState::Failed,
                ErrorCode::of_refusal(&message),
                &format!("{kind}: {message}"),
            )
            .await
        }
        Err(err) if ctx.is_last_attempt() => {
            settle::end(
                ctx,
                generation,
                GenerationState::Failed,
                ErrorCode::ProviderFailed,
                &format!("gave up following the request: {err}"),
            )
            .await
        }
        Err(err) => Err(JobError::from(err)),
    }
}

/// Polls back off with the render's age: every 2 s at first, every 30 s for long renders.
pub fn next_poll(age: Duration) -> Duration {
    age.mul_f64(0.2)
        .clamp(Duration::from_secs(2), Duration::from_secs(30))
}

async fn copy_outputs(
    pipeline: &Pipeline,
    generation: &GenerationRow,
    outputs: &[RemoteOutput],
) -> Result<Vec<crate::storage::StoredObject>, CopyFailure> {
    let mut stored = Vec::with_capacity(outputs.len());
    for (i, output) in outputs.iter().enumerate() {
        let ext = extension(&output.url);
        // Same key on every rerun: a copy repeated after a crash overwrites, never duplicates.
        let key = format!("outputs/{}/{}/{i}{ext}", generation.user_id, generation.id);
        stored.push(
            copy_output(
                pipeline.store.as_ref(),
                &pipeline.http,
                &output.url,
                &key,
                pipeline.max_object_bytes,
            )
            .await?,
        );
    }
    Ok(stored)
}

fn extension(url: &str) -> String {
    let path = url::Url::parse(url)
        .map(|u| u.path().to_string())
        .unwrap_or_default();
    match path.rsplit_once('.') {
        Some((_, ext))
            if !ext.is_empty()
                && ext.len() <= 5
                && ext.chars().all(|c| c.is_ascii_alphanumeric()) =>
        {
            format!(".{}", ext.to_ascii_lowercase())
        }
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn polls_slow_down_with_age() {
        assert_eq!(next_poll(Duration::ZERO), Duration::from_secs(2));
        assert_eq!(next_poll(Duration::from_secs(50)), Duration::from_secs(10));
        assert_eq!(
            next_poll(Duration::from_secs(3600)),
            Duration::from_secs(30)
        );
    }

    #[test]
    fn output_extensions() {
        assert_eq!(extension("http://x/files/ab.mp4?sig=1"), ".mp4");
        assert_eq!(extension("http://x/files/ab"), "");
        assert_eq!(extension("http://x/v1.2/output"), "");
    }
}
