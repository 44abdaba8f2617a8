//! GQ429 at enqueue: over `max_queued` (generations not yet submitted) or `per_minute`,
//! `genq.enqueue_generation` raises GQ429 with a JSON DETAIL and writes nothing; a repeated
//! idempotency key still returns its generation; submitted work frees the queued quota.

use super::*;

#[sqlx::test(migrations = false)]
async fn over_max_queued_raises_gq429_and_writes_nothing(po: PgPoolOptions, co: PgConnectOptions) {
    let (db, mut c) = setup(po, co).await;
    set(
        &db,
        "user-a",
        Plan {
            max_queued: Some(2),
            ..Plan::default()
        },
    )
    .await
    .unwrap();
    let first = credits::enqueue_generation(&mut c, &request("user-a", "k1"))
        .await
        .unwrap();
    credits::enqueue_generation(&mut c, &request("user-a", "k2"))
        .await
        .unwrap();
    let before = (
        rows(&db, "genq.generations").await,
        rows(&db, "genq.jobs").await,
        rows(&db, "genq.ledger").await,
        credits::balance(&mut c, "user-a").await.unwrap(),
    );

    match credits::enqueue_generation(&mut c, &request("user-a", "k3")).await {
        Err(CreditError::QuotaExceeded {
            limit,
            max,
            current,
        }) => {
            assert_eq!((limit.as_str(), max, current), ("max_queued", 2, 2))
        }
        other => panic!("expected QuotaExceeded, got {other:?}"),
    }
    // What a TypeScript backend sees.
    let err = sqlx::query("SELECT genq.enqueue_generation('user-a', 'fal', 'm', '{}', 1, 'k3')")
        .execute(&db.pool)
        .await
        .unwrap_err();
    let (code, message, detail) = pg_error(&err);
    assert_eq!(code, "GQ429");
    assert_eq!(
        message,
        "too many queued generations: 2 waiting, at most 2 allowed"
    );
    assert_eq!(
        detail,
        Some(json!({"limit": "max_queued", "max": 2, "current": 2}))
    );

    let after = (
        rows(&db, "genq.generations").await,
        rows(&db, "genq.jobs").await,
        rows(&db, "genq.ledger").await,
        credits::balance(&mut c, "user-a").await.unwrap(),
    );
    assert_eq!(
        before, after,
        "nothing written: no generation, job, hold or balance change"
    );

    // A repeated key is not new work: it returns its generation, over quota or not.
    assert_eq!(
        credits::enqueue_generation(&mut c, &request("user-a", "k1"))
            .await
            .unwrap(),
        first
    );
    // Another user is not limited by user-a's plan.
    credits::grant(&mut c, "user-b", 10, "payment-b")
        .await
        .unwrap();
    credits::enqueue_generation(&mut c, &request("user-b", "k3"))
        .await
        .unwrap();

    // Once one is submitted (no longer waiting), there is room again.
    sqlx::query("UPDATE genq.generations SET state = 'submitted', submitted_at = now(), provider_request_id = 'r' WHERE id = $1")
        .bind(first)
        .execute(&db.pool)
        .await
        .unwrap();
    credits::enqueue_generation(&mut c, &request("user-a", "k3"))
        .await
        .unwrap();
    ledger_clean(&db).await;
}

#[sqlx::test(migrations = false)]
async fn over_per_minute_raises_gq429_and_writes_nothing(po: PgPoolOptions, co: PgConnectOptions) {
    let (db, mut c) = setup(po, co).await;
    set(
        &db,
        "user-a",
        Plan {
            per_minute: Some(3),
            ..Plan::default()
        },
    )
    .await
    .unwrap();
    let mut ids = Vec::new();
    for k in ["k1", "k2", "k3"] {
        ids.push(
            credits::enqueue_generation(&mut c, &request("user-a", k))
                .await
                .unwrap(),
        );
    }
    // Submitted or not, they were enqueued within the minute.
    sqlx::query("UPDATE genq.generations SET state = 'submitted', submitted_at = now(), provider_request_id = 'r'")
        .execute(&db.pool)
        .await
        .unwrap();
    let before = (
        rows(&db, "genq.generations").await,
        rows(&db, "genq.ledger").await,
    );
    let err = sqlx::query("SELECT genq.enqueue_generation('user-a', 'fal', 'm', '{}', 1, 'k4')")
        .execute(&db.pool)
        .await
        .unwrap_err();
    let (code, message, detail) = pg_error(&err);
    assert_eq!(code, "GQ429");
    assert_eq!(
        message,
        "too many generations per minute: 3 in the last minute, at most 3 allowed"
    );
    assert_eq!(
        detail,
        Some(json!({"limit": "per_minute", "max": 3, "current": 3}))
    );
    assert_eq!(
        before,
        (
            rows(&db, "genq.generations").await,
            rows(&db, "genq.ledger").await
        )
    );

    // A minute later (the rows re-dated), the user may enqueue again.
    sqlx::query("UPDATE genq.generations SET created_at = created_at - interval '61 seconds'")
        .execute(&db.pool)
        .await
        .unwrap();
    credits::enqueue_generation(&mut c, &request("user-a", "k4"))
        .await
        .unwrap();
    ledger_clean(&db).await;
}

