//! `retention.delete`: deletes one batch of due blobs from one store.
//!
//! The blobs are locked and re-checked (still live, still due) in the transaction that
//! records the outcome, and the lock is held across the store call: a policy changed
//! since scheduling cannot make anything go early, and `genq.register_blob` of the same
//! key waits until the old object is gone instead of having its new upload deleted.
//! "Already gone" counts as deleted (the stores report it so). Keys that fail stay due and
//! the job retries them, after the store's `Retry-After` when it sent one; when the job
//! runs out of attempts the sweep schedules them again.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{count_deletions, Retention};
use crate::daemon::{JobContext, JobError, Worker};
use crate::retention::blobs::{self, DueBlob};
use crate::storage::StorageError;

/// The kind.
pub const KIND: &str = "retention.delete";

/// The store calls of one batch may take this long; the transaction holding the rows'
/// locks is allowed to sit idle as long (it outlives `database.idle_in_transaction_timeout`).
const STORE_CALLS: Duration = Duration::from_secs(300);

/// The delete worker.
pub struct Delete(pub Arc<Retention>);

/// Payload: which blobs, in which store.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteArgs {
    /// The store's name (`genq.blobs.store`).
    pub store: String,
    /// The blobs.
    pub blob_ids: Vec<i64>,
}

impl Worker for Delete {
    type Args = DeleteArgs;

    fn kind(&self) -> &str {
        KIND
    }

    fn timeout(&self) -> Option<Duration> {
        Some(STORE_CALLS + Duration::from_secs(30))
    }

    async fn work(&self, ctx: JobContext, args: DeleteArgs) -> Result<(), JobError> {
        let mut tx = crate::db::begin(&ctx.pool).await?;
        blobs::limit_idle_in_transaction(&mut tx, STORE_CALLS + Duration::from_secs(30)).await?;
        let due = blobs::lock_due(&mut tx, &args.blob_ids, &args.store).await?;
        if due.is_empty() {
            ctx.complete_in(&mut tx).await?;
            tx.commit().await?;
            return Ok(());
        }
        let (deleted, failed) = match self.0.stores.get(&args.store) {
            Ok(store) => {
                let keys: Vec<String> = due.iter().map(|b| b.key.clone()).collect();
                let report = match tokio::time::timeout(STORE_CALLS, store.delete(&keys)).await {
                    Ok(report) => report,
                    Err(_) => {
                        let mut r = crate::storage::DeleteReport::default();
                        let e = StorageError::retryable("store calls timed out");
                        r.failed = keys.iter().map(|k| (k.clone(), e.clone())).collect();
                        r
                    }
                };
                split(&due, report)
            }
            Err(e) => (Vec::new(), due.iter().map(|b| (b, e.clone())).collect()),
        };
        let deleted_ids: Vec<i64> = deleted.iter().map(|b| b.id).collect();
        blobs::mark_deleted(&mut tx, &deleted_ids, Some(ctx.id)).await?;
        let failures: Vec<(i64, String)> = failed
            .iter()
            .map(|(b, e)| (b.id, e.message().to_string()))
            .collect();
        blobs::mark_failed(&mut tx, &failures).await?;
        if failed.is_empty() {
            ctx.complete_in(&mut tx).await?;
        }
        tx.commit().await?;

        for b in &deleted {
            count_deletions(&args.store, b.role.as_str(), "deleted", 1);
        }
        for (b, _) in &failed {
            count_deletions(&args.store, b.role.as_str(), "failed", 1);
        }
        if failed.is_empty() {
            tracing::info!(store = %args.store, deleted = deleted.len(), "blobs deleted");
            return Ok(());
        }
        let (_, first) = &failed[0];
        let wait = failed
            .iter()
            .filter_map(|(_, e)| match e {
                // A store answering "retry after 0 s" must not burn the attempts in a loop.
                StorageError::Retryable { retry_after, .. } => {
                    retry_after.map(|d| d.max(Duration::from_secs(1)))
                }
                StorageError::Permanent { .. } => None,
            })
            .max();
        let message = format!(
            "{} of {} blobs not deleted from {} (first: {})",
            failed.len(),
            failed.len() + deleted.len(),
            args.store,
            first.message()
        );
        tracing::warn!(store = %args.store, deleted = deleted.len(), failed = failed.len(),
            error = %first.message(), "blob deletion incomplete; retrying");
        // Every failure is retried, permanent ones too: a refused credential or a missing
        // bucket is fixed by an operator, and the promise still stands. Overdue items show
        // in genq_retention_overdue meanwhile.
        Err(match wait {
            Some(after) => JobError::retry_after(message, after),
            None => JobError::retry(message),
        })
    }
}

/// Matches the store's report to the blobs by key.
fn split(
    due: &[DueBlob],
    report: crate::storage::DeleteReport,
) -> (Vec<&DueBlob>, Vec<(&DueBlob, StorageError)>) {
    let deleted: std::collections::HashSet<String> = report.deleted.into_iter().collect();
    let mut errors: std::collections::HashMap<String, StorageError> =
        report.failed.into_iter().collect();
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    for b in due {
        if let Some(e) = errors.remove(&b.key) {
            failed.push((b, e));
        } else if deleted.contains(&b.key) {
            ok.push(b);
        } else {
            failed.push((
                b,
                StorageError::retryable("the store did not report this key"),
            ));
        }
    }
    (ok, failed)
}
