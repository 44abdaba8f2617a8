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

// ---------------------------------------------------------------------------------------
// Helpers

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

// ---------------------------------------------------------------------------------------
// Grants and balances

#[sqlx::test(migrations = false)]
async fn a_grant_is_applied_once_per_idempotency_key(po: PgPoolOptions, co: PgConnectOptions) {
    let db = TestDb::new(po, co).await;
    let mut c = db.pool.acquire().await.unwrap();
    assert_eq!(
        balance(&db, "user-a").await,
        (0, 0),
        "an unknown user has nothing"
    );

    assert_eq!(
        credits::grant(&mut c, "user-a", 100, "payment-1")
            .await
            .unwrap(),
        100
    );
    // The payment webhook fires again: the same grant, no new credits.
    assert_eq!(
        credits::grant(&mut c, "user-a", 100, "payment-1")
            .await
            .unwrap(),
        100
    );
    assert_eq!(
        credits::grant(&mut c, "user-a", 25, "payment-2")
            .await
            .unwrap(),
        125
    );
    assert_eq!(balance(&db, "user-a").await, (125, 0));
    let grants: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM genq.ledger WHERE kind = 'grant' AND user_id = 'user-a'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(grants, 2);

    // Reusing a key for a different grant is a mistake, and says so.
    for (user, amount) in [("user-b", 100), ("user-a", 99)] {
        match credits::grant(&mut c, user, amount, "payment-1").await {
            Err(CreditError::InvalidInput(msg)) => {
                assert!(msg.contains("already used"), "{msg}")
            }
            other => panic!("expected InvalidInput for a reused key, got {other:?}"),
        }
    }
    for (amount, key) in [(0, "k"), (-5, "k"), (10, "")] {
        assert!(matches!(
            credits::grant(&mut c, "user-a", amount, key).await,
            Err(CreditError::InvalidInput(_))
        ));
    }
    assert_eq!(balance(&db, "user-a").await, (125, 0));
    assert_eq!(balance(&db, "user-b").await, (0, 0));
    assert_ledger_healthy(&db).await;
}

// ---------------------------------------------------------------------------------------
// Enqueueing a generation

#[sqlx::test(migrations = false)]
async fn enqueue_generation_holds_and_enqueues_in_the_callers_transaction(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    let mut c = db.pool.acquire().await.unwrap();
    credits::grant(&mut c, "user-a", 100, "payment-1")
        .await
        .unwrap();

    // The backend's transaction rolls back: no generation, no hold, no job.
    let mut tx = db.pool.begin().await.unwrap();
    let ghost = credits::enqueue_generation(&mut tx, &request("user-a", "req-1", 30))
        .await
        .unwrap();
    assert!(
        credits::load(&mut tx, ghost).await.unwrap().is_some(),
        "visible inside"
    );
    tx.rollback().await.unwrap();
    assert!(credits::load(&mut c, ghost).await.unwrap().is_none());
    assert_eq!(entries(&db, ghost).await, vec![]);
    assert_eq!(rows(&db, "genq.jobs").await, 0);
    assert_eq!(balance(&db, "user-a").await, (100, 0));

    // It commits: all three exist together.
    let mut tx = db.pool.begin().await.unwrap();
    let id = credits::enqueue_generation(&mut tx, &request("user-a", "req-1", 30))
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let g = generation(&db, id).await;
    assert_eq!(g.state, GenerationState::Queued);
    assert_eq!(
        (g.user_id.as_str(), g.provider.as_str(), g.cost),
        ("user-a", "fal", 30)
    );
    assert_eq!(g.input, json!({"prompt": "a cat surfing", "duration": 5}));
    assert_eq!(entries(&db, id).await, vec![("hold".into(), 30)]);
    assert_eq!(balance(&db, "user-a").await, (70, 30));

    let (_, kind, queue, state, max_attempts, payload) =
        job_by_key(&db, &format!("generation.submit:{id}"))
            .await
            .expect("submit job");
    assert_eq!(
        (kind.as_str(), queue.as_str(), state, max_attempts),
        ("generation.submit", "generation", JobState::Available, 10)
    );
    assert_eq!(payload, json!({"generation_id": id}));
    assert_ledger_healthy(&db).await;
}

