//! Periodic jobs: N daemons, one job per slot.

use std::time::Duration;

use chrono::{TimeZone, Utc};
use genq::config::PeriodicConfig;
use genq::maintenance::periodic::enqueue_slot;
use genq::{JobState, Registry};
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::common::{fast_config, Runs, TestDb};

fn tick(every: Duration) -> PeriodicConfig {
    PeriodicConfig {
        name: "tick".into(),
        kind: "tick".into(),
        cron: None,
        every: Some(every),
        queue: "default".into(),
        payload: json!({"source": "periodic"}),
    }
}

#[sqlx::test(migrations = false)]
async fn two_daemons_enqueue_one_job_per_slot(po: PgPoolOptions, co: PgConnectOptions) {
    let db = TestDb::new(po, co).await;
    let runs = Runs::default();
    let mut config = fast_config();
    config.periodic.push(tick(Duration::from_millis(500)));
    let daemons: Vec<_> = (0..2)
        .map(|_| {
            let r = runs.clone();
            let mut registry = Registry::new();
            registry.register_fn("tick", move |ctx, _: serde_json::Value| {
                let r = r.clone();
                async move {
                    r.record(ctx.id);
                    Ok(())
                }
            });
            db.daemon(config.clone(), registry)
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(3200)).await;
    for d in daemons {
        d.shutdown().await;
    }

    let slots: Vec<(String, i64)> = sqlx::query_as(
        "SELECT unique_key, count(*) FROM genq.jobs WHERE kind = 'tick' GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(
        (5..=7).contains(&slots.len()),
        "about six 500 ms slots in 3.2 s: {slots:?}"
    );
    assert!(
        slots.iter().all(|(_, n)| *n == 1),
        "one job per slot: {slots:?}"
    );
    // The last slot's job may be enqueued just before shutdown and wait for the next
    // daemon: it is still available then, never lost and never run twice.
    let completed = db.count("tick", JobState::Completed).await;
    let waiting = db.count("tick", JobState::Available).await;
    assert_eq!(completed + waiting, slots.len() as i64, "{slots:?}");
    assert!(waiting <= 1, "only the last slot may still wait: {waiting}");
    assert!(runs.snapshot().values().all(|&n| n == 1));
}

#[sqlx::test(migrations = false)]
async fn a_slot_is_enqueued_once_even_after_its_job_finished(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    let p = tick(Duration::from_secs(60));
    let slot = Utc.with_ymd_and_hms(2026, 1, 1, 12, 0, 0).unwrap();
    let first = enqueue_slot(&db.pool, &p, slot)
        .await
        .unwrap()
        .expect("first daemon wins");
    sqlx::query("UPDATE genq.jobs SET state = 'completed', finished_at = now() WHERE id = $1")
        .bind(first)
        .execute(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        enqueue_slot(&db.pool, &p, slot).await.unwrap(),
        None,
        "a late daemon enqueues nothing"
    );
    let earlier = slot - chrono::Duration::minutes(1);
    assert_eq!(
        enqueue_slot(&db.pool, &p, earlier).await.unwrap(),
        None,
        "slots never go back"
    );
    let next = enqueue_slot(&db.pool, &p, slot + chrono::Duration::minutes(1))
        .await
        .unwrap();
    assert!(next.is_some());
    let job = db.job(next.unwrap()).await;
    assert_eq!(job.run_at, slot + chrono::Duration::minutes(1));
}
