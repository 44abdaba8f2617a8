//! Credits, asking for a generation: grants applied once per key, holds taken in the
//! caller's transaction, repeated keys, refusals (GQ402, bad input) that write nothing, and
//! a hundred concurrent requests against credits for fifty.

use super::*;

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
    let (db, mut c) = setup(po, co).await;

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
    let (db, mut c) = setup(po, co).await;

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
    let (db, mut c) = setup(po, co).await;

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
