//! The provider gate shared by daemons in Postgres: the in-flight cap, the rate limit (a
//! shared token bucket) and the circuit, and slots of a dead daemon expiring.

use std::time::Duration;

use genq::providers::config::ProviderLimits;
use genq::providers::gate::{acquire, release, Admission, CallOutcome};
use genq::providers::ProviderKind;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::common::TestDb;

fn limits(max_in_flight: u32, rate_per_sec: f64, burst: u32) -> ProviderLimits {
    ProviderLimits {
        max_in_flight,
        rate_per_sec,
        burst,
        failure_threshold: 3,
        cooldown: Duration::from_secs(60),
        max_rendering: None,
    }
}

fn reason(a: &Admission) -> &str {
    match a {
        Admission::Granted(_) => "granted",
        Admission::Wait { reason, .. } => reason,
    }
}

#[sqlx::test(migrations = false)]
async fn the_in_flight_cap_holds_across_daemons(po: PgPoolOptions, co: PgConnectOptions) {
    let db = TestDb::new(po, co.clone()).await;
    let other = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(co)
        .await
        .unwrap();
    let l = limits(2, 1000.0, 1000);
    let lease = Duration::from_secs(60);
    let a = acquire(&db.pool, ProviderKind::Fal, &l, lease)
        .await
        .unwrap();
    let b = acquire(&other, ProviderKind::Fal, &l, lease).await.unwrap();
    let c = acquire(&other, ProviderKind::Fal, &l, lease).await.unwrap();
    assert_eq!(
        (reason(&a), reason(&b), reason(&c)),
        ("granted", "granted", "in-flight cap")
    );
    // Other providers have their own gate.
    let d = acquire(&other, ProviderKind::Replicate, &l, lease)
        .await
        .unwrap();
    assert_eq!(reason(&d), "granted");
    let Admission::Granted(slot) = a else {
        unreachable!()
    };
    release(&db.pool, slot, CallOutcome::Success, &l)
        .await
        .unwrap();
    let e = acquire(&other, ProviderKind::Fal, &l, lease).await.unwrap();
    assert_eq!(reason(&e), "granted", "a released slot is free again");
}