#[sqlx::test(migrations = false)]
async fn a_repeated_idempotency_key_returns_the_same_generation_and_holds_once(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    let mut c = db.pool.acquire().await.unwrap();
    credits::grant(&mut c, "user-a", 100, "payment-1")
        .await
        .unwrap();

    let first = credits::enqueue_generation(&mut c, &request("user-a", "click-1", 30))
        .await
        .unwrap();
    let again = credits::enqueue_generation(&mut c, &request("user-a", "click-1", 30))
        .await
        .unwrap();
    assert_eq!(first, again);
    // Even once it is final, the key still names it: a late retry must not charge again.
    finish(&db, first, GenerationState::Succeeded).await;
    let late = credits::enqueue_generation(&mut c, &request("user-a", "click-1", 30))
        .await
        .unwrap();
    assert_eq!(late, first);

    // Keys are per user: another user's "click-1" is another generation.
    credits::grant(&mut c, "user-b", 30, "payment-2")
        .await
        .unwrap();
    let other = credits::enqueue_generation(&mut c, &request("user-b", "click-1", 30))
        .await
        .unwrap();
    assert_ne!(other, first);

    assert_eq!(
        entries(&db, first).await,
        vec![("hold".into(), 30), ("capture".into(), 30)]
    );
    assert_eq!(rows(&db, "genq.generations").await, 2);
    assert_eq!(balance(&db, "user-a").await, (70, 0));
    assert_ledger_healthy(&db).await;
}

#[sqlx::test(migrations = false)]
async fn insufficient_credits_raise_gq402_and_write_nothing(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    let mut c = db.pool.acquire().await.unwrap();
    credits::grant(&mut c, "user-a", 10, "payment-1")
        .await
        .unwrap();

    match credits::enqueue_generation(&mut c, &request("user-a", "req-1", 30)).await {
        Err(CreditError::InsufficientCredits { needed, available }) => {
            assert_eq!((needed, available), (30, 10))
        }
        other => panic!("expected InsufficientCredits, got {other:?}"),
    }

    // What a TypeScript backend sees: SQLSTATE, message, and a machine-readable detail.
    let err =
        sqlx::query("SELECT genq.enqueue_generation('user-a', 'fal', 'm', '{}', 30, 'req-1')")
            .execute(&db.pool)
            .await
            .unwrap_err();
    assert_eq!(sqlstate(&err), "GQ402");
    let pg = err
        .as_database_error()
        .unwrap()
        .try_downcast_ref::<sqlx::postgres::PgDatabaseError>()
        .unwrap();
    assert_eq!(
        pg.message(),
        "insufficient credits: needed 30, available 10"
    );
    let detail: serde_json::Value = serde_json::from_str(pg.detail().unwrap()).unwrap();
    assert_eq!(detail, json!({"needed": 30, "available": 10}));
    assert!(pg.hint().unwrap().contains("Nothing was held"));

    // A user genq has never seen has nothing, and still gets no account row from trying.
    assert!(matches!(
        credits::enqueue_generation(&mut c, &request("stranger", "req-1", 1)).await,
        Err(CreditError::InsufficientCredits {
            needed: 1,
            available: 0
        })
    ));

    assert_eq!(rows(&db, "genq.generations").await, 0);
    assert_eq!(rows(&db, "genq.jobs").await, 0);
    assert_eq!(rows(&db, "genq.ledger").await, 1, "only the grant");
    assert_eq!(rows(&db, "genq.accounts").await, 1, "only user-a");
    assert_eq!(balance(&db, "user-a").await, (10, 0));
    assert_ledger_healthy(&db).await;
}

