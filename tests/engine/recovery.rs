//! Database faults: terminated connections, and the daemon recovering by itself.

use std::time::Duration;

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
