//! Leases: crash rescue, fencing of stale workers, heartbeats keeping long jobs alive.

use std::time::Duration;

use genq::queue::claim::claim;
use genq::queue::complete::{
    complete_batch, complete_in, Completion, FencedCompletionError, Outcome,
};
use genq::{JobState, NewJob, Registry};
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::common::{fast_config, Runs, TestDb};

fn counting(kind: &str, runs: &Runs, sleep: Duration) -> Registry {
    let runs = runs.clone();
    let mut registry = Registry::new();
    registry.register_fn(kind, move |ctx, _: serde_json::Value| {
        let runs = runs.clone();
        async move {
            runs.record(ctx.id);
            tokio::time::sleep(sleep).await;
            Ok(())
        }
    });
    registry
}

#[sqlx::test(migrations = false)]
async fn a_worker_that_stops_heartbeating_loses_the_job_and_its_late_completion_is_refused(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    let id = db.enqueue(NewJob::new("render", json!({}))).await;

    // A worker claims the job, then goes silent (no heartbeats, no completion).
    let stale = claim(
        &db.pool,
        "default",
        "stale-worker",
        10,
        Duration::from_millis(500),
    )
    .await
    .unwrap();
    assert_eq!(stale.len(), 1);
    assert_eq!(stale[0].attempt, 1);

    // A healthy daemon rescues it once the lease expires and runs it.
    let runs = Runs::default();
    let daemon = db.daemon(fast_config(), counting("render", &runs, Duration::ZERO));
    let job = db
        .wait_for_state(id, JobState::Completed, Duration::from_secs(10))
        .await;
    daemon.shutdown().await;
    assert_eq!(job.attempt, 2, "the rescue spent the lost attempt");
    assert_eq!(runs.get(id), 1);
    let errors = job.errors.as_array().unwrap();
    assert_eq!(errors.len(), 1);
    assert!(errors[0]["error"]
        .as_str()
        .unwrap()
        .contains("lease expired: worker stale-worker"));

    // The stale worker wakes up and tries to finish attempt 1: refused, nothing changes.
    let written = complete_batch(
        &db.pool,
        &[Completion {
            id,
            attempt: 1,
            outcome: Outcome::Retry {
                delay: Duration::ZERO,
                message: "late".into(),
            },
            queue: "default".into(),
            kind: "render".into(),
        }],
    )
    .await
    .unwrap();
    assert!(written.is_empty(), "the stale outcome was fenced out");
    let mut tx = db.pool.begin().await.unwrap();
    let err = complete_in(&mut tx, id, 1).await.unwrap_err();
    assert!(matches!(
        err,
        FencedCompletionError::Fenced { attempt: 1, .. }
    ));
    tx.rollback().await.unwrap();
    let after = db.job(id).await;
    assert_eq!((after.state, after.attempt), (JobState::Completed, 2));
    assert_eq!(after.errors.as_array().unwrap().len(), 1);
}

#[sqlx::test(migrations = false)]
async fn a_killed_daemons_job_is_rerun_by_another_after_lease_expiry(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    let id = db.enqueue(NewJob::new("render", json!({}))).await;

    let first_runs = Runs::default();
    let doomed = db.daemon(
        fast_config(),
        counting("render", &first_runs, Duration::from_secs(3600)),
    );
    db.wait_for_state(id, JobState::Running, Duration::from_secs(10))
        .await;
    let doomed_id = doomed.worker_id().to_string();
    doomed.kill();

    let runs = Runs::default();
    let survivor = db.daemon(fast_config(), counting("render", &runs, Duration::ZERO));
    let job = db
        .wait_for_state(id, JobState::Completed, Duration::from_secs(15))
        .await;
    survivor.shutdown().await;
    assert_eq!(first_runs.get(id), 1);
    assert_eq!(runs.get(id), 1);
    assert_eq!(job.attempt, 2);
    assert!(job.errors[0]["error"]
        .as_str()
        .unwrap()
        .contains(&doomed_id));
}

