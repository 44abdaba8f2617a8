//! Scenarios: `retention.delete` end to end against the HTTP stores. A real Postgres, fake
//! Vercel Blob and Supabase Storage servers on loopback, and a daemon running the retention
//! jobs with the real stores pointed at the fakes: a rate limit delays the retry by its
//! `Retry-After`, objects already gone count as deleted, partial failures stay due until a
//! retry deletes them, a store the daemon lacks keeps its blobs due without losing them, and
//! a large backlog is split per store and batch and deleted exactly once. Blobs are
//! back-dated instead of waiting for their policies; a fake holds a retried request when a
//! test needs to look between attempts.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use genq::retention::BlobRole;
use genq::storage::supabase::SupabaseStore;
use genq::storage::vercel::VercelStore;
use genq::storage::BlobStore;
use genq::JobState;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::common::retention::error_messages;
use crate::common::retention::RetentionEnv;
use crate::common::wait_until;
use genq::dev::fake_stores::supabase::{self as fake_supabase, FakeSupabase};
use genq::dev::fake_stores::vercel::{self as fake_vercel, FakeVercel};

mod routing;
mod supabase;
mod vercel;

const VERCEL_TOKEN: &str = "vercel_blob_rw_STORE123_notarealsecret";
const SUPABASE_KEY: &str = "service-role-key-for-tests";
const DAY: u64 = 24 * 3600;
/// Past the reference policy (7 days).
const PAST_REFERENCE: Duration = Duration::from_secs(8 * DAY);
/// Past every role's policy (the longest, output, keeps 30 days).
const PAST_ALL: Duration = Duration::from_secs(31 * DAY);

/// The fixture, with the periodic sweep out of the way: only the sweeps a test runs happen.
fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn vercel(fake: &FakeVercel) -> Arc<dyn BlobStore> {
    Arc::new(VercelStore::new(&fake.base_url, VERCEL_TOKEN, http()).unwrap())
}

fn supabase(fake: &FakeSupabase) -> Arc<dyn BlobStore> {
    Arc::new(SupabaseStore::new(&fake.url, "uploads", SUPABASE_KEY, http()).unwrap())
}

fn strings(keys: &[&str]) -> Vec<String> {
    keys.iter().map(|k| k.to_string()).collect()
}

/// Every blob of `ids` deleted once by job `job`, under `policy`: one 'deleted' row each.
async fn assert_logged_once(env: &RetentionEnv, ids: &[i64], policy: &str, job: i64) {
    let log = env.blob_log().await;
    for &id in ids {
        let rows: Vec<_> = log.iter().filter(|r| r.blob_id == id).collect();
        assert_eq!(rows.len(), 1, "blob {id}: {rows:?}");
        assert_eq!(
            (
                rows[0].outcome.as_str(),
                rows[0].policy.as_str(),
                rows[0].job_id
            ),
            ("deleted", policy, Some(job)),
            "blob {id}"
        );
    }
}
