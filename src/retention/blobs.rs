//! The blob registry (`genq.blobs`): registering objects, scheduling due ones for deletion,
//! and recording what a delete did. Each SQL operation on it has one function here.

use std::collections::BTreeMap;

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::BlobRole;
use crate::queue::enqueue::{enqueue_in, NewJob};

/// Registers an object genq must delete on time (`genq.register_blob`); see its SQL
/// documentation for the rules on keys registered again. Returns the blob's id.
pub async fn register(
    conn: &mut PgConnection,
    user_id: &str,
    role: BlobRole,
    store: &str,
    key: &str,
    generation_id: Option<Uuid>,
) -> sqlx::Result<i64> {
    crate::db::query_scalar("SELECT genq.register_blob($1, $2, $3, $4, $5)")
        .bind(user_id)
        .bind(role.as_str())
        .bind(store)
        .bind(key)
        .bind(generation_id)
        .fetch_one(conn)
        .await
}

/// Blobs whose delete job ended (out of attempts, cancelled) or was pruned while they
/// still exist lose it, so they are scheduled again: deletions are retried until done.
/// Only blobs in deletion are read (a partial index), never the whole backlog.
const RELEASE_ORPHANED: &str = r#"
UPDATE genq.blobs SET delete_job_id = NULL
 WHERE id IN (
    SELECT b.id FROM genq.blobs b
     WHERE b.deleted_at IS NULL AND b.delete_job_id IS NOT NULL
       AND NOT EXISTS (SELECT 1 FROM genq.jobs j
                        WHERE j.id = b.delete_job_id
                          AND j.state IN ('available', 'running', 'retryable'))
     FOR UPDATE OF b SKIP LOCKED)
"#;

/// Due blobs no delete job owns, oldest due first. Rows an in-flight delete holds are
/// skipped.
const DUE_UNSCHEDULED: &str = r#"
SELECT b.id, b.store FROM genq.blobs b
 WHERE b.deleted_at IS NULL AND b.expires_at <= now() AND b.delete_job_id IS NULL
   AND ($1::text IS NULL OR b.user_id = $1)
 ORDER BY b.expires_at
 LIMIT $2
 FOR UPDATE OF b SKIP LOCKED
"#;

const SET_DELETE_JOB: &str = "UPDATE genq.blobs SET delete_job_id = $2 WHERE id = ANY($1)";

/// What [`schedule_deletions`] did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Scheduled {
    /// `retention.delete` jobs enqueued.
    pub jobs: u64,
    /// Blobs they cover.
    pub blobs: u64,
}

/// Enqueues `retention.delete` jobs for up to `limit` due blobs (of `user` only, if given),
/// one job per store and `batch` blobs, in one transaction with the rows' `delete_job_id`.
pub async fn schedule_deletions(
    pool: &PgPool,
    user: Option<&str>,
    batch: u32,
    limit: i64,
) -> sqlx::Result<Scheduled> {
    let mut tx = crate::db::begin(pool).await?;
    crate::db::query(RELEASE_ORPHANED).execute(&mut *tx).await?;
    let due: Vec<(i64, String)> = crate::db::query_as(DUE_UNSCHEDULED)
        .bind(user)
        .bind(limit)
        .fetch_all(&mut *tx)
        .await?;
    let mut by_store: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for (id, store) in due {
        by_store.entry(store).or_default().push(id);
    }
    let mut done = Scheduled::default();
    for (store, ids) in by_store {
        for chunk in ids.chunks(batch.max(1) as usize) {
            let args = crate::jobs::privacy::delete::DeleteArgs {
                store: store.clone(),
                blob_ids: chunk.to_vec(),
            };
            let job = NewJob::new(
                crate::jobs::privacy::delete::KIND,
                serde_json::to_value(&args).expect("delete args serialize"),
            )
            .queue(crate::jobs::privacy::QUEUE);
            let job_id = enqueue_in(&mut tx, &job).await?;
            crate::db::query(SET_DELETE_JOB)
                .bind(chunk)
                .bind(job_id)
                .execute(&mut *tx)
                .await?;
            done.jobs += 1;
            done.blobs += chunk.len() as u64;
        }
    }
    tx.commit().await?;
    Ok(done)
}

/// A due blob, locked by the delete that is about to remove it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DueBlob {
    /// Its id.
    pub id: i64,
    /// Its owner.
    pub user_id: String,
    /// The role (metric label).
    pub role: BlobRole,
    /// The key in the store.
    pub key: String,
}

