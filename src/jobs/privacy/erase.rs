//! `privacy.erase`: an account erasure, from request to completion, in steps that can each
//! be repeated (a rescued or retried run picks up where the last one stopped):
//!
//! 1. cancel the user's unfinished generations (holds released);
//! 2. make every live blob of the user due now (policy `erasure`), scrub inputs, outputs
//!    and webhook bodies, and enqueue the deletes;
//! 3. wait (snoozing, no worker slot held) until every generation is final and every
//!    blob is deleted (a generation cancelled at its provider may still deliver an
//!    output; it is registered, and deleted by the next round of step 2);
//! 4. replace the user id by the keyed hash in the records kept (ledger, payments,
//!    account, generation rows, blob rows, deletion log) and complete the request, in the
//!    transaction that completes the job.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Retention;
use crate::daemon::{JobContext, JobError, Worker};
use crate::retention::{blobs, erasure, scrub};

/// The kind.
pub const KIND: &str = "privacy.erase";

/// How long to wait between checks for deletions and cancellations still in progress.
const RECHECK: Duration = Duration::from_secs(2);

/// Blobs scheduled per run of step 2.
const SCHEDULE_LIMIT: i64 = 100_000;

/// The erase worker.
pub struct Erase(pub Arc<Retention>);

/// Payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EraseArgs {
    /// The `genq.erasure_requests` row.
    pub request_id: i64,
}

impl Worker for Erase {
    type Args = EraseArgs;

    fn kind(&self) -> &str {
        KIND
    }

    async fn work(&self, ctx: JobContext, args: EraseArgs) -> Result<(), JobError> {
        let Some(request) = erasure::get(&ctx.pool, args.request_id).await? else {
            return Err(JobError::permanent(format!(
                "erasure request {} does not exist",
                args.request_id
            )));
        };
        let Some(user) = request.user_id.filter(|_| request.completed_at.is_none()) else {
            return Ok(()); // completed by an earlier run
        };

        // Steps 1 and 2.
        let mut tx = crate::db::begin(&ctx.pool).await?;
        let unfinished = erasure::cancel_generations(&mut tx, &user).await?;
        let expired = blobs::expire_user(&mut tx, &user).await?;
        let scrubbed = scrub::scrub_user(&mut tx, &user).await?;
        tx.commit().await?;
        let scheduled =
            blobs::schedule_deletions(&ctx.pool, Some(&user), self.0.config.batch, SCHEDULE_LIMIT)
                .await?;
        tracing::info!(
            request_id = request.id,
            unfinished,
            blobs_expired = expired,
            delete_jobs = scheduled.jobs,
            inputs_scrubbed = scrubbed.inputs,
            webhook_bodies_scrubbed = scrubbed.webhook_bodies,
            "erasure: step"
        );

        // Step 3.
        let live = blobs::live_count(&ctx.pool, &user).await?;
        if unfinished > 0 || live > 0 {
            tracing::debug!(
                request_id = request.id,
                unfinished,
                live_blobs = live,
                "erasure waits for cancellations and deletions"
            );
            return Err(JobError::snooze(RECHECK));
        }

        // Step 4.
        let Some(key) = &self.0.hash_key else {
            return Err(JobError::retry(format!(
                "erasure {}: everything is deleted, but the records kept cannot be \
                 de-identified without the hash key (set {})",
                request.id, self.0.config.hash_key_env
            )));
        };
        let subject = erasure::subject(key, &user);
        let mut tx = crate::db::begin(&ctx.pool).await?;
        let summary = serde_json::json!({ "job_id": ctx.id });
        let took = erasure::complete(&mut tx, request.id, &user, &subject, summary).await?;
        ctx.complete_in(&mut tx).await?;
        tx.commit().await?;
        if let Some(secs) = took {
            metrics::histogram!(crate::metrics::ERASURE_DURATION).record(secs);
            tracing::info!(request_id = request.id, seconds = secs, "erasure complete");
        }
        Ok(())
    }
}
