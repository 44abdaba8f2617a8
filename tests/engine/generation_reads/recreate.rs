//! `genq.recreate_generation`: a new generation with the same provider, model, input and
//! cost, its credits held like any enqueue; idempotent per key; refused with nothing written
//! when the input was scrubbed, the credits do not suffice, or the id is unknown.

use super::*;

async fn recreate(db: &TestDb, id: Uuid, key: &str) -> Result<Uuid, sqlx::Error> {
    let mut conn = db.pool.acquire().await.unwrap();
    reads::recreate(&mut conn, id, key).await
}

#[sqlx::test(migrations = false)]
async fn recreate_enqueues_the_same_request_again_and_holds_its_cost_once_per_key(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let env = GenEnv::setup(po, co).await;
    env.grant("u1", 100).await;
    let input = json!({"prompt": "the same fox, again", "seed": 7});
    let source = env
        .request_with_input("u1", "byteplus", 25, input.clone())
        .await;
    let mut conn = env.db.pool.acquire().await.unwrap();
    credits::cancel_generation(&mut conn, source).await.unwrap();

    let again = recreate(&env.db, source, "click-1").await.unwrap();
    assert_ne!(again, source);
    let (a, b) = (get(&env.db, source).await, get(&env.db, again).await);
    for field in ["user_id", "provider", "model", "input", "cost"] {
        assert_eq!(a[field], b[field], "{field}");
    }
    assert_eq!(b["state"], "queued");
    assert_eq!(
        b["credits"],
        json!({"held": 25, "captured": 0, "released": 0})
    );
    assert_eq!(env.balance("u1").await.available, 75);
    // The submit job exists, as for any enqueue.
    let jobs: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM genq.jobs WHERE unique_key = 'generation.submit:' || $1::text",
    )
    .bind(again)
    .fetch_one(&env.db.pool)
    .await
    .unwrap();
    assert_eq!(jobs, 1);

    // The same key again: the same generation, nothing more held.
    let before = footprint(&env.db).await;
    assert_eq!(recreate(&env.db, source, "click-1").await.unwrap(), again);
    assert_eq!(footprint(&env.db).await, before);
    assert_eq!(env.balance("u1").await.available, 75);
    // A new key: another one.
    let third = recreate(&env.db, source, "click-2").await.unwrap();
    assert!(third != again && third != source);
    assert_eq!(env.balance("u1").await.available, 50);
    env.assert_ledger_clean().await;
}

#[sqlx::test(migrations = false)]
async fn recreating_a_scrubbed_or_deleted_generation_fails_clearly_and_writes_nothing(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let env = GenEnv::setup(po, co).await;
    env.grant("u1", 100).await;
    let scrubbed = cancelled(&env, "u1", 10).await;
    let deleted = env.request("u1", "fal", 10).await;
    scrub(&env.db, scrubbed).await;
    delete(&env.db, deleted).await;
    let before = footprint(&env.db).await;
    let balance = env.balance("u1").await;
    for (id, says) in [(scrubbed, "scrubbed by retention"), (deleted, "deleted")] {
        let err = recreate(&env.db, id, &format!("again-{id}"))
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&err), reads::INPUT_GONE, "{err}");
        assert!(err.to_string().contains(says), "{err}");
    }
    assert_eq!(footprint(&env.db).await, before);
    assert_eq!(env.balance("u1").await, balance);
}

#[sqlx::test(migrations = false)]
async fn recreate_without_enough_credits_is_gq402_and_writes_nothing(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let env = GenEnv::setup(po, co).await;
    env.grant("u1", 60).await;
    let source = env.request("u1", "replicate", 40).await;
    let before = footprint(&env.db).await;
    let err = recreate(&env.db, source, "click-1").await.unwrap_err();
    assert_eq!(sqlstate(&err), credits::INSUFFICIENT_CREDITS, "{err}");
    assert_eq!(footprint(&env.db).await, before);
    assert_eq!(env.balance("u1").await.available, 20);
    env.assert_ledger_clean().await;
}

#[sqlx::test(migrations = false)]
async fn unknown_ids_and_bad_keys_are_refused(po: PgPoolOptions, co: PgConnectOptions) {
    let env = GenEnv::setup(po, co).await;
    env.grant("u1", 100).await;
    let source = env.request("u1", "fal", 10).await;
    let err = recreate(&env.db, Uuid::new_v4(), "k").await.unwrap_err();
    assert_eq!(sqlstate(&err), "P0002", "{err}");
    let before = footprint(&env.db).await;
    for key in ["", &"k".repeat(256)] {
        let err = recreate(&env.db, source, key).await.unwrap_err();
        assert_eq!(sqlstate(&err), "22023", "key of {} bytes: {err}", key.len());
    }
    let err = sqlx::query("SELECT genq.recreate_generation($1, NULL)")
        .bind(source)
        .execute(&env.db.pool)
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "22023", "{err}");
    assert_eq!(footprint(&env.db).await, before);
}
