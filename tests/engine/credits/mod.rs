//! Credits: grants, holds at enqueue, captures and releases, cancellation, the ledger audit,
//! and who may call what. Every scenario that does not corrupt the ledger on purpose ends
//! with `genq.check_ledger()` finding nothing.

use std::panic::AssertUnwindSafe;

use futures::FutureExt;
use genq::credits::{self, CreditError, GenerationState, NewGeneration};
use genq::JobState;
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgConnection};
use uuid::Uuid;

use crate::common::TestDb;

mod cancel;
mod guards;
mod requests;
mod settlement;

// ---------------------------------------------------------------------------------------
// Helpers

/// The usual start of a credits scenario: a fresh database, a connection to it, and 100
/// credits granted to `user-a` (payment `payment-1`).
async fn setup(
    po: PgPoolOptions,
    co: PgConnectOptions,
) -> (TestDb, sqlx::pool::PoolConnection<sqlx::Postgres>) {
    let db = TestDb::new(po, co).await;
    let mut c = db.pool.acquire().await.unwrap();
    credits::grant(&mut c, "user-a", 100, "payment-1")
        .await
        .unwrap();
    (db, c)
}

/// [`setup`], then user-a's generation of 30 credits (key `req-1`), already submitted.
async fn submitted(
    po: PgPoolOptions,
    co: PgConnectOptions,
) -> (TestDb, sqlx::pool::PoolConnection<sqlx::Postgres>, Uuid) {
    let (db, mut c) = setup(po, co).await;
    let id = credits::enqueue_generation(&mut c, &request("user-a", "req-1", 30))
        .await
        .unwrap();
    set_state(&db, id, GenerationState::Submitted).await;
    (db, c, id)
}

/// A generation request of `cost` credits for `user`, keyed by `key`.
fn request(user: &str, key: &str, cost: i64) -> NewGeneration {
    NewGeneration {
        user_id: user.into(),
        provider: "fal".into(),
        model: "fal-ai/kling-video/v2/image-to-video".into(),
        input: json!({"prompt": "a cat surfing", "duration": 5}),
        cost,
        idempotency_key: key.into(),
    }
}

/// The SQLSTATE of a database error ("" for anything else).
fn sqlstate(err: &sqlx::Error) -> String {
    err.as_database_error()
        .and_then(|d| d.code())
        .map(|c| c.into_owned())
        .unwrap_or_default()
}

/// The ledger entries of one generation, in order: (kind, amount).
async fn entries(db: &TestDb, generation: Uuid) -> Vec<(String, i64)> {
    sqlx::query_as(
        "SELECT kind::text, amount FROM genq.ledger WHERE generation_id = $1 ORDER BY id",
    )
    .bind(generation)
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

/// Rows of `table` (a fixed name from the test).
async fn rows(db: &TestDb, table: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

/// The job holding (or that last held) `unique_key`: (id, kind, queue, state, max_attempts, payload).
async fn job_by_key(
    db: &TestDb,
    key: &str,
) -> Option<(i64, String, String, JobState, i32, serde_json::Value)> {
    sqlx::query_as(
        "SELECT id, kind, queue, state, max_attempts, payload FROM genq.jobs
          WHERE unique_key = $1 ORDER BY id DESC LIMIT 1",
    )
    .bind(key)
    .fetch_optional(&db.pool)
    .await
    .unwrap()
}

async fn balance(db: &TestDb, user: &str) -> (i64, i64) {
    let b = credits::balance(&mut db.pool.acquire().await.unwrap(), user)
        .await
        .unwrap();
    (b.available, b.held)
}

async fn generation(db: &TestDb, id: Uuid) -> credits::Generation {
    credits::load(&mut db.pool.acquire().await.unwrap(), id)
        .await
        .unwrap()
        .expect("generation exists")
}

/// Moves a generation along as the pipeline would (test-only shortcut: a plain UPDATE).
async fn set_state(db: &TestDb, id: Uuid, state: GenerationState) {
    sqlx::query(
        "UPDATE genq.generations SET state = $2,
                provider_request_id = coalesce(provider_request_id, 'req-' || id::text),
                submitted_at = CASE WHEN $2 = 'submitted' THEN now() ELSE submitted_at END
          WHERE id = $1",
    )
    .bind(id)
    .bind(state)
    .execute(&db.pool)
    .await
    .unwrap();
}

/// The pipeline's final transaction: state and ledger entry commit together.
async fn finish(db: &TestDb, id: Uuid, state: GenerationState) -> bool {
    let mut tx = db.pool.begin().await.unwrap();
    sqlx::query("UPDATE genq.generations SET state = $2 WHERE id = $1")
        .bind(id)
        .bind(state)
        .execute(&mut *tx)
        .await
        .unwrap();
    let settled = match state {
        GenerationState::Succeeded => credits::capture(&mut tx, id).await.unwrap(),
        _ => credits::release(&mut tx, id, "provider failed")
            .await
            .unwrap(),
    };
    tx.commit().await.unwrap();
    settled
}

async fn assert_ledger_healthy(db: &TestDb) {
    let violations = credits::check_ledger(&mut db.pool.acquire().await.unwrap())
        .await
        .unwrap();
    assert!(violations.is_empty(), "ledger violations: {violations:#?}");
}

/// A throwaway LOGIN role, optionally a member of `member_of`. Roles are cluster-wide and
/// tests run in parallel against one server, so the name is unique.
async fn create_login_role(db: &TestDb, member_of: Option<&str>) -> String {
    let role = format!("tmp_credits_{}", Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE ROLE {role} LOGIN"))
        .execute(&db.pool)
        .await
        .unwrap();
    if let Some(group) = member_of {
        sqlx::query(&format!("GRANT {group} TO {role}"))
            .execute(&db.pool)
            .await
            .unwrap();
    }
    role
}

async fn connect_as(db: &TestDb, role: &str) -> PgConnection {
    PgConnection::connect_with(&db.options.clone().username(role))
        .await
        .expect("connect as the test role (trust authentication)")
}

async fn drop_role(db: &TestDb, role: &str) {
    sqlx::query(&format!("DROP ROLE IF EXISTS {role}"))
        .execute(&db.pool)
        .await
        .unwrap();
}
