//! Exactly once without faults: several daemons racing over the same jobs.

use std::time::Duration;

use genq::queue::enqueue::enqueue_many_in;
use genq::{JobState, NewJob, Registry};
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::common::{fast_config, wait_until, Runs, TestDb};

#[sqlx::test(migrations = false)]
async fn four_daemons_handle_ten_thousand_jobs_once_each(po: PgPoolOptions, co: PgConnectOptions) {
    let db = TestDb::new(po, co).await;
    let jobs: Vec<NewJob> = (0..10_000)
        .map(|i| NewJob::new("count", json!({ "i": i })))
        .collect();
    enqueue_many_in(&mut db.pool.acquire().await.unwrap(), &jobs)
        .await
        .unwrap();

    let runs = Runs::default();
    let mut config = fast_config();
    config.worker.claim_batch = 50;
    let daemons: Vec<_> = (0..4)
        .map(|_| {
            let runs = runs.clone();
            let mut registry = Registry::new();
            registry.register_fn("count", move |ctx, _: serde_json::Value| {
                let runs = runs.clone();
                async move {
                    runs.record(ctx.id);
                    tokio::task::yield_now().await;
                    Ok(())
                }
            });
            db.daemon(config.clone(), registry)
        })
        .collect();

    wait_until(Duration::from_secs(60), "all jobs completed", || async {
        db.count("count", JobState::Completed).await == 10_000
    })
    .await;
    for d in daemons {
        d.shutdown().await;
    }

    let runs = runs.snapshot();
    assert_eq!(runs.len(), 10_000, "every job ran");
    assert!(runs.values().all(|&n| n == 1), "no job ran twice");
    let (attempts, workers): (i64, i64) = sqlx::query_as(
        "SELECT max(attempt)::int8, count(DISTINCT worker_id) FROM genq.jobs WHERE kind = 'count'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(attempts, 1, "no job needed a second attempt");
    assert!(
        workers >= 2,
        "the work was shared between daemons ({workers} took part)"
    );
}