#[sqlx::test(migrations = false)]
async fn invalid_requests_are_refused_with_clear_messages(po: PgPoolOptions, co: PgConnectOptions) {
    let db = TestDb::new(po, co).await;
    let mut c = db.pool.acquire().await.unwrap();
    credits::grant(&mut c, "user-a", 100, "payment-1")
        .await
        .unwrap();

    let cases = [
        (
            NewGeneration {
                provider: "openai".into(),
                ..request("user-a", "k", 1)
            },
            "expected one of fal, byteplus, replicate",
        ),
        (
            NewGeneration {
                model: "".into(),
                ..request("user-a", "k", 1)
            },
            "model",
        ),
        (
            NewGeneration {
                input: serde_json::Value::Null,
                ..request("user-a", "k", 1)
            },
            "input",
        ),
        (request("user-a", "k", -1), "cost"),
        (request("user-a", "", 1), "idempotency_key"),
        (request("", "k", 1), "user_id"),
    ];
    for (req, expected) in cases {
        match credits::enqueue_generation(&mut c, &req).await {
            Err(CreditError::InvalidInput(msg)) => assert!(msg.contains(expected), "{msg}"),
            other => panic!("expected InvalidInput mentioning {expected}, got {other:?}"),
        }
    }
    assert_eq!(rows(&db, "genq.generations").await, 0);
    assert_eq!(balance(&db, "user-a").await, (100, 0));
    assert_ledger_healthy(&db).await;
}

#[sqlx::test(migrations = false)]
async fn a_hundred_concurrent_requests_against_credits_for_fifty_accept_exactly_fifty(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    let mut c = db.pool.acquire().await.unwrap();
    const COST: i64 = 7;
    credits::grant(&mut c, "user-a", 50 * COST, "payment-1")
        .await
        .unwrap();

    // Each request is its own task and its own transaction, as 100 API calls would be. The
    // pool is capped at 20 connections because tests share one server (max_connections
    // 100); every connection still runs its transactions concurrently with the others.
    let pool = PgPoolOptions::new()
        .max_connections(20)
        .connect_with(db.options.clone())
        .await
        .unwrap();
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(100));
    let mut tasks = Vec::new();
    for i in 0..100 {
        let pool = pool.clone();
        let barrier = barrier.clone();
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let mut tx = pool.begin().await.unwrap();
            let outcome =
                credits::enqueue_generation(&mut tx, &request("user-a", &format!("req-{i}"), COST))
                    .await;
            match outcome {
                Ok(id) => {
                    // Hold the user's lock a moment so the others pile up behind it.
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                    tx.commit().await.unwrap();
                    Ok(id)
                }
                Err(e) => {
                    tx.rollback().await.unwrap();
                    Err(e)
                }
            }
        }));
    }
    let (mut accepted, mut refused) = (Vec::new(), 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(id) => accepted.push(id),
            Err(CreditError::InsufficientCredits { needed, available }) => {
                assert_eq!((needed, available), (COST, 0));
                refused += 1;
            }
            Err(e) => panic!("unexpected error: {e:?}"),
        }
    }
    pool.close().await;

    accepted.sort();
    accepted.dedup();
    assert_eq!((accepted.len(), refused), (50, 50));
    assert_eq!(balance(&db, "user-a").await, (0, 50 * COST));
    assert_eq!(rows(&db, "genq.generations").await, 50);
    let holds: i64 = sqlx::query_scalar("SELECT count(*) FROM genq.ledger WHERE kind = 'hold'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(holds, 50);
    assert_eq!(db.count("generation.submit", JobState::Available).await, 50);
    assert_ledger_healthy(&db).await;
}

// ---------------------------------------------------------------------------------------
// Settlement: capture and release

