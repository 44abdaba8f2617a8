//! The generation pipeline on the fair `generation` queue: each submit job carries its
//! user as fairness key and `render:<provider>` as group; a render slot is held from submit
//! until the generation is final (success, cancel), so `max_rendering` and a per-user limit
//! cap generations *in flight at the provider*, fleet-wide, and every slot comes back.

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use genq::config::QueueConfig;
use genq::credits::GenerationState;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use uuid::Uuid;

use crate::common::generation::GenEnv;
use crate::common::{wait_until, TestDb};

/// Most generations in flight (submitting or submitted) at once, per user and overall.
async fn in_flight(env: &GenEnv) -> (i64, i64) {
    sqlx::query_as(
        "SELECT coalesce(max(n), 0), coalesce(sum(n), 0)::bigint FROM (
           SELECT count(*) AS n FROM genq.generations
            WHERE state IN ('submitting', 'submitted') GROUP BY user_id) s",
    )
    .fetch_one(&env.db.pool)
    .await
    .unwrap()
}

async fn slots_left(env: &GenEnv) -> (i64, i64) {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM genq.fair_slots),
                (SELECT count(*) FROM genq.generations WHERE fair_slot_id IS NOT NULL)",
    )
    .fetch_one(&env.db.pool)
    .await
    .unwrap()
}

/// Samples in-flight counts until every generation in `ids` is final.
async fn run_sampling(env: &GenEnv, ids: &[Uuid]) -> (i64, i64) {
    let (per_user, total) = (AtomicI64::new(0), AtomicI64::new(0));
    wait_until(
        Duration::from_secs(60),
        "every generation to end",
        || async {
            let (u, t) = in_flight(env).await;
            per_user.fetch_max(u, Ordering::Relaxed);
            total.fetch_max(t, Ordering::Relaxed);
            let mut done = true;
            for id in ids {
                done &= env.generation(*id).await.state.is_final();
            }
            done
        },
    )
    .await;
    (per_user.into_inner(), total.into_inner())
}

#[sqlx::test(migrations = false)]
async fn max_rendering_caps_generations_in_flight_and_frees_each_slot_when_final(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let mut env = GenEnv::setup(po, co).await;
    env.config
        .providers
        .limits
        .entry("fal".into())
        .or_default()
        .max_rendering = Some(1);
    for u in ["u1", "u2"] {
        env.grant(u, 100).await;
    }
    let daemon = env.daemon();
    // The daemon writes the limit at start (its start hooks run beside the first claims).
    wait_until(
        Duration::from_secs(20),
        "the render limit to be written",
        || async {
            sqlx::query_scalar::<_, Option<i32>>(
                "SELECT max_active FROM genq.limit_groups WHERE name = 'render:fal'",
            )
            .fetch_optional(&env.db.pool)
            .await
            .unwrap()
            .flatten()
                == Some(1)
        },
    )
    .await;
    let mut ids = Vec::new();
    for u in ["u1", "u1", "u2"] {
        ids.push(env.request(u, "fal", 10).await);
    }
    let (_, total) = run_sampling(&env, &ids).await;
    daemon.shutdown().await;
    assert!(total <= 1, "at most one fal render in flight, saw {total}");
    for id in &ids {
        assert_eq!(env.generation(*id).await.state, GenerationState::Succeeded);
    }
    let tagged: Vec<(Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT j.fairness_key, j.limit_group FROM genq.jobs j
          WHERE j.kind = 'generation.submit' ORDER BY j.id",
    )
    .fetch_all(&env.db.pool)
    .await
    .unwrap();
    assert_eq!(tagged.len(), 3);
    for ((key, group), user) in tagged.iter().zip(["u1", "u1", "u2"]) {
        assert_eq!(key.as_deref(), Some(user));
        assert_eq!(group.as_deref(), Some("render:fal"));
    }
    let limit: Option<i32> =
        sqlx::query_scalar("SELECT max_active FROM genq.limit_groups WHERE name = 'render:fal'")
            .fetch_one(&env.db.pool)
            .await
            .unwrap();
    assert_eq!(
        limit,
        Some(1),
        "written from [providers.limits.fal] at start"
    );
    assert_eq!(slots_left(&env).await, (0, 0), "every render slot freed");
    env.assert_ledger_clean().await;
}

#[sqlx::test(migrations = false)]
async fn a_user_limit_counts_renders_in_flight_and_a_cancel_frees_the_slot(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let mut env = GenEnv::new(TestDb::new(po, co).await, Duration::from_secs(30)).await;
    env.config.queues.insert(
        "generation".into(),
        QueueConfig {
            fair: Some(true),
            key_max_active: Some(1),
            ..QueueConfig::with_concurrency(20)
        },
    );
    env.grant("u1", 100).await;
    let daemon = env.daemon();
    wait_until(
        Duration::from_secs(20),
        "the user limit to be written",
        || async {
            sqlx::query_scalar::<_, Option<i32>>(
                "SELECT key_max_active FROM genq.queues WHERE name = 'generation'",
            )
            .fetch_one(&env.db.pool)
            .await
            .unwrap()
                == Some(1)
        },
    )
    .await;
    let first = env.request("u1", "byteplus", 10).await;
    let second = env.request("u1", "byteplus", 10).await;
    wait_until(Duration::from_secs(20), "one submitted", || async {
        env.generation(first).await.state == GenerationState::Submitted
            || env.generation(second).await.state == GenerationState::Submitted
    })
    .await;
    let (rendering, waiting) = if env.generation(first).await.state == GenerationState::Submitted {
        (first, second)
    } else {
        (second, first)
    };
    // The other waits queued, its submit job available and unclaimed (no attempt spent).
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(env.generation(waiting).await.state, GenerationState::Queued);
    let (job_id, attempt, why): (i64, i32, Option<String>) = sqlx::query_as(
        "SELECT id, attempt, genq.job_wait_reason(id) FROM genq.jobs
          WHERE kind = 'generation.submit' AND payload->>'generation_id' = $1",
    )
    .bind(waiting.to_string())
    .fetch_one(&env.db.pool)
    .await
    .unwrap();
    assert_eq!(attempt, 0, "job {job_id} spent no attempt while waiting");
    assert_eq!(
        why.as_deref(),
        Some("key limit: key u1 has 1 of 1 slots in use")
    );
    assert_eq!(
        slots_left(&env).await,
        (1, 1),
        "the render slot belongs to the generation"
    );

    let mut conn = env.db.pool.acquire().await.unwrap();
    genq::credits::cancel_generation(&mut conn, rendering)
        .await
        .unwrap();
    drop(conn);
    let g = env.wait_final(rendering, Duration::from_secs(20)).await;
    assert_eq!(g.state, GenerationState::Cancelled);
    wait_until(
        Duration::from_secs(20),
        "the waiting one to be submitted",
        || async { env.generation(waiting).await.state == GenerationState::Submitted },
    )
    .await;
    let mut conn = env.db.pool.acquire().await.unwrap();
    genq::credits::cancel_generation(&mut conn, waiting)
        .await
        .unwrap();
    drop(conn);
    env.wait_final(waiting, Duration::from_secs(20)).await;
    daemon.shutdown().await;
    assert_eq!(slots_left(&env).await, (0, 0));
    env.assert_ledger_clean().await;
}