#[sqlx::test(migrations = false)]
async fn a_slot_of_a_dead_daemon_expires_with_its_lease(po: PgPoolOptions, co: PgConnectOptions) {
    let db = TestDb::new(po, co).await;
    let l = limits(1, 1000.0, 1000);
    let held = acquire(
        &db.pool,
        ProviderKind::BytePlus,
        &l,
        Duration::from_millis(300),
    )
    .await
    .unwrap();
    assert_eq!(reason(&held), "granted");
    let refused = acquire(
        &db.pool,
        ProviderKind::BytePlus,
        &l,
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert_eq!(reason(&refused), "in-flight cap");
    tokio::time::sleep(Duration::from_millis(400)).await;
    let after = acquire(
        &db.pool,
        ProviderKind::BytePlus,
        &l,
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert_eq!(
        reason(&after),
        "granted",
        "the crashed holder's slot came back"
    );
}

#[sqlx::test(migrations = false)]
async fn the_rate_limit_is_a_shared_token_bucket(po: PgPoolOptions, co: PgConnectOptions) {
    let db = TestDb::new(po, co).await;
    let l = limits(100, 2.0, 3);
    let lease = Duration::from_secs(60);
    let mut granted = 0;
    let mut wait = Duration::ZERO;
    for _ in 0..5 {
        match acquire(&db.pool, ProviderKind::Replicate, &l, lease)
            .await
            .unwrap()
        {
            Admission::Granted(_) => granted += 1,
            Admission::Wait { after, reason } => {
                assert_eq!(reason, "rate limit");
                wait = after;
            }
        }
    }
    assert_eq!(granted, 3, "the burst, then the rate");
    assert!(
        wait > Duration::from_millis(100) && wait <= Duration::from_millis(600),
        "{wait:?}"
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    let again = acquire(&db.pool, ProviderKind::Replicate, &l, lease)
        .await
        .unwrap();
    assert_eq!(reason(&again), "granted", "tokens refill at 2/s");
}

#[sqlx::test(migrations = false)]
async fn the_circuit_opens_after_repeated_failures_and_a_success_closes_it(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    let mut l = limits(100, 1000.0, 1000);
    l.cooldown = Duration::from_millis(500);
    let lease = Duration::from_secs(60);
    for i in 0..3 {
        let Admission::Granted(slot) = acquire(&db.pool, ProviderKind::Fal, &l, lease)
            .await
            .unwrap()
        else {
            panic!("call {i} refused")
        };
        let open = release(&db.pool, slot, CallOutcome::Failure, &l)
            .await
            .unwrap();
        assert_eq!(open, i == 2, "opens at the third failure in a row");
    }
    let refused = acquire(&db.pool, ProviderKind::Fal, &l, lease)
        .await
        .unwrap();
    assert_eq!(reason(&refused), "circuit open");
    tokio::time::sleep(Duration::from_millis(600)).await;
    let Admission::Granted(probe) = acquire(&db.pool, ProviderKind::Fal, &l, lease)
        .await
        .unwrap()
    else {
        panic!("the cooldown is over: a probe goes through")
    };
    assert!(!release(&db.pool, probe, CallOutcome::Success, &l)
        .await
        .unwrap());
    let Admission::Granted(next) = acquire(&db.pool, ProviderKind::Fal, &l, lease)
        .await
        .unwrap()
    else {
        panic!("closed again")
    };
    // Rate limiting (neutral) never opens it.
    for _ in 0..5 {
        release(&db.pool, next.clone(), CallOutcome::Neutral, &l)
            .await
            .unwrap();
    }
    assert_eq!(
        reason(
            &acquire(&db.pool, ProviderKind::Fal, &l, lease)
                .await
                .unwrap()
        ),
        "granted"
    );
}

/// The submit takes its gate slot before it commits `submitting`: while the gate refuses,
/// the generation stays `queued` (nothing between that commit and the request needs the
/// database, so a lost database cannot leave a never-sent generation `submitting`, which
/// for fal would wait out the whole ambiguous-submit grace).
#[sqlx::test(migrations = false)]
async fn a_refused_gate_leaves_the_generation_queued_until_a_slot_frees(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let mut env = crate::common::generation::GenEnv::setup(po, co).await;
    let l = limits(1, 1000.0, 1000);
    env.config.providers.limits.insert("fal".into(), l.clone());
    env.grant("u1", 10).await;
    // Another daemon holds the only fal slot.
    let Admission::Granted(held) =
        acquire(&env.db.pool, ProviderKind::Fal, &l, Duration::from_secs(60))
            .await
            .unwrap()
    else {
        panic!("the first slot is free")
    };
    let daemon = env.daemon();
    let id = env.request("u1", "fal", 10).await;
    crate::common::wait_until(
        Duration::from_secs(10),
        "the submit to wait for the gate",
        || async {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM genq.jobs WHERE kind = 'generation.submit' AND attempt >= 2",
            )
            .fetch_one(&env.db.pool)
            .await
            .unwrap()
                > 0
        },
    )
    .await;
    let g = env.generation(id).await;
    assert_eq!(g.state, genq::credits::GenerationState::Queued, "{g:?}");
    assert_eq!(env.fake.stats().created(ProviderKind::Fal), 0);
    let failures: i32 =
        sqlx::query_scalar("SELECT failures FROM genq.jobs WHERE kind = 'generation.submit'")
            .fetch_one(&env.db.pool)
            .await
            .unwrap();
    assert_eq!(failures, 0, "waiting for the gate is no failure");

    release(&env.db.pool, held, CallOutcome::Success, &l)
        .await
        .unwrap();
    let g = env.wait_final(id, Duration::from_secs(30)).await;
    daemon.shutdown().await;
    assert_eq!(g.state, genq::credits::GenerationState::Succeeded, "{g:?}");
    assert_eq!(env.fake.stats().created(ProviderKind::Fal), 1);
    env.db.assert_invariants().await;
}