#[sqlx::test(migrations = false)]
async fn a_capture_happens_once_and_a_captured_hold_cannot_be_released(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    let mut c = db.pool.acquire().await.unwrap();
    credits::grant(&mut c, "user-a", 100, "payment-1")
        .await
        .unwrap();
    let id = credits::enqueue_generation(&mut c, &request("user-a", "req-1", 30))
        .await
        .unwrap();
    set_state(&db, id, GenerationState::Submitted).await;

    assert!(
        finish(&db, id, GenerationState::Succeeded).await,
        "the first capture debits"
    );
    // A duplicate webhook or a retried job captures again: nothing happens.
    assert!(!credits::capture(&mut c, id).await.unwrap());
    assert_eq!(
        entries(&db, id).await,
        vec![("hold".into(), 30), ("capture".into(), 30)]
    );
    assert_eq!(balance(&db, "user-a").await, (70, 0));

    let err = credits::release(&mut c, id, "late failure")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "55000");
    assert!(err.to_string().contains("already captured"), "{err}");
    assert_eq!(balance(&db, "user-a").await, (70, 0));

    let err = credits::capture(&mut c, Uuid::new_v4()).await.unwrap_err();
    assert_eq!(sqlstate(&err), "P0002");
    let g = generation(&db, id).await;
    assert!(g.finished_at.is_some(), "a final state stamps finished_at");
    assert_ledger_healthy(&db).await;
}

#[sqlx::test(migrations = false)]
async fn a_release_happens_once_and_a_released_hold_cannot_be_captured(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    let mut c = db.pool.acquire().await.unwrap();
    credits::grant(&mut c, "user-a", 100, "payment-1")
        .await
        .unwrap();
    let id = credits::enqueue_generation(&mut c, &request("user-a", "req-1", 30))
        .await
        .unwrap();
    set_state(&db, id, GenerationState::Submitted).await;

    assert!(finish(&db, id, GenerationState::Failed).await);
    assert!(!credits::release(&mut c, id, "again").await.unwrap());
    assert_eq!(
        entries(&db, id).await,
        vec![("hold".into(), 30), ("release".into(), 30)]
    );
    let note: Option<String> = sqlx::query_scalar(
        "SELECT note FROM genq.ledger WHERE generation_id = $1 AND kind = 'release'",
    )
    .bind(id)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(note.as_deref(), Some("provider failed"));

    let err = credits::capture(&mut c, id).await.unwrap_err();
    assert_eq!(sqlstate(&err), "55000");
    assert!(err.to_string().contains("already released"), "{err}");
    assert_eq!(balance(&db, "user-a").await, (100, 0));
    assert_ledger_healthy(&db).await;
}

#[sqlx::test(migrations = false)]
async fn a_free_generation_still_records_zero_holds_and_captures(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    let mut c = db.pool.acquire().await.unwrap();
    // A user with no credits at all may still run a free generation.
    let id = credits::enqueue_generation(&mut c, &request("new-user", "free-1", 0))
        .await
        .unwrap();
    assert!(finish(&db, id, GenerationState::Succeeded).await);
    assert_eq!(
        entries(&db, id).await,
        vec![("hold".into(), 0), ("capture".into(), 0)]
    );
    assert_eq!(balance(&db, "new-user").await, (0, 0));
    assert_ledger_healthy(&db).await;
}

// ---------------------------------------------------------------------------------------
// Cancellation

#[sqlx::test(migrations = false)]
async fn cancelling_a_queued_generation_releases_it_and_cancels_its_submit_job(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    let mut c = db.pool.acquire().await.unwrap();
    credits::grant(&mut c, "user-a", 100, "payment-1")
        .await
        .unwrap();
    let id = credits::enqueue_generation(&mut c, &request("user-a", "req-1", 30))
        .await
        .unwrap();

    assert_eq!(
        credits::cancel_generation(&mut c, id).await.unwrap(),
        GenerationState::Cancelled
    );
    let g = generation(&db, id).await;
    assert_eq!(g.state, GenerationState::Cancelled);
    assert!(g.finished_at.is_some() && g.cancel_requested_at.is_some());
    assert_eq!(
        entries(&db, id).await,
        vec![("hold".into(), 30), ("release".into(), 30)]
    );
    assert_eq!(balance(&db, "user-a").await, (100, 0));
    let (_, _, _, job_state, _, _) = job_by_key(&db, &format!("generation.submit:{id}"))
        .await
        .unwrap();
    assert_eq!(job_state, JobState::Cancelled);

    // Cancelling again changes nothing; an unknown id is NotFound.
    assert_eq!(
        credits::cancel_generation(&mut c, id).await.unwrap(),
        GenerationState::Cancelled
    );
    assert_eq!(entries(&db, id).await.len(), 2);
    let unknown = Uuid::new_v4();
    assert!(matches!(
        credits::cancel_generation(&mut c, unknown).await,
        Err(CreditError::NotFound(u)) if u == unknown
    ));
    assert_ledger_healthy(&db).await;
}

