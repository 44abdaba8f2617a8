//! The change notification: `genq_generation` carries id, user, version and state, is
//! delivered at commit and never for a rolled-back change, and the backend role can call
//! every read.

use sqlx::postgres::PgListener;
use sqlx::{Connection, PgConnection};

use crate::common::privileges::{login, Roles};

use super::*;

/// The next notification on the listener (bounded wait, so a missing one fails the test).
async fn next(listener: &mut PgListener) -> reads::Changed {
    let n = tokio::time::timeout(Duration::from_secs(20), listener.recv())
        .await
        .expect("a notification")
        .unwrap();
    assert_eq!(n.channel(), reads::CHANNEL);
    assert!(n.payload().len() < 8000);
    reads::Changed::parse(n.payload()).unwrap()
}

#[sqlx::test(migrations = false)]
async fn changes_are_announced_at_commit_and_never_for_a_rollback(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let env = GenEnv::setup(po, co).await;
    // A long user id (grants key on it too, so not the full 255 bytes).
    let long_user = "u".repeat(200);
    env.grant(&long_user, 100).await;
    let mut listener = PgListener::connect_with(&env.db.pool).await.unwrap();
    listener.listen(reads::CHANNEL).await.unwrap();

    // A generation enqueued, then rolled back: no notification.
    let mut tx = env.db.pool.begin().await.unwrap();
    credits::enqueue_generation(
        &mut tx,
        &credits::NewGeneration {
            user_id: long_user.clone(),
            provider: "fal".into(),
            model: "fal-ai/x".into(),
            input: json!({"prompt": "never"}),
            cost: 10,
            idempotency_key: "rolled-back".into(),
        },
    )
    .await
    .unwrap();
    tx.rollback().await.unwrap();

    // Committed ones are announced, in order: so the first one seen proves the rollback
    // sent nothing.
    let id = env.request(&long_user, "fal", 10).await;
    let created = next(&mut listener).await;
    assert_eq!(created.id, id);
    assert_eq!(created.user_id, long_user);
    assert_eq!(created.state, GenerationState::Queued);
    assert_eq!(created.version, get(&env.db, id).await["version"]);

    let mut conn = env.db.pool.acquire().await.unwrap();
    credits::cancel_generation(&mut conn, id).await.unwrap();
    let cancelled = next(&mut listener).await;
    assert_eq!(
        (cancelled.id, cancelled.state),
        (id, GenerationState::Cancelled)
    );
    assert!(cancelled.version > created.version);

    // An update that changes neither state nor progress announces nothing: the next
    // notification is the next real change.
    sqlx::query("UPDATE genq.generations SET provider_meta = '{\"x\": 1}' WHERE id = $1")
        .bind(id)
        .execute(&env.db.pool)
        .await
        .unwrap();
    delete(&env.db, id).await;
    let deleted = next(&mut listener).await;
    assert!(deleted.version > cancelled.version);
    assert!(!get(&env.db, id).await["deleted_at"].is_null());
}

#[sqlx::test(migrations = false)]
async fn the_backend_role_reads_lists_and_recreates(po: PgPoolOptions, co: PgConnectOptions) {
    let env = GenEnv::setup(po, co).await;
    env.grant("u1", 100).await;
    let id = env.request("u1", "fal", 10).await;
    let roles = Roles::of(&env.db);
    let backend = login(
        &env.db,
        &format!("{}_reader", roles.prefix),
        Some(&roles.backend()),
        "",
    )
    .await;
    let mut conn = PgConnection::connect_with(&backend).await.unwrap();
    let g = reads::get(&mut conn, id).await.unwrap().unwrap();
    assert_eq!(g["state"], "queued");
    assert_eq!(
        reads::list(&mut conn, "u1", 5, None).await.unwrap().len(),
        1
    );
    let again = reads::recreate(&mut conn, id, "again").await.unwrap();
    assert_ne!(again, id);
    // The internals stay out of reach.
    for sql in [
        "SELECT genq.generation_json(g) FROM genq.generations g",
        "SELECT count(*) FROM genq.ledger",
    ] {
        let err = sqlx::query(sql).execute(&mut conn).await.unwrap_err();
        assert_eq!(sqlstate(&err), "42501", "{sql}: {err}");
    }
    conn.close().await.unwrap();
    env.assert_ledger_clean().await;
}
