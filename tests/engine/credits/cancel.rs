//! Credits, cancelling a generation while queued, while its submit job runs, and once
//! submitted.

use super::*;

// ---------------------------------------------------------------------------------------
// Cancellation

#[sqlx::test(migrations = false)]
async fn cancelling_a_queued_generation_releases_it_and_cancels_its_submit_job(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let (db, mut c) = setup(po, co).await;
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
    let (db, mut c) = setup(po, co).await;
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
    let (db, mut c, id) = submitted(po, co).await;

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
