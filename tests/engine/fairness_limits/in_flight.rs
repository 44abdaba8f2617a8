//! A user's plan through the whole pipeline: `max_in_flight` holds against the fake
//! provider (never more of the user's generations submitted and not final, sampled while
//! they run), and raising it while work waits lets more start at once.

use std::time::Duration;

use genq::credits::GenerationState;
use genq::dev::fake_provider::FakeConfig;
use genq::providers::ProviderKind;

use super::*;
use crate::common::generation::GenEnv;
use crate::common::wait_until;

/// `user`'s generations at the provider or being sent there.
async fn in_flight(env: &GenEnv, user: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM genq.generations WHERE user_id = $1 AND state IN ('submitting', 'submitted')",
    )
    .bind(user)
    .fetch_one(&env.db.pool)
    .await
    .unwrap()
}

#[sqlx::test(migrations = false)]
async fn max_in_flight_holds_through_the_pipeline_and_a_raise_takes_effect_while_work_waits(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let env = GenEnv::with_fake(
        TestDb::new(po, co).await,
        FakeConfig {
            render_time: Duration::from_secs(3),
            ..FakeConfig::default()
        },
    )
    .await;
    env.grant("user-a", 100).await;
    set(
        &env.db,
        "user-a",
        Plan {
            max_in_flight: Some(2),
            ..Plan::default()
        },
    )
    .await
    .unwrap();
    let mut ids = Vec::new();
    for _ in 0..6 {
        ids.push(env.request("user-a", "fal", 10).await);
    }
    let daemon = env.daemon();

    // Two go to the provider; the other four wait queued, and stay there.
    wait_until(
        Duration::from_secs(20),
        "two generations in flight",
        || async {
            let n = in_flight(&env, "user-a").await;
            assert!(n <= 2, "{n} in flight over a limit of 2");
            n == 2
        },
    )
    .await;
    for _ in 0..10 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let n = in_flight(&env, "user-a").await;
        assert!(n <= 2, "{n} in flight over a limit of 2");
        assert!(env.fake.stats().created(ProviderKind::Fal) <= 2);
    }

    // The plan is raised while four wait: more start before the first two end.
    set(
        &env.db,
        "user-a",
        Plan {
            max_in_flight: Some(4),
            ..Plan::default()
        },
    )
    .await
    .unwrap();
    wait_until(
        Duration::from_secs(20),
        "four in flight after the raise",
        || async {
            let n = in_flight(&env, "user-a").await;
            assert!(n <= 4, "{n} in flight over a limit of 4");
            n == 4
        },
    )
    .await;
    for id in &ids {
        let g = env.wait_final(*id, Duration::from_secs(60)).await;
        assert_eq!(g.state, GenerationState::Succeeded, "{g:?}");
    }
    assert_eq!(
        env.fake.stats().created(ProviderKind::Fal),
        6,
        "one paid job each"
    );
    let slots: i64 =
        sqlx::query_scalar("SELECT count(*) FROM genq.fair_slots WHERE key = 'user-a'")
            .fetch_one(&env.db.pool)
            .await
            .unwrap();
    assert_eq!(slots, 0, "every render slot freed as its generation ended");
    env.assert_ledger_clean().await;
    daemon.shutdown().await;
}
