//! Retention and privacy: the products' privacy promises, kept by the daemon with proof.
//!
//! Promises are dates, so they live in the database next to the data: every object genq
//! must delete is a row of `genq.blobs` with the date it becomes due (`expires_at`) and the
//! policy that set it; the policies themselves (`genq.retention_policies`) are written from
//! `[retention]` when a daemon starts, so SQL and daemon agree. The retention jobs
//! (`src/jobs/privacy/`) only act on what is due, re-checked under the row's lock, and
//! every deletion or scrub writes `genq.deletion_log`. Erasure keeps money records
//! (ledger, payments) but replaces the user's id by a keyed hash. See `docs/privacy.md`.
//!
//! One named place per SQL operation: [`blobs`] (register, schedule, lock, mark),
//! [`scrub`] (inputs and webhook bodies), [`erasure`], [`export`], [`backlog`].

pub mod backlog;
pub mod blobs;
pub mod config;
pub mod erasure;
pub mod export_archive;
pub mod scrub;

use serde::{Deserialize, Serialize};
use sqlx::PgPool;

pub use config::RetentionConfig;

/// What a blob is to the product (`genq.blob_role`); each role has its own policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[sqlx(type_name = "genq.blob_role", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum BlobRole {
    /// An upload a generation consumes; deleted `source_after` its generation ended.
    Source,
    /// An upload kept for a while (e.g. a style reference); deleted `reference_after` upload.
    Reference,
    /// A generated output genq copied to storage; deleted `output_after` (or kept).
    Output,
    /// A data export archive; deleted `export_after` it was written.
    Export,
}

impl BlobRole {
    /// The role's name, as in SQL and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Source => "source",
            Self::Reference => "reference",
            Self::Output => "output",
            Self::Export => "export",
        }
    }
}

/// A broken privacy invariant, as reported by `genq.check_retention()`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, sqlx::FromRow)]
pub struct Violation {
    /// Which invariant (`deleted_before_due`, `deletion_not_logged`, `source_not_scheduled`, ...).
    pub invariant: String,
    /// The rows involved.
    pub detail: String,
}

/// Deletes a generation's data on request (`genq.delete_generation`): its input scrubbed,
/// its blobs due now. Returns the generation's state, as text.
pub async fn delete_generation(pool: &PgPool, id: uuid::Uuid) -> sqlx::Result<String> {
    crate::db::query_scalar("SELECT genq.delete_generation($1)::text")
        .bind(id)
        .fetch_one(pool)
        .await
}

/// Audits the privacy invariants (`genq.check_retention()`): nothing deleted before it was
/// due, every deletion logged exactly once, no source or output left without a deletion
/// date, nothing live after a completed erasure. Empty when healthy; reads whole tables.
pub async fn check(pool: &PgPool) -> sqlx::Result<Vec<Violation>> {
    crate::db::query_as("SELECT invariant, detail FROM genq.check_retention()")
        .fetch_all(pool)
        .await
}

const SET_POLICY: &str = "SELECT genq.set_retention_policy($1, make_interval(secs => $2))";

/// Writes the configured policies into `genq.retention_policies` (re-dating the live blobs
/// of a changed policy). Returns the blobs re-dated.
pub async fn apply_policies(pool: &PgPool, config: &RetentionConfig) -> sqlx::Result<i64> {
    let mut redated = 0;
    for (name, keep) in config.policies() {
        let n: i64 = crate::db::query_scalar(SET_POLICY)
            .bind(name)
            .bind(keep.map(|d| d.as_secs_f64()))
            .fetch_one(pool)
            .await?;
        redated += n;
    }
    Ok(redated)
}
