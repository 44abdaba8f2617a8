//! The privacy jobs (named `privacy` so they are not confused with the [`crate::retention`]
//! domain whose SQL they run): retention deletions, erasures and exports, all in queue
//! `retention` (so an operator can pause deletions
//! fleet-wide without pausing anything else):
//!
//! - `retention.sweep` (periodic, `[retention] interval`): scrubs due inputs and webhook
//!   bodies and enqueues `retention.delete` jobs for due blobs, batched per store;
//! - `retention.delete`: deletes one batch from one store, re-checking each blob is due
//!   under its row lock, logging each deletion, retrying failures with backoff;
//! - `privacy.erase`: an account erasure, from request to de-identified records;
//! - `privacy.export`: a user's data as a JSON archive in storage.
//!
//! SQL lives in [`crate::retention`]; these modules decide what to do and when.

pub mod delete;
pub mod erase;
pub mod export;
pub mod retention_sweep;

use std::sync::Arc;

use crate::daemon::Registry;
use crate::retention::RetentionConfig;
use crate::storage::Stores;

/// Queue of the retention jobs.
pub const QUEUE: &str = "retention";

/// What the retention jobs need: every store blobs may live in, and the policies.
pub struct Retention {
    /// Stores by name; exports are written to the output store.
    pub stores: Stores,
    /// `[retention]`.
    pub config: RetentionConfig,
    /// Key of the erasure hash; without it erasures delete everything but wait (and
    /// become overdue) before de-identifying the records they keep.
    pub hash_key: Option<Vec<u8>>,
}

impl Retention {
    /// Builds the retention jobs' context from the daemon configuration, with `output` as
    /// the store outputs and exports are written to.
    pub fn from_config(config: &crate::Config, output: Arc<dyn crate::storage::BlobStore>) -> Self {
        Self {
            stores: Stores::new(&config.storage, output),
            config: config.retention.clone(),
            hash_key: config.retention.hash_key(),
        }
    }

    /// Registers the retention job kinds, the periodic sweep, the application of the
    /// configured policies at start and the backlog gauges at every statistics sample.
    pub fn register(self: Arc<Self>, registry: &mut Registry) {
        registry.periodic(retention_sweep::periodic(&self.config));
        let policies = self.config.clone();
        registry.on_start("retention.policies", move |pool| {
            let policies = policies.clone();
            async move { apply_policies(&pool, &policies).await }
        });
        let overdue_after = self.config.overdue_after;
        registry.on_sample("retention.backlog", move |pool| async move {
            export_backlog(&pool, overdue_after).await
        });
        registry.register(retention_sweep::Sweep(self.clone()));
        registry.register(delete::Delete(self.clone()));
        registry.register(erase::Erase(self.clone()));
        registry.register(export::Export(self));
    }
}

/// Writes the configured policies at start, re-dating live blobs of a changed policy.
async fn apply_policies(pool: &sqlx::PgPool, config: &RetentionConfig) -> sqlx::Result<()> {
    let redated = crate::retention::apply_policies(pool, config).await?;
    if redated > 0 {
        tracing::info!(
            blobs = redated,
            "retention policies changed: live blobs re-dated"
        );
    }
    Ok(())
}

/// Due and overdue items by kind: small counts over partial indexes, read by every daemon.
async fn export_backlog(
    pool: &sqlx::PgPool,
    overdue_after: std::time::Duration,
) -> sqlx::Result<()> {
    for b in crate::retention::backlog::backlog(pool, overdue_after).await? {
        metrics::gauge!(crate::metrics::RETENTION_DUE, "kind" => b.kind.clone()).set(b.due as f64);
        metrics::gauge!(crate::metrics::RETENTION_OVERDUE, "kind" => b.kind).set(b.overdue as f64);
    }
    Ok(())
}

fn count_deletions(store: &str, role: &str, outcome: &'static str, n: u64) {
    if n > 0 {
        metrics::counter!(crate::metrics::RETENTION_DELETIONS, "store" => store.to_string(),
            "role" => role.to_string(), "outcome" => outcome)
        .increment(n);
    }
}
