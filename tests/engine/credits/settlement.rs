//! Credits, settling a hold: captured once or released once, never both, and free
//! generations still recorded.

use super::*;

// ---------------------------------------------------------------------------------------
// Settlement: capture and release

#[sqlx::test(migrations = false)]
async fn a_capture_happens_once_and_a_captured_hold_cannot_be_released(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let (db, mut c, id) = submitted(po, co).await;

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
    let (db, mut c, id) = submitted(po, co).await;

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