#[sqlx::test(migrations = false)]
async fn defaults_from_config_apply_to_users_without_a_plan(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let (db, mut c) = setup(po, co).await;
    let users = genq::plans::UsersConfig {
        max_in_flight: 4,
        max_queued: 1,
        per_minute: 0,
    };
    // What the daemon's start hooks do: [users] max_queued and per_minute to the defaults
    // row, max_in_flight as the generation queue's per-key limit.
    plans::apply_defaults(&db.pool, &users).await.unwrap();
    set_queue_key_limit(&db, Some(4)).await;
    assert_eq!(
        plans::get_user_limits(&mut c, "user-a").await.unwrap(),
        defaults(Some(4), Some(1), None)
    );
    credits::enqueue_generation(&mut c, &request("user-a", "k1"))
        .await
        .unwrap();
    assert!(matches!(
        credits::enqueue_generation(&mut c, &request("user-a", "k2")).await,
        Err(CreditError::QuotaExceeded { ref limit, max: 1, current: 1 }) if limit == "max_queued"
    ));
    // A plan overrides the default; the other fields keep following it.
    let limits = set(
        &db,
        "user-a",
        Plan {
            max_queued: Some(5),
            ..Plan::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        (limits.max_queued, limits.max_queued_default),
        (Some(5), false)
    );
    assert_eq!(
        (limits.max_in_flight, limits.max_in_flight_default),
        (Some(4), true)
    );
    credits::enqueue_generation(&mut c, &request("user-a", "k2"))
        .await
        .unwrap();

    // Unlimited again (0 in config): the defaults row goes back to NULL.
    plans::apply_defaults(&db.pool, &Default::default())
        .await
        .unwrap();
    set_queue_key_limit(&db, None).await;
    assert_eq!(
        plans::get_user_limits(&mut c, "user-b").await.unwrap(),
        defaults(None, None, None)
    );
    // Out-of-range defaults are refused at config load, before any daemon starts.
    let err = genq::Config::from_toml_and_env("[users]\nmax_queued = 2000000\n", "test", &[])
        .unwrap_err();
    assert!(
        err.to_string().contains("users.max_queued is 2000000"),
        "{err}"
    );
}

#[sqlx::test(migrations = false)]
async fn the_daemon_writes_the_users_defaults_at_start(po: PgPoolOptions, co: PgConnectOptions) {
    let db = TestDb::new(po, co).await;
    let mut config = crate::common::fast_config();
    config.users.max_queued = 7;
    config.users.per_minute = 30;
    let mut registry = genq::Registry::new();
    genq::app::register_product(&mut registry, &config).unwrap();
    let daemon = db.daemon(config, registry);
    let mut c = db.pool.acquire().await.unwrap();
    crate::common::wait_until(
        std::time::Duration::from_secs(20),
        "the start hook wrote [users]",
        || {
            let pool = db.pool.clone();
            async move {
                let mut c = pool.acquire().await.unwrap();
                plans::get_user_limits(&mut c, "anyone")
                    .await
                    .unwrap()
                    .max_queued
                    == Some(7)
            }
        },
    )
    .await;
    assert_eq!(
        plans::get_user_limits(&mut c, "anyone").await.unwrap(),
        defaults(None, Some(7), Some(30))
    );
    daemon.shutdown().await;
}

/// The generation queue's per-key limit (the default max_in_flight), as the daemon sets it.
async fn set_queue_key_limit(db: &TestDb, limit: Option<i32>) {
    sqlx::query("SELECT genq.set_queue_fairness('generation', true, $1)")
        .bind(limit)
        .execute(&db.pool)
        .await
        .unwrap();
}

#[test]
fn users_max_in_flight_is_the_generation_queues_key_limit() {
    let config =
        genq::Config::from_toml_and_env("[users]\nmax_in_flight = 3\n", "test", &[]).unwrap();
    assert_eq!(
        config.engine().queues["generation"].key_max_active,
        Some(3),
        "the daemon writes it as the generation queue's per-key default"
    );
    // Both set to different values: refused, naming both.
    let err = genq::Config::from_toml_and_env(
        "[users]\nmax_in_flight = 3\n[queues.generation]\nconcurrency = 16\nfair = true\nkey_max_active = 5\n",
        "test",
        &[],
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("users.max_in_flight (3) and queues.generation.key_max_active (5)"),
        "{err}"
    );
    // From the environment, like every key.
    let env = [("GENQ_USERS_MAX_QUEUED".to_string(), "25".to_string())];
    let config = genq::Config::from_toml_and_env("", "test", &env).unwrap();
    assert_eq!(config.users.max_queued, 25);
}
