//! Generation reads (migration 0015): one generation as JSON in each state, a user's
//! history page by page, Recreate, the progress each provider dialect reports (recorded only
//! when it changed, never grown by a provider's log), the notification sent at commit, and
//! the backend role calling all of it.

use std::time::Duration;

use genq::credits::{self, GenerationState};
use genq::dev::fake_provider::faults::{FakeOp, FaultKind, FaultSpec};
use genq::generation::reads;
use genq::providers::ProviderKind;
use serde_json::{json, Value};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use uuid::Uuid;

use crate::common::generation::GenEnv;
use crate::common::{wait_until, TestDb};

mod history;
mod notify;
mod progress;
mod recreate;
mod states;

/// The generation JSON of `id` (panics if absent).
async fn get(db: &TestDb, id: Uuid) -> Value {
    let mut conn = db.pool.acquire().await.unwrap();
    reads::get(&mut conn, id)
        .await
        .unwrap()
        .unwrap_or_else(|| panic!("generation {id} exists"))
}

/// A page of `user`'s history.
async fn list(
    db: &TestDb,
    user: &str,
    limit: i32,
    before: Option<Uuid>,
) -> Result<Vec<Value>, sqlx::Error> {
    let mut conn = db.pool.acquire().await.unwrap();
    reads::list(&mut conn, user, limit, before).await
}

/// The SQLSTATE of a database error ("" for anything else).
fn sqlstate(err: &sqlx::Error) -> String {
    err.as_database_error()
        .and_then(|d| d.code())
        .map(|c| c.into_owned())
        .unwrap_or_default()
}

/// How many generations, ledger rows and jobs exist: what "nothing written" compares.
async fn footprint(db: &TestDb) -> (i64, i64, i64) {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM genq.generations), (SELECT count(*) FROM genq.ledger),
                (SELECT count(*) FROM genq.jobs)",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap()
}

/// The ids of a page, in order.
fn ids(page: &[Value]) -> Vec<Uuid> {
    page.iter()
        .map(|g| g["id"].as_str().unwrap().parse().unwrap())
        .collect()
}

/// A generation of `user` costing `cost`, cancelled while queued (final, hold released).
async fn cancelled(env: &GenEnv, user: &str, cost: i64) -> Uuid {
    let id = env.request(user, "fal", cost).await;
    let mut conn = env.db.pool.acquire().await.unwrap();
    credits::cancel_generation(&mut conn, id).await.unwrap();
    id
}

/// Retention scrubs the input of final generation `id` (policy `inputs`).
async fn scrub(db: &TestDb, id: Uuid) {
    sqlx::query("SELECT genq.scrub_generations(ARRAY[$1::uuid], 'inputs')")
        .bind(id)
        .execute(&db.pool)
        .await
        .unwrap();
}

/// The user deletes generation `id` from their history.
async fn delete(db: &TestDb, id: Uuid) {
    sqlx::query("SELECT genq.delete_generation($1)")
        .bind(id)
        .execute(&db.pool)
        .await
        .unwrap();
}
