//! Database faults: terminated connections, and the daemon recovering by itself.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use genq::dev::bench::pg_cluster::PgCluster;
use genq::{JobState, NewJob, Registry};
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::common::{fast_config, wait_until, TestDb};

async fn terminate_daemon_connections(db: &TestDb) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE datname = current_database() AND application_name = 'genq' AND pid <> pg_backend_pid()) t",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap()
}

#[sqlx::test(migrations = false)]
async fn the_daemon_survives_its_connections_being_terminated(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    let mut config = fast_config();
    config.worker.poll_interval = Duration::from_millis(200);
    let daemon = db.daemon(config, Registry::new());

    for round in 0..3 {
        let ids: Vec<i64> = enqueue_sleepers(&db, round).await;
        for id in &ids {
            db.wait_for_state(*id, JobState::Completed, Duration::from_secs(20))
                .await;
        }
        wait_until(
            Duration::from_secs(10),
            "daemon connections to exist",
            || async { terminate_daemon_connections(&db).await > 0 },
        )
        .await;
    }
    // Jobs enqueued while the daemon is reconnecting are still processed.
    let id = db.enqueue(NewJob::new("sleep", json!({"ms": 10}))).await;
    db.wait_for_state(id, JobState::Completed, Duration::from_secs(20))
        .await;
    daemon.shutdown().await;
    let counts = db.counts().await;
    assert_eq!(
        counts.get(&JobState::Running),
        None,
        "nothing left running: {counts:?}"
    );
}

async fn enqueue_sleepers(db: &TestDb, round: i32) -> Vec<i64> {
    let mut ids = Vec::new();
    for i in 0..20 {
        ids.push(
            db.enqueue(NewJob::new("sleep", json!({"ms": 20 + i + round})))
                .await,
        );
    }
    ids
}

/// Jobs whose attempt a lost connection interrupted: handed back, nothing spent.
async fn assert_nothing_spent(db: &TestDb, ids: &[i64]) {
    for id in ids {
        let job = db.job(*id).await;
        assert_eq!(job.state, JobState::Completed, "{job:?}");
        assert_eq!(job.failures, 0, "an interruption is not a failure: {job:?}");
        assert_eq!(job.errors, json!([]), "{job:?}");
        assert_eq!(
            job.max_attempts - job.attempt,
            NewJob::new("x", json!({})).max_attempts - 1,
            "every interrupted attempt was given back: {job:?}"
        );
    }
}

#[sqlx::test(migrations = false)]
async fn a_job_whose_connection_is_terminated_is_handed_back_without_spending_an_attempt(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    let id = db.enqueue(NewJob::new("slow_query", json!({}))).await;
    let mut registry = Registry::new();
    registry.register_fn("slow_query", |ctx, _: serde_json::Value| async move {
        if ctx.attempt == 1 {
            sqlx::query("SELECT pg_sleep(60)")
                .execute(&ctx.pool)
                .await?;
        }
        Ok(())
    });
    let daemon = db.daemon(fast_config(), registry);
    wait_until(Duration::from_secs(20), "the slow query to run", || async {
        terminate_backends_running(&db, "SELECT pg_sleep(60)").await > 0
    })
    .await;
    let cut_at: DateTime<Utc> = sqlx::query_scalar("SELECT now()")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    db.wait_for_state(id, JobState::Completed, Duration::from_secs(20))
        .await;
    daemon.shutdown().await;

    assert_nothing_spent(&db, &[id]).await;
    let job = db.job(id).await;
    assert_eq!(job.attempt, 2);
    let waited = (job.run_at - cut_at).num_milliseconds();
    assert!(
        (900..10_000).contains(&waited),
        "run again after the short fixed delay (1 s), not a backoff: {waited} ms"
    );
    db.assert_invariants().await;
}

async fn terminate_backends_running(db: &TestDb, query: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
          WHERE datname = current_database() AND query = $1 AND pid <> pg_backend_pid()) t",
    )
    .bind(query)
    .fetch_one(&db.pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_crash_restart_interrupts_jobs_without_spending_attempts_and_claims_resume() {
    let cluster = tokio::task::spawn_blocking(PgCluster::start_new)
        .await
        .unwrap()
        .expect("a private Postgres cluster");
    let options: PgConnectOptions = cluster.url().parse().unwrap();
    let db = TestDb::new(PgPoolOptions::new(), options).await;

    // Each job holds a connection from before the crash and uses it after: a statement
    // in flight when Postgres goes down.
    let crashed = Arc::new(AtomicBool::new(false));
    let mut registry = Registry::new();
    let flag = crashed.clone();
    registry.register_fn("db_work", move |ctx, _: serde_json::Value| {
        let flag = flag.clone();
        async move {
            let mut conn = ctx.pool.acquire().await?;
            while !flag.load(Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            sqlx::query("SELECT 1").execute(&mut *conn).await?;
            Ok(())
        }
    });
    let mut config = fast_config();
    config.database.max_connections = 16;
    // Outlives the outage: a lease that expired would be rescued, and a rescue counts.
    config.worker.lease = Duration::from_secs(30);
    let daemon = db.daemon(config, registry);
    let mut ids = Vec::new();
    for _ in 0..10 {
        ids.push(db.enqueue(NewJob::new("db_work", json!({}))).await);
    }
    wait_until(Duration::from_secs(20), "every job running", || async {
        db.count("db_work", JobState::Running).await == 10
    })
    .await;

    let _cluster = tokio::task::spawn_blocking(move || {
        cluster.crash().unwrap();
        crashed.store(true, Ordering::SeqCst);
        std::thread::sleep(Duration::from_millis(500));
        cluster.start().unwrap();
        cluster
    })
    .await
    .unwrap();

    // Claims resume: a job enqueued after the restart runs.
    let after = db.enqueue(NewJob::new("db_work", json!({}))).await;
    db.wait_for_state(after, JobState::Completed, Duration::from_secs(30))
        .await;
    for id in &ids {
        db.wait_for_state(*id, JobState::Completed, Duration::from_secs(30))
            .await;
    }
    daemon.shutdown().await;
    assert_nothing_spent(&db, &ids).await;
    for id in &ids {
        assert_eq!(db.job(*id).await.attempt, 2, "interrupted once, then done");
    }
    db.assert_invariants().await;
}
