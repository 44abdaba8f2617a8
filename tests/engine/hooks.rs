//! What the product hands the engine with its kinds (`Registry::periodic`, `on_start`,
//! `on_sample`): the engine runs it without naming it. Periodic jobs from the registry are
//! enqueued like configured ones; a start hook runs after the queues exist, is retried
//! while it fails and then never again; sample hooks run at every statistics interval.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use genq::config::PeriodicConfig;
use genq::{JobState, Registry};
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::common::{fast_config, wait_until, TestDb};

#[sqlx::test(migrations = false)]
async fn the_registry_brings_periodic_jobs_and_hooks_to_the_engine(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    let mut config = fast_config();
    config.metrics.sample_interval = Duration::from_millis(100);
    let start_calls = Arc::new(AtomicU32::new(0));
    let queues_seen_at_start = Arc::new(Mutex::new(Vec::<i64>::new()));
    let samples = Arc::new(AtomicU32::new(0));

    let mut registry = Registry::new();
    registry.register_fn("tick", |_ctx, _: serde_json::Value| async { Ok(()) });
    registry.periodic(PeriodicConfig {
        name: "tick".into(),
        kind: "tick".into(),
        cron: None,
        every: Some(Duration::from_millis(300)),
        queue: "default".into(),
        payload: json!({}),
    });
    let (calls, seen) = (start_calls.clone(), queues_seen_at_start.clone());
    registry.on_start("probe", move |pool| {
        let (calls, seen) = (calls.clone(), seen.clone());
        async move {
            let queues: i64 = genq::db::query_scalar(
                "SELECT count(*) FROM genq.queues WHERE name IN ('default', 'maintenance')",
            )
            .fetch_one(&pool)
            .await?;
            seen.lock().unwrap().push(queues);
            // The first call fails as a database error would: the engine retries it.
            if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                return Err(sqlx::Error::PoolTimedOut);
            }
            Ok(())
        }
    });
    let counted = samples.clone();
    registry.on_sample("probe", move |_pool| {
        counted.fetch_add(1, Ordering::SeqCst);
        async { Ok(()) }
    });
    assert_eq!(registry.periodic_jobs().len(), 1);

    let daemon = db.daemon(config, registry);
    wait_until(
        Duration::from_secs(10),
        "a periodic tick job completed",
        || async { db.count("tick", JobState::Completed).await >= 1 },
    )
    .await;
    wait_until(
        Duration::from_secs(10),
        "three statistics samples",
        || async { samples.load(Ordering::SeqCst) >= 3 },
    )
    .await;
    daemon.shutdown().await;

    assert_eq!(
        start_calls.load(Ordering::SeqCst),
        2,
        "the start hook is retried once after its failure, then not again"
    );
    assert_eq!(
        *queues_seen_at_start.lock().unwrap(),
        vec![2, 2],
        "start hooks run after the daemon's queues are registered"
    );
    db.assert_invariants().await;
}
