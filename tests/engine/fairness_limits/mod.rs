//! Plans, quotas and the fake provider's account: per-user limits set and read back (and
//! refused when out of range), GQ429 at enqueue with nothing written, the `[users]` defaults
//! written by the start hook, and the fake account that renders only so many at once
//! (fal `IN_QUEUE` with positions, BytePlus refusing past its queued cap).

use genq::credits::{self, CreditError, NewGeneration};
use genq::plans::{self, Plan, UserLimits};
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::common::TestDb;

mod account;
mod in_flight;
mod plans_api;
mod quotas;

/// A generation request of cost 1 for `user`, keyed by `key`.
fn request(user: &str, key: &str) -> NewGeneration {
    NewGeneration {
        user_id: user.into(),
        provider: "fal".into(),
        model: "fal-ai/kling-video/v2/image-to-video".into(),
        input: json!({"prompt": "a cat surfing"}),
        cost: 1,
        idempotency_key: key.into(),
    }
}

/// A fresh database and a connection, with 100 credits for `user-a`.
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

/// Rows in `table`.
async fn rows(db: &TestDb, table: &str) -> i64 {
    sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
        .fetch_one(&db.pool)
        .await
        .unwrap()
}

/// The SQLSTATE, message and DETAIL (as JSON, if any) of a database error.
fn pg_error(err: &sqlx::Error) -> (String, String, Option<serde_json::Value>) {
    let pg = err
        .as_database_error()
        .expect("a database error")
        .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
        .expect("a Postgres error");
    (
        pg.code().to_string(),
        pg.message().to_string(),
        pg.detail().and_then(|d| serde_json::from_str(d).ok()),
    )
}

/// Effective limits all following the defaults `(max_in_flight, max_queued, per_minute)`.
fn defaults(
    max_in_flight: Option<i32>,
    max_queued: Option<i32>,
    per_minute: Option<i32>,
) -> UserLimits {
    UserLimits {
        max_in_flight,
        max_in_flight_default: true,
        max_queued,
        max_queued_default: true,
        per_minute,
        per_minute_default: true,
        weight: 1.0,
        weight_default: true,
    }
}

/// `plans::set_user_limits` on a fresh connection of `db`.
async fn set(db: &TestDb, user: &str, plan: Plan) -> Result<UserLimits, CreditError> {
    let mut c = db.pool.acquire().await.unwrap();
    plans::set_user_limits(&mut c, user, &plan).await
}

/// `genq.check_ledger()` finds nothing.
async fn ledger_clean(db: &TestDb) {
    let violations = credits::check_ledger(&mut db.pool.acquire().await.unwrap())
        .await
        .unwrap();
    assert!(violations.is_empty(), "ledger violations: {violations:?}");
}