#[sqlx::test(migrations = false)]
async fn cancelling_while_the_submit_job_runs_leaves_the_decision_to_that_job(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    let mut c = db.pool.acquire().await.unwrap();
    credits::grant(&mut c, "user-a", 100, "payment-1")
        .await
        .unwrap();
    let id = credits::enqueue_generation(&mut c, &request("user-a", "req-1", 30))
        .await
        .unwrap();
    // A daemon has claimed the submit job but not yet moved the generation.
    let claimed: Vec<i64> =
        sqlx::query_scalar("SELECT id FROM genq.claim('generation', 'w1', 10, 30)")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(claimed.len(), 1);

    assert_eq!(
        credits::cancel_generation(&mut c, id).await.unwrap(),
        GenerationState::Queued
    );
    let g = generation(&db, id).await;
    assert_eq!(g.state, GenerationState::Queued);
    assert!(
        g.cancel_requested_at.is_some(),
        "the submit job will see the request"
    );
    assert_eq!(
        entries(&db, id).await,
        vec![("hold".into(), 30)],
        "still held"
    );
    let (_, _, _, job_state, _, _) = job_by_key(&db, &format!("generation.submit:{id}"))
        .await
        .unwrap();
    assert_eq!(
        job_state,
        JobState::Running,
        "a running job is left to finish"
    );
    assert_ledger_healthy(&db).await;
}

#[sqlx::test(migrations = false)]
async fn cancelling_a_submitted_generation_enqueues_one_cancel_job(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    let mut c = db.pool.acquire().await.unwrap();
    credits::grant(&mut c, "user-a", 100, "payment-1")
        .await
        .unwrap();
    let id = credits::enqueue_generation(&mut c, &request("user-a", "req-1", 30))
        .await
        .unwrap();
    set_state(&db, id, GenerationState::Submitted).await;

    for _ in 0..2 {
        assert_eq!(
            credits::cancel_generation(&mut c, id).await.unwrap(),
            GenerationState::Submitted
        );
    }
    let cancel_key = format!("generation.cancel:{id}");
    let (_, kind, queue, state, _, payload) =
        job_by_key(&db, &cancel_key).await.expect("cancel job");
    assert_eq!(
        (kind.as_str(), queue.as_str(), state),
        ("generation.cancel", "generation", JobState::Available)
    );
    assert_eq!(payload, json!({"generation_id": id}));
    assert_eq!(
        db.count("generation.cancel", JobState::Available).await,
        1,
        "one job for two requests"
    );
    assert!(generation(&db, id).await.cancel_requested_at.is_some());
    assert_eq!(
        balance(&db, "user-a").await,
        (70, 30),
        "held until the provider confirms"
    );

    // The daemon's cancel job: the provider confirmed; cancelled and released together.
    assert!(finish(&db, id, GenerationState::Cancelled).await);
    assert_eq!(balance(&db, "user-a").await, (100, 0));
    // A final generation is left alone.
    assert_eq!(
        credits::cancel_generation(&mut c, id).await.unwrap(),
        GenerationState::Cancelled
    );
    assert_ledger_healthy(&db).await;
}

// ---------------------------------------------------------------------------------------
// The ledger: append-only, audited

