//! Fair queues (migration 0013, docs/fairness.md): round-robin claiming across fairness
//! keys, priority within a key, weights, per-key and group limits held across daemons,
//! slots freed on every way a job ends (or kept and released), and the generation
//! pipeline's render slots.

use std::time::Duration;

use genq::queue::claim::{claim, ClaimedJob};
use genq::queue::enqueue::enqueue_many_in;
use genq::queue::fairness;
use genq::NewJob;
use serde_json::json;
use sqlx::PgPool;

use crate::common::TestDb;

mod claims;
mod daemons;
mod generations;
mod inputs;
mod many_keys;
mod slots;

/// The fair queue of these scenarios.
const Q: &str = "fair";

/// Makes `Q` fair with a default per-key limit.
async fn fair_queue(db: &TestDb, key_max_active: Option<i32>) {
    fairness::set_queue(&db.pool, Q, true, key_max_active)
        .await
        .expect("set_queue_fairness");
}

/// Enqueues `n` jobs of `kind` for `key` into `Q`.
async fn enqueue_for(db: &TestDb, kind: &str, key: &str, n: usize) -> i64 {
    let jobs: Vec<NewJob> = (0..n)
        .map(|i| {
            NewJob::new(kind, json!({ "key": key, "i": i }))
                .queue(Q)
                .fairness_key(key)
        })
        .collect();
    enqueue_many_in(&mut db.pool.acquire().await.unwrap(), &jobs)
        .await
        .expect("enqueue_many")
}

/// One claim of up to `limit` jobs of `Q`.
async fn claim_some(pool: &PgPool, limit: u32) -> Vec<ClaimedJob> {
    claim(pool, Q, "test-worker", limit, Duration::from_secs(60))
        .await
        .expect("claim")
}

/// The keys of a claim's jobs, in claim order.
fn keys(jobs: &[ClaimedJob]) -> Vec<String> {
    jobs.iter()
        .map(|j| j.fairness_key.clone().unwrap_or_default())
        .collect()
}

/// Slots in use by `key` in `Q`.
async fn slots_of(db: &TestDb, key: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM genq.fair_slots WHERE queue = $1 AND key = $2")
        .bind(Q)
        .bind(key)
        .fetch_one(&db.pool)
        .await
        .unwrap()
}