#[sqlx::test(migrations = false)]
async fn heartbeats_keep_a_job_longer_than_its_lease(po: PgPoolOptions, co: PgConnectOptions) {
    let db = TestDb::new(po, co).await;
    let id = db.enqueue(NewJob::new("render", json!({}))).await;
    let runs = Runs::default();
    let mut config = fast_config();
    config.worker.lease = Duration::from_secs(1);
    // Two daemons: if the lease lapsed, the other one would rescue and rerun the job.
    let a = db.daemon(
        config.clone(),
        counting("render", &runs, Duration::from_secs(3)),
    );
    let b = db.daemon(config, counting("render", &runs, Duration::from_secs(3)));
    let job = db
        .wait_for_state(id, JobState::Completed, Duration::from_secs(15))
        .await;
    a.shutdown().await;
    b.shutdown().await;
    assert_eq!(job.attempt, 1, "the lease was extended, never rescued");
    assert_eq!(runs.get(id), 1);
    assert_eq!(job.errors, json!([]));
}

/// The plan Postgres picks for `statement` as a generic plan (what a cached prepared
/// statement runs), on one connection of the test's pool.
async fn generic_plan(db: &TestDb, statement: &str, args: &str) -> String {
    let mut conn = db.pool.acquire().await.unwrap();
    sqlx::raw_sql("SET plan_cache_mode = force_generic_plan")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::raw_sql(&format!("PREPARE probe AS {statement}"))
        .execute(&mut *conn)
        .await
        .unwrap();
    let rows: Vec<String> = genq::db::query_scalar(&format!("EXPLAIN EXECUTE probe({args})"))
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    sqlx::raw_sql("DEALLOCATE probe; RESET plan_cache_mode")
        .execute(&mut *conn)
        .await
        .unwrap();
    rows.join("\n")
}

#[sqlx::test(migrations = false)]
async fn outcomes_and_heartbeats_probe_each_job_by_id_whatever_the_statistics_say(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    // Statistics taken while nothing ran (as right after a VACUUM ANALYZE of a fresh
    // backlog), then many jobs running: the fence `state = 'running'` then looks like one
    // row through jobs_running_idx, and a join driven from it rescans every outcome per
    // running job (70,000 x 5,000 took 61 s and stalled a benchmark into lease expiries).
    let db = TestDb::new(po, co).await;
    genq::db::query(
        "INSERT INTO genq.jobs (kind, payload, queue) SELECT 'noop', '{}', 'default' FROM generate_series(1, 20000)",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::raw_sql("VACUUM ANALYZE genq.jobs")
        .execute(&db.pool)
        .await
        .unwrap();
    let running = claim(&db.pool, "default", "w", 20000, Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(running.len(), 20000);

    // A generic plan does not look at the values.
    let (ids, ones) = ("'{1, 2, 3}'", "'{1, 1, 1}'");
    let complete = generic_plan(
        &db,
        genq::queue::complete::COMPLETE_BATCH,
        &format!("{ids}, {ones}, NULL, NULL, NULL, NULL"),
    )
    .await;
    let heartbeat = generic_plan(
        &db,
        genq::queue::lease::HEARTBEAT,
        &format!("{ids}, {ones}, 30"),
    )
    .await;
    for (name, plan) in [("completion", &complete), ("heartbeat", &heartbeat)] {
        assert!(
            plan.contains("jobs_pkey"),
            "the {name} probes jobs by primary key:\n{plan}"
        );
        assert!(
            !plan.contains("jobs_running_idx"),
            "the {name} is not driven from the running jobs:\n{plan}"
        );
    }

    // And it does what it did: 5,000 outcomes written, the other running jobs untouched.
    let batch: Vec<Completion> = running[..5000]
        .iter()
        .map(|j| Completion {
            id: j.id,
            attempt: j.attempt,
            outcome: Outcome::Completed,
            queue: j.queue.clone(),
            kind: j.kind.clone(),
        })
        .collect();
    assert_eq!(complete_batch(&db.pool, &batch).await.unwrap().len(), 5000);
    let still: i64 =
        genq::db::query_scalar("SELECT count(*) FROM genq.jobs WHERE state = 'running'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(still, 15000);
}