#[sqlx::test(migrations = false)]
async fn the_ledger_is_append_only_except_for_de_identification(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    let mut c = db.pool.acquire().await.unwrap();
    credits::grant(&mut c, "user-a", 100, "payment-1")
        .await
        .unwrap();

    for statement in [
        "UPDATE genq.ledger SET amount = 1000",
        "UPDATE genq.ledger SET user_id = 'x', amount = 1000",
        "DELETE FROM genq.ledger",
        "TRUNCATE genq.ledger",
    ] {
        let err = sqlx::query(statement).execute(&db.pool).await.unwrap_err();
        assert!(
            err.to_string().contains("append-only"),
            "{statement}: {err}"
        );
    }
    // The privacy job replaces the user id of a deleted account and keeps the amounts.
    let mut tx = db.pool.begin().await.unwrap();
    sqlx::query("UPDATE genq.ledger SET user_id = 'deleted-1' WHERE user_id = 'user-a'")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("UPDATE genq.accounts SET user_id = 'deleted-1' WHERE user_id = 'user-a'")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(balance(&db, "deleted-1").await, (100, 0));
    assert_ledger_healthy(&db).await;
}

#[sqlx::test(migrations = false)]
async fn check_ledger_reports_hand_made_corruption(po: PgPoolOptions, co: PgConnectOptions) {
    let db = TestDb::new(po, co).await;
    let mut c = db.pool.acquire().await.unwrap();
    credits::grant(&mut c, "user-a", 100, "payment-1")
        .await
        .unwrap();
    credits::grant(&mut c, "user-b", 100, "payment-2")
        .await
        .unwrap();
    let released = credits::enqueue_generation(&mut c, &request("user-a", "r1", 30))
        .await
        .unwrap();
    finish(&db, released, GenerationState::Failed).await;
    let queued = credits::enqueue_generation(&mut c, &request("user-a", "r2", 10))
        .await
        .unwrap();
    let repriced = credits::enqueue_generation(&mut c, &request("user-b", "r3", 20))
        .await
        .unwrap();
    let unheld = credits::enqueue_generation(&mut c, &request("user-b", "r4", 5))
        .await
        .unwrap();
    assert_ledger_healthy(&db).await;

    // Bypass the functions, as a buggy script with superuser rights would.
    let corruption = [
        // A capture on top of a release.
        format!("INSERT INTO genq.ledger (user_id, kind, amount, generation_id) VALUES ('user-a', 'capture', 30, '{released}')"),
        // A queued generation marked succeeded without its capture.
        format!("UPDATE genq.generations SET state = 'succeeded' WHERE id = '{queued}'"),
        // A generation whose cost no longer matches its hold.
        format!("UPDATE genq.generations SET cost = 21 WHERE id = '{repriced}'"),
        // A hold removed behind the trigger's back.
        "ALTER TABLE genq.ledger DISABLE TRIGGER ledger_append_only".to_string(),
        format!("DELETE FROM genq.ledger WHERE generation_id = '{unheld}'"),
        "ALTER TABLE genq.ledger ENABLE TRIGGER ledger_append_only".to_string(),
        // Free credits for user-b.
        "UPDATE genq.accounts SET available = available + 1000 WHERE user_id = 'user-b'".to_string(),
    ];
    for statement in &corruption {
        sqlx::query(statement).execute(&db.pool).await.unwrap();
    }

    let violations = credits::check_ledger(&mut c).await.unwrap();
    let found = |invariant: &str, needle: &str| {
        violations
            .iter()
            .any(|v| v.invariant == invariant && v.detail.contains(needle))
    };
    assert!(
        found("capture_and_release", &released.to_string()),
        "{violations:#?}"
    );
    assert!(
        found("succeeded_without_capture", &queued.to_string()),
        "{violations:#?}"
    );
    assert!(
        found("hold_amount_mismatch", &repriced.to_string()),
        "{violations:#?}"
    );
    assert!(
        found("generation_without_hold", &unheld.to_string()),
        "{violations:#?}"
    );
    // A failed generation may carry a capture only when its output was unfetchable.
    assert!(
        found("captured_without_output", &released.to_string()),
        "{violations:#?}"
    );
    assert!(found("balance_mismatch", "user-a"), "{violations:#?}");
    assert!(found("balance_mismatch", "user-b"), "{violations:#?}");
    assert_eq!(violations.len(), 7, "nothing else: {violations:#?}");
}

// ---------------------------------------------------------------------------------------
// Who may call what

