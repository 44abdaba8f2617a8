//! Scenarios: retention under faults. A daemon killed while a store delete is in flight, the
//! database connections lost during a delete and during an account erasure, and a
//! registration of a key racing the held delete of its previous blob. The store is a fake
//! Vercel Blob that holds a delete request until the test releases it, so each fault hits
//! the moment it is meant to; Postgres is reached through a proxy the test cuts. Every
//! scenario ends with the privacy invariants (`genq.check_retention()`) and the money
//! invariants (`genq.check_ledger()`) clean.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use genq::retention::BlobRole;
use genq::storage::stream_from_bytes;
use genq::JobState;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::common::retention::error_messages;
use crate::common::retention::{RetentionEnv, HASH_KEY};
use crate::common::retention_faults::{vercel_store, VERCEL_TOKEN};
use crate::common::wait_until;
use genq::dev::fake_stores::vercel::{FakeVercel, Fault};

mod crashes;
mod races;

const DAY: u64 = 24 * 3600;
/// Past the reference policy (7 days).
const PAST_REFERENCE: Duration = Duration::from_secs(8 * DAY);

/// The fixture, with the periodic sweep out of the way: only the sweeps a test runs happen.
/// Due references of `user` in the fake Vercel store (stored and registered, back-dated past
/// their policy), and one that is not due. Returns (due ids, due keys, fresh id, fresh key).
async fn vercel_references(
    env: &RetentionEnv,
    fake: &FakeVercel,
    user: &str,
    n: usize,
) -> (Vec<i64>, Vec<String>, i64, String) {
    let keys: Vec<String> = (0..n).map(|i| format!("refs/{user}/{i}.png")).collect();
    let mut ids = Vec::new();
    for key in &keys {
        fake.insert(key, b"png");
        let id = env
            .register(user, BlobRole::Reference, "vercel", key, None)
            .await;
        env.backdate_blob(id, PAST_REFERENCE).await;
        ids.push(id);
    }
    let fresh = format!("refs/{user}/fresh.png");
    fake.insert(&fresh, b"png");
    let fresh_id = env
        .register(user, BlobRole::Reference, "vercel", &fresh, None)
        .await;
    (ids, keys, fresh_id, fresh)
}

/// Each blob of `ids` is deleted and has exactly one deletion-log row: `deleted`, under
/// `policy`, by job `job`.
async fn assert_deleted_once(env: &RetentionEnv, ids: &[i64], policy: &str, job: i64) {
    let log = env.blob_log().await;
    for b in env.blobs(ids).await {
        assert!(b.deleted_at.is_some(), "{b:?}");
        let rows: Vec<_> = log.iter().filter(|r| r.blob_id == b.id).collect();
        assert_eq!(rows.len(), 1, "blob {}: {rows:?}", b.id);
        assert_eq!(
            (
                rows[0].outcome.as_str(),
                rows[0].policy.as_str(),
                rows[0].job_id
            ),
            ("deleted", policy, Some(job)),
            "blob {}",
            b.id
        );
    }
}

/// The fresh (not due) blob is untouched: live, unscheduled, never attempted, still stored.
async fn assert_untouched(env: &RetentionEnv, fake: &FakeVercel, id: i64, key: &str) {
    let b = env.blob(id).await;
    assert!(b.deleted_at.is_none(), "{b:?}");
    assert!(b.expires_at.unwrap() > chrono::Utc::now(), "{b:?}");
    assert_eq!((b.attempts, b.last_error.as_deref()), (0, None), "{b:?}");
    assert_eq!(env.delete_job_of(id).await, None);
    assert!(env.log_for_blob(id).await.is_empty());
    assert!(fake.blob(key).is_some(), "{key} still stored");
}

/// A later sweep schedules nothing more: one delete job in all, one log row per due blob,
/// and the blob that was not due is untouched.
async fn assert_nothing_left_to_do(
    env: &RetentionEnv,
    fake: &FakeVercel,
    due: usize,
    fresh: i64,
    fresh_key: &str,
) {
    env.sweep().await;
    assert_eq!(env.delete_jobs().await.len(), 1);
    assert_eq!(env.blob_log().await.len(), due);
    assert_untouched(env, fake, fresh, fresh_key).await;
}
