//! Retention policies, user deletion, the sweep racing new uploads, account erasure and
//! data export, against a real Postgres and a local store in a temp dir. Rows are
//! back-dated instead of waiting: a policy's window has passed when the row says so.

use std::time::Duration;

use genq::retention::{backlog, blobs, BlobRole};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use uuid::Uuid;

use crate::common::retention::{
    request_erasure, request_export, wait_erased, wait_exported, RetentionEnv, HASH_KEY,
};
use crate::common::{wait_until, TestDb};

mod daemon;
mod policies;
mod privacy_requests;

const HOUR: u64 = 3600;
const DAY: u64 = 24 * HOUR;

fn h(n: u64) -> Duration {
    Duration::from_secs(n * HOUR)
}
fn d(n: u64) -> Duration {
    Duration::from_secs(n * DAY)
}

async fn scalar_i64(env: &RetentionEnv, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(&env.db.pool)
        .await
        .unwrap()
}