#[sqlx::test(migrations = false)]
async fn only_granted_roles_reach_credits_and_the_backend_role_cannot_settle(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    let mut c = db.pool.acquire().await.unwrap();
    credits::grant(&mut c, "user-a", 100, "payment-1")
        .await
        .unwrap();
    let stranger = create_login_role(&db, None).await;
    let roles = crate::common::privileges::Roles::of(&db);
    let backend = create_login_role(&db, Some(&roles.backend())).await;
    let worker = create_login_role(&db, Some(&roles.worker())).await;

    let scenario = AssertUnwindSafe(async {
        // A role with no grants reaches nothing.
        let mut conn = connect_as(&db, &stranger).await;
        let denied = credits::grant(&mut conn, "user-a", 1_000_000, "free-money").await;
        assert!(
            matches!(&denied, Err(CreditError::Database(e)) if sqlstate(e) == "42501"),
            "{denied:?}"
        );
        for statement in [
            "SELECT count(*) FROM genq.ledger",
            "SELECT count(*) FROM genq.generations",
            "SELECT genq.enqueue('noop')",
        ] {
            let err = sqlx::query(statement).execute(&mut conn).await.unwrap_err();
            assert_eq!(sqlstate(&err), "42501", "{statement}: {err}");
        }
        conn.close().await.unwrap();

        // The backend enqueues and reads balances, with no table rights at all.
        let mut conn = connect_as(&db, &backend).await;
        let id = credits::enqueue_generation(&mut conn, &request("user-a", "req-1", 30))
            .await
            .unwrap();
        assert_eq!(
            credits::balance(&mut conn, "user-a").await.unwrap(),
            credits::Balance {
                available: 70,
                held: 30
            }
        );
        sqlx::query("SELECT genq.enqueue('noop', '{}')")
            .execute(&mut conn)
            .await
            .unwrap();
        assert_eq!(
            credits::grant(&mut conn, "user-a", 5, "payment-2")
                .await
                .unwrap(),
            75
        );
        // ... but it cannot settle holds, audit, or read the money tables (it reads
        // generations, for their results).
        let err = credits::capture(&mut conn, id).await.unwrap_err();
        assert_eq!(sqlstate(&err), "42501", "{err}");
        let err = credits::release(&mut conn, id, "nope").await.unwrap_err();
        assert_eq!(sqlstate(&err), "42501", "{err}");
        let err = credits::check_ledger(&mut conn).await.unwrap_err();
        assert_eq!(sqlstate(&err), "42501", "{err}");
        for statement in [
            "SELECT count(*) FROM genq.ledger",
            "SELECT count(*) FROM genq.accounts",
            "UPDATE genq.accounts SET available = 1000000",
        ] {
            let err = sqlx::query(statement).execute(&mut conn).await.unwrap_err();
            assert_eq!(sqlstate(&err), "42501", "{statement}: {err}");
        }
        assert_eq!(
            credits::cancel_generation(&mut conn, id).await.unwrap(),
            GenerationState::Cancelled
        );
        conn.close().await.unwrap();

        // The daemon's role settles and audits.
        let mut conn = connect_as(&db, &worker).await;
        let other = credits::enqueue_generation(&mut conn, &request("user-a", "req-2", 30))
            .await
            .unwrap();
        sqlx::query("UPDATE genq.generations SET state = 'succeeded' WHERE id = $1")
            .bind(other)
            .execute(&mut conn)
            .await
            .unwrap();
        assert!(credits::capture(&mut conn, other).await.unwrap());
        assert!(credits::check_ledger(&mut conn).await.unwrap().is_empty());
        let err = sqlx::query("TRUNCATE genq.ledger")
            .execute(&mut conn)
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&err), "42501", "{err}");
        conn.close().await.unwrap();
    })
    .catch_unwind()
    .await;

    for role in [&stranger, &backend, &worker] {
        drop_role(&db, role).await;
    }
    if let Err(panic) = scenario {
        std::panic::resume_unwind(panic);
    }
    assert_ledger_healthy(&db).await;
}
