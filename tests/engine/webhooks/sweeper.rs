//! Webhooks that never come: the sweeper finishes or fails the generations left waiting.

use super::*;

/// [`GenEnv::setup`] with a sweep every second that finds generations stale after one
/// second, and 100 credits for `u1`.
async fn sweeping_setup(po: PgPoolOptions, co: PgConnectOptions) -> GenEnv {
    let mut env = GenEnv::setup(po, co).await;
    env.config.sweep.interval = Duration::from_secs(1);
    env.config.sweep.stale_after = Duration::from_secs(1);
    env.grant("u1", 100).await;
    env
}

#[sqlx::test(migrations = false)]
async fn the_sweeper_finishes_generations_whose_callback_never_comes(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let env = sweeping_setup(po, co).await;
    // No callback comes (port 9), and the poll job is lost: cancelled by hand.
    let mut config = env.config.clone();
    config.queues.remove("maintenance");
    let daemon = env.daemon_with(config);
    let lost = env.request("u1", "byteplus", 10).await;
    let expired = env.request("u1", "replicate", 10).await;
    for id in [lost, expired] {
        wait_until(Duration::from_secs(20), "submitted", || async {
            env.generation(id).await.state == GenerationState::Submitted
        })
        .await;
    }
    daemon.shutdown().await;
    sqlx::query("DELETE FROM genq.jobs WHERE kind = 'generation.poll'")
        .execute(&env.db.pool)
        .await
        .unwrap();
    // One of them was submitted longer ago than the retention window.
    sqlx::query(
        "UPDATE genq.generations SET submitted_at = now() - interval '8 days' WHERE id = $1",
    )
    .bind(expired)
    .execute(&env.db.pool)
    .await
    .unwrap();
    let daemon = env.daemon();
    let g = env.wait_final(lost, Duration::from_secs(30)).await;
    env.assert_output_stored(&g);
    assert_eq!(env.entries(lost).await, vec!["hold", "capture"]);
    let g = env.wait_final(expired, Duration::from_secs(30)).await;
    assert_eq!(g.state, GenerationState::Failed);
    assert!(g.error.as_deref().unwrap().contains("retention"), "{g:?}");
    assert_eq!(env.entries(expired).await, vec!["hold", "release"]);
    daemon.shutdown().await;
    assert_eq!(env.balance("u1").await.available, 90);
    env.assert_ledger_clean().await;
}

#[sqlx::test(migrations = false)]
async fn the_sweeper_fails_generations_whose_submit_job_is_final(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let env = sweeping_setup(po, co).await;
    // Nobody works the generation queue: submit jobs stay as they are set here.
    let mut config = env.config.clone();
    config.queues.remove("generation");
    let discarded = env.request("u1", "replicate", 10).await;
    let cancelled = env.request("u1", "fal", 10).await;
    let alive = env.request("u1", "byteplus", 10).await;
    for (id, state) in [(discarded, "discarded"), (cancelled, "cancelled")] {
        sqlx::query(
            "UPDATE genq.jobs SET state = $2::genq.job_state, finished_at = now()
              WHERE unique_key = 'generation.submit:' || $1::text",
        )
        .bind(id)
        .bind(state)
        .execute(&env.db.pool)
        .await
        .unwrap();
    }
    // One of them had started submitting when its job ran out of attempts.
    sqlx::query("UPDATE genq.generations SET state = 'submitting' WHERE id = $1")
        .bind(discarded)
        .execute(&env.db.pool)
        .await
        .unwrap();
    let daemon = env.daemon_with(config);
    for id in [discarded, cancelled] {
        let g = env.wait_final(id, Duration::from_secs(30)).await;
        assert_eq!(g.state, GenerationState::Failed);
        assert!(
            g.error.as_deref().unwrap().contains("submit job ended"),
            "{g:?}"
        );
        assert_eq!(env.entries(id).await, vec!["hold", "release"]);
    }
    // A generation whose submit job is still waiting is left alone.
    tokio::time::sleep(Duration::from_secs(2)).await;
    daemon.shutdown().await;
    assert_eq!(env.generation(alive).await.state, GenerationState::Queued);
    assert_eq!(env.entries(alive).await, vec!["hold"]);
    assert_eq!(env.balance("u1").await.available, 90);
    env.assert_ledger_clean().await;
}
