//! The retention jobs, all in queue `retention` (so an operator can pause deletions
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
pub mod sweep;

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

    /// Registers the retention job kinds.
    pub fn register(self: Arc<Self>, registry: &mut Registry) {
        registry.register(sweep::Sweep(self.clone()));
        registry.register(delete::Delete(self.clone()));
        registry.register(erase::Erase(self.clone()));
        registry.register(export::Export(self));
    }
}

fn count_deletions(store: &str, role: &str, outcome: &'static str, n: u64) {
    if n > 0 {
        metrics::counter!(crate::metrics::RETENTION_DELETIONS, "store" => store.to_string(),
            "role" => role.to_string(), "outcome" => outcome)
        .increment(n);
    }
}
