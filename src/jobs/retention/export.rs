//! `privacy.export`: writes a user's data as a JSON archive to the output store, then in
//! one transaction registers it as an `export` blob (deleted `export_after` later, like
//! any copy of user data) and records where it is. A rerun after a crash writes the same
//! key again (overwriting) before recording it.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::Retention;
use crate::daemon::{JobContext, JobError, Worker};
use crate::retention::{blobs, export, BlobRole};

/// The kind.
pub const KIND: &str = "privacy.export";

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
        let Some(request) = export::get(&ctx.pool, args.request_id).await? else {
            return Err(JobError::permanent(format!(
                "export request {} does not exist",
                args.request_id
            )));
        };
        if request.completed_at.is_some() {
            return Ok(());
        }
        let archive = export::archive(&ctx.pool, &request.user_id).await?;
        let body = serde_json::to_vec_pretty(&archive)?;
        let size = body.len();
        let store = self.0.stores.output();
        // The key names the request, not the user: keys outlive an erasure in the logs.
        let key = format!("exports/{}.json", request.id);
        let stored = store
            .put(
                &key,
                crate::storage::stream_from_bytes(body),
                Some("application/json"),
            )
            .await
            .map_err(|e| e.into_job_error())?;
        let mut tx = crate::db::begin(&ctx.pool).await?;
        let blob_id = blobs::register(
            &mut tx,
            &request.user_id,
            BlobRole::Export,
            &stored.store,
            &stored.key,
            None,
        )
        .await?;
        export::complete(&mut tx, request.id, blob_id, &stored).await?;
        ctx.complete_in(&mut tx).await?;
        tx.commit().await?;
        metrics::counter!(crate::metrics::EXPORTS).increment(1);
        tracing::info!(request_id = request.id, bytes = size, store = %stored.store, "export written");
        Ok(())
    }
}
