//! `privacy.export`: writes a user's data as a JSON archive to the output store and
//! records where it is.
//!
//! The key is `exports/<32 hex digits>.json`, 128 random bits: stores may serve objects
//! publicly (Vercel Blob always does), so a key that could be guessed (the request id, as it
//! used to be) would let anyone walk the ids and read other users' prompts, ledger and
//! payments. The URL recorded in `genq.export_requests.url` (what the product hands out) is a
//! presigned or signed URL expiring with the archive where the store can make one (S3,
//! Supabase), else the store's URL (Vercel: public, unguessable by its key; local: a path).
//!
//! The blob is registered (as an `export` blob, deleted `export_after` later) before the
//! archive is written, in its own transaction: an attempt that dies after writing leaves a
//! registered blob that retention deletes, never an orphan. A rerun picks a new key.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::Retention;
use crate::daemon::{JobContext, JobError, Worker};
use crate::retention::{blobs, export_archive as archive, BlobRole};

/// The kind.
pub const KIND: &str = "privacy.export";

/// How long a handed-out link lasts when exports are kept forever (`export_after = "keep"`).
const DEFAULT_LINK_TTL: std::time::Duration = std::time::Duration::from_secs(7 * 24 * 3600);

/// A fresh archive key: `exports/` and 128 random bits in hex. It names neither the user
/// nor the request: keys outlive an erasure in the logs, and must not be guessable.
pub fn export_key() -> String {
    format!("exports/{}.json", hex::encode(rand::random::<[u8; 16]>()))
}

/// The export worker.
pub struct Export(pub Arc<Retention>);

/// Payload.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportArgs {
    /// The `genq.export_requests` row.
    pub request_id: i64,
}

impl Worker for Export {
    type Args = ExportArgs;

    fn kind(&self) -> &str {
        KIND
    }

    async fn work(&self, ctx: JobContext, args: ExportArgs) -> Result<(), JobError> {
        let Some(request) = archive::get(&ctx.pool, args.request_id).await? else {
            return Err(JobError::permanent(format!(
                "export request {} does not exist",
                args.request_id
            )));
        };
        if request.completed_at.is_some() {
            return Ok(());
        }
        let archive = archive::archive(&ctx.pool, &request.user_id).await?;
        let body = serde_json::to_vec_pretty(&archive).map_err(JobError::failure)?;
        let size = body.len();
        let store = self.0.stores.output();
        let key = export_key();
        let mut tx = crate::db::begin(&ctx.pool).await?;
        let blob_id = blobs::register(
            &mut tx,
            &request.user_id,
            BlobRole::Export,
            store.name(),
            &key,
            None,
        )
        .await?;
        tx.commit().await?;
        let stored = store
            .put(
                &key,
                crate::storage::stream_from_bytes(body),
                Some("application/json"),
            )
            .await
            .map_err(JobError::from)?;
        let ttl = self.0.config.export_after.unwrap_or(DEFAULT_LINK_TTL);
        let url = store
            .share_url(&key, ttl)
            .await
            .map_err(JobError::from)?
            .unwrap_or_else(|| stored.url.clone());
        let mut tx = crate::db::begin(&ctx.pool).await?;
        archive::complete(&mut tx, request.id, blob_id, &stored, &url).await?;
        ctx.complete_in(&mut tx).await?;
        tx.commit().await?;
        metrics::counter!(crate::metrics::EXPORTS).increment(1);
        tracing::info!(request_id = request.id, bytes = size, store = %stored.store, "export written");
        Ok(())
    }
}