/// Re-checks under the rows' locks that the blobs are still live and due: nothing is
/// deleted before its date, even if a policy changed after the job was scheduled. The
/// locks are held until the transaction ends, so `genq.register_blob` of the same key
/// waits for the store call to finish.
const LOCK_DUE: &str = r#"
SELECT id, user_id, role, key FROM genq.blobs
 WHERE id = ANY($1) AND store = $2 AND deleted_at IS NULL AND expires_at <= now()
 ORDER BY id
 FOR UPDATE
"#;

/// Locks the blobs of `ids` in `store` that are still due (see [`LOCK_DUE`]).
pub async fn lock_due(
    conn: &mut PgConnection,
    ids: &[i64],
    store: &str,
) -> sqlx::Result<Vec<DueBlob>> {
    crate::db::query_as(LOCK_DUE)
        .bind(ids)
        .bind(store)
        .fetch_all(conn)
        .await
}

/// Marks blobs deleted, logs each with its policy, and clears the output metadata of the
/// generations whose outputs they were (the links would be dead).
const MARK_DELETED: &str = r#"
WITH d AS (
    UPDATE genq.blobs
       SET deleted_at = now(), attempts = attempts + 1, last_attempt_at = now(), last_error = NULL
     WHERE id = ANY($1) AND deleted_at IS NULL
    RETURNING id, user_id, generation_id, role, store, key, policy
), logged AS (
    INSERT INTO genq.deletion_log (subject, outcome, policy, user_id, blob_id, generation_id, role, store, key, job_id)
    SELECT 'blob', 'deleted', d.policy, d.user_id, d.id, d.generation_id, d.role, d.store, d.key, $2 FROM d
    RETURNING 1
), outputs AS (
    UPDATE genq.generations g SET output = NULL
     WHERE g.id IN (SELECT generation_id FROM d WHERE role = 'output') AND g.output IS NOT NULL
    RETURNING 1
)
SELECT count(*) FROM logged
"#;

/// Records `ids` as deleted by job `job_id` (see [`MARK_DELETED`]). Returns the rows marked.
pub async fn mark_deleted(
    conn: &mut PgConnection,
    ids: &[i64],
    job_id: Option<i64>,
) -> sqlx::Result<i64> {
    crate::db::query_scalar(MARK_DELETED)
        .bind(ids)
        .bind(job_id)
        .fetch_one(conn)
        .await
}

const MARK_FAILED: &str = r#"
UPDATE genq.blobs b
   SET attempts = b.attempts + 1, last_attempt_at = now(), last_error = f.error
  FROM unnest($1::bigint[], $2::text[]) AS f(id, error)
 WHERE b.id = f.id AND b.deleted_at IS NULL
"#;

/// Records a failed delete attempt for each `(id, error)`; the blob stays due.
pub async fn mark_failed(conn: &mut PgConnection, failed: &[(i64, String)]) -> sqlx::Result<()> {
    let (ids, errors): (Vec<i64>, Vec<String>) = failed.iter().cloned().unzip();
    crate::db::query(MARK_FAILED)
        .bind(ids)
        .bind(errors)
        .execute(conn)
        .await?;
    Ok(())
}

const EXPIRE_USER: &str = r#"
UPDATE genq.blobs
   SET expires_at = now(), policy = 'erasure'
 WHERE user_id = $1 AND deleted_at IS NULL AND (expires_at IS NULL OR expires_at > now())
"#;

/// Makes every live blob of `user` due now under policy `erasure` (blobs already due keep
/// their own policy). Returns the blobs changed.
pub async fn expire_user(conn: &mut PgConnection, user: &str) -> sqlx::Result<u64> {
    Ok(crate::db::query(EXPIRE_USER)
        .bind(user)
        .execute(conn)
        .await?
        .rows_affected())
}

/// Live (not yet deleted) blobs of `user`.
pub async fn live_count(pool: &PgPool, user: &str) -> sqlx::Result<i64> {
    crate::db::query_scalar(
        "SELECT count(*) FROM genq.blobs WHERE user_id = $1 AND deleted_at IS NULL",
    )
    .bind(user)
    .fetch_one(pool)
    .await
}

/// Bounds how long the caller's transaction may sit idle (`SET LOCAL
/// idle_in_transaction_session_timeout`): a delete job holds blob row locks across store
/// calls, and a stuck job must not hold them forever.
pub async fn limit_idle_in_transaction(
    conn: &mut PgConnection,
    limit: std::time::Duration,
) -> sqlx::Result<()> {
    crate::db::query(&format!(
        "SET LOCAL idle_in_transaction_session_timeout = '{}s'",
        limit.as_secs()
    ))
    .execute(conn)
    .await?;
    Ok(())
}
