//! More [`RetentionEnv`] helpers, for scenarios that check what the retention jobs did:
//! registering and back-dating many blobs at once, the `retention.delete` jobs and their
//! payloads, the deletion log, and when a retried job ran again.

use std::collections::HashMap;
use std::time::Duration;

use genq::jobs::privacy::delete::DeleteArgs;
use genq::queue::job_control::JobRow;
use genq::retention::BlobRole;
use genq::{JobState, NewJob};

use super::retention::{BlobRow, RetentionEnv};

/// A `genq.deletion_log` row of a blob.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct LogRow {
    pub blob_id: i64,
    pub outcome: String,
    pub policy: String,
    pub store: String,
    pub key: String,
    pub job_id: Option<i64>,
}

/// When a retried job ran again, from its first error.
#[derive(Debug, Clone, Copy)]
pub struct RetryTiming {
    /// `run_at` minus the time of the first recorded error: the delay the retry was given.
    pub delay_secs: f64,
    /// Whether the last claim came at or after `run_at`.
    pub claimed_after_run_at: bool,
}

impl RetentionEnv {
    /// Registers `keys` in `store` for `user` (`genq.register_blob` for each, in one
    /// statement). Returns the ids, in the order of `keys`.
    pub async fn register_many(
        &self,
        user: &str,
        role: BlobRole,
        store: &str,
        keys: &[String],
    ) -> Vec<i64> {
        sqlx::query_scalar(
            "SELECT genq.register_blob($1, $2, $3, k)
               FROM unnest($4::text[]) WITH ORDINALITY AS t(k, n) ORDER BY n",
        )
        .bind(user)
        .bind(role.as_str())
        .bind(store)
        .bind(keys)
        .fetch_all(&self.db.pool)
        .await
        .expect("register_blob")
    }

    /// [`RetentionEnv::backdate_blob`] for many blobs.
    pub async fn backdate_blobs(&self, ids: &[i64], by: Duration) {
        sqlx::query(
            "UPDATE genq.blobs SET created_at = created_at - make_interval(secs => $2),
                    expires_at = expires_at - make_interval(secs => $2) WHERE id = ANY($1)",
        )
        .bind(ids)
        .bind(by.as_secs_f64())
        .execute(&self.db.pool)
        .await
        .unwrap();
    }

    /// The rows of `ids`, in the order of `ids`.
    pub async fn blobs(&self, ids: &[i64]) -> Vec<BlobRow> {
        let rows: Vec<BlobRow> = sqlx::query_as(
            "SELECT id, user_id, role, store, key, policy, expires_at, deleted_at, attempts, last_error
               FROM genq.blobs WHERE id = ANY($1) ORDER BY array_position($1, id)",
        )
        .bind(ids)
        .fetch_all(&self.db.pool)
        .await
        .unwrap();
        assert_eq!(rows.len(), ids.len(), "every blob exists");
        rows
    }

    /// The `retention.delete` job that owns each blob's deletion, by blob id.
    pub async fn delete_jobs_of(&self, ids: &[i64]) -> HashMap<i64, Option<i64>> {
        sqlx::query_as("SELECT id, delete_job_id FROM genq.blobs WHERE id = ANY($1)")
            .bind(ids)
            .fetch_all(&self.db.pool)
            .await
            .unwrap()
            .into_iter()
            .collect()
    }

    /// The `retention.delete` job that owns a blob's deletion.
    pub async fn delete_job_of(&self, blob: i64) -> Option<i64> {
        sqlx::query_scalar("SELECT delete_job_id FROM genq.blobs WHERE id = $1")
            .bind(blob)
            .fetch_one(&self.db.pool)
            .await
            .unwrap()
    }

    /// Every `retention.delete` job with its payload, by id.
    pub async fn delete_jobs(&self) -> Vec<(JobRow, DeleteArgs)> {
        let ids: Vec<i64> = sqlx::query_scalar(
            "SELECT id FROM genq.jobs WHERE kind = 'retention.delete' ORDER BY id",
        )
        .fetch_all(&self.db.pool)
        .await
        .unwrap();
        let mut jobs = Vec::with_capacity(ids.len());
        for id in ids {
            let job = self.db.job(id).await;
            let args: DeleteArgs =
                serde_json::from_value(job.payload.clone()).expect("delete job payload");
            jobs.push((job, args));
        }
        jobs
    }

    /// The whole deletion log of blobs, in order.
    pub async fn blob_log(&self) -> Vec<LogRow> {
        sqlx::query_as(
            "SELECT blob_id, outcome, policy, store, key, job_id FROM genq.deletion_log
              WHERE subject = 'blob' ORDER BY id",
        )
        .fetch_all(&self.db.pool)
        .await
        .unwrap()
    }

    /// Runs one sweep and waits for it to complete, but not for the delete jobs it enqueued.
    pub async fn sweep_once(&self) {
        let id = self
            .db
            .enqueue(NewJob::new("retention.sweep", serde_json::json!({})).queue("retention"))
            .await;
        self.db
            .wait_for_state(id, JobState::Completed, Duration::from_secs(20))
            .await;
    }

    /// How job `id` was retried after its first failure.
    pub async fn retry_timing(&self, id: i64) -> RetryTiming {
        let (delay_secs, claimed_after_run_at): (f64, bool) = sqlx::query_as(
            "SELECT extract(epoch FROM run_at - (errors->0->>'at')::timestamptz)::float8,
                    attempted_at >= run_at
               FROM genq.jobs WHERE id = $1",
        )
        .bind(id)
        .fetch_one(&self.db.pool)
        .await
        .unwrap();
        RetryTiming {
            delay_secs,
            claimed_after_run_at,
        }
    }
}
