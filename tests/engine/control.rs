//! Job control (show, retry, cancel) and pruning.

use std::time::Duration;

use genq::queue::job_control::{self as control, ControlError};
use genq::queue::prune::prune;
use genq::{JobError, JobState, NewJob, Registry};
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::common::{fast_config, wait_until, Runs, TestDb};

#[sqlx::test(migrations = false)]
async fn cancelling_a_running_job_stops_its_handler_and_fences_its_outcome(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    let id = db.enqueue(NewJob::new("long", json!({}))).await;
    let finished = Runs::default();
    let f = finished.clone();
    let mut registry = Registry::new();
    registry.register_fn("long", move |ctx, _: serde_json::Value| {
        let f = f.clone();
        async move {
            tokio::time::sleep(Duration::from_secs(5)).await;
            f.record(ctx.id);
            Ok(())
        }
    });
    let daemon = db.daemon(fast_config(), registry);
    db.wait_for_state(id, JobState::Running, Duration::from_secs(10))
        .await;

    let (job, from) = control::cancel(&db.pool, id).await.unwrap();
    assert_eq!((from, job.state), (JobState::Running, JobState::Cancelled));
    wait_until(
        Duration::from_secs(5),
        "the daemon to drop the cancelled attempt",
        || async { daemon.running() == 0 },
    )
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let report = daemon.shutdown().await;
    assert_eq!(report.handed_back, 0);
    assert_eq!(
        finished.get(id),
        0,
        "the handler was stopped, not left to finish"
    );
    assert_eq!(db.job(id).await.state, JobState::Cancelled);

    // A final job cannot be cancelled again; the error says why.
    let err = control::cancel(&db.pool, id).await.unwrap_err();
    assert!(
        matches!(
            err,
            ControlError::WrongState {
                state: JobState::Cancelled,
                ..
            }
        ),
        "{err}"
    );
    assert!(matches!(
        control::show(&db.pool, 424242).await,
        Err(ControlError::NotFound(424242))
    ));
}

#[sqlx::test(migrations = false)]
async fn retrying_a_discarded_job_runs_it_again(po: PgPoolOptions, co: PgConnectOptions) {
    let db = TestDb::new(po, co).await;
    let id = db
        .enqueue(NewJob::new("once", json!({})).max_attempts(1))
        .await;
    let runs = Runs::default();
    let r = runs.clone();
    let mut registry = Registry::new();
    registry.register_fn("once", move |ctx, _: serde_json::Value| {
        let r = r.clone();
        async move {
            if r.record(ctx.id) == 1 {
                return Err(JobError::retry("first try fails"));
            }
            Ok(())
        }
    });
    let daemon = db.daemon(fast_config(), registry);
    db.wait_for_state(id, JobState::Discarded, Duration::from_secs(10))
        .await;
    let retried = control::retry(&db.pool, id).await.unwrap();
    assert_eq!(retried.state, JobState::Available);
    assert_eq!(retried.max_attempts, 2, "one more attempt granted");
    let job = db
        .wait_for_state(id, JobState::Completed, Duration::from_secs(10))
        .await;
    daemon.shutdown().await;
    assert_eq!(job.attempt, 2);
    assert_eq!(
        job.errors.as_array().unwrap().len(),
        1,
        "history kept across the retry"
    );
}

#[sqlx::test(migrations = false)]
async fn a_pending_job_can_be_cancelled_and_a_running_one_not_retried(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    let later = db
        .enqueue(
            NewJob::new("noop", json!({})).run_at(chrono::Utc::now() + chrono::Duration::hours(1)),
        )
        .await;
    let (job, from) = control::cancel(&db.pool, later).await.unwrap();
    assert_eq!(
        (from, job.state),
        (JobState::Available, JobState::Cancelled)
    );
    assert!(job.finished_at.is_some());

    let running = db.enqueue(NewJob::new("noop", json!({}))).await;
    sqlx::query("UPDATE genq.jobs SET state = 'running', attempt = 1, lease_until = now() + interval '1 minute' WHERE id = $1")
        .bind(running)
        .execute(&db.pool)
        .await
        .unwrap();
    let err = control::retry(&db.pool, running).await.unwrap_err();
    assert!(err.to_string().contains("cancel it first"), "{err}");
}

#[sqlx::test(migrations = false)]
async fn pruning_deletes_only_finished_jobs_past_their_age(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    let mut ids = Vec::new();
    for _ in 0..7 {
        ids.push(db.enqueue(NewJob::new("noop", json!({}))).await);
    }
    let set = |id: i64, state: &'static str, age: &'static str| {
        let pool = db.pool.clone();
        async move {
            sqlx::query(&format!(
                "UPDATE genq.jobs SET state = '{state}', finished_at = now() - interval '{age}' WHERE id = $1"
            ))
            .bind(id)
            .execute(&pool)
            .await
            .unwrap();
        }
    };
    set(ids[0], "completed", "25 hours").await; // due
    set(ids[1], "completed", "23 hours").await; // not yet
    set(ids[2], "cancelled", "2 days").await; // due
    set(ids[3], "discarded", "2 days").await; // kept 7 days
    set(ids[4], "discarded", "8 days").await; // due
                                              // ids[5] available, ids[6] running with an old finished_at cannot happen; keep available.
    let deleted = prune(
        &db.pool,
        Duration::from_secs(24 * 3600),
        Duration::from_secs(7 * 24 * 3600),
        1,
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert_eq!(deleted, 3);
    let left: Vec<i64> = sqlx::query_scalar("SELECT id FROM genq.jobs ORDER BY id")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(left, vec![ids[1], ids[3], ids[5], ids[6]]);
}

#[sqlx::test(migrations = false)]
async fn the_prune_job_runs_periodically_in_the_maintenance_queue(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    let old = db.enqueue(NewJob::new("noop", json!({}))).await;
    sqlx::query("UPDATE genq.jobs SET state = 'completed', finished_at = now() - interval '2 days' WHERE id = $1")
        .bind(old)
        .execute(&db.pool)
        .await
        .unwrap();
    let mut config = fast_config();
    config.prune.interval = Duration::from_millis(300);
    let daemon = db.daemon(config, Registry::new());
    wait_until(
        Duration::from_secs(10),
        "the old job to be pruned",
        || async {
            sqlx::query_scalar::<_, bool>(
                "SELECT NOT EXISTS (SELECT 1 FROM genq.jobs WHERE id = $1)",
            )
            .bind(old)
            .fetch_one(&db.pool)
            .await
            .unwrap()
        },
    )
    .await;
    daemon.shutdown().await;
    let prunes: i64 = sqlx::query_scalar("SELECT count(*) FROM genq.jobs WHERE kind = 'genq.prune' AND queue = 'maintenance' AND state = 'completed'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(prunes >= 1);
}

#[sqlx::test(migrations = false)]
async fn a_handler_completes_its_job_in_its_own_transaction(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    // The product's own table: its handlers' role (the daemon's) gets rights on it.
    let worker = crate::common::privileges::Roles::of(&db).worker();
    sqlx::raw_sql(&format!(
        "CREATE TABLE debits (job_id bigint PRIMARY KEY, amount int);
         GRANT SELECT, INSERT ON debits TO {worker}"
    ))
    .execute(&db.pool)
    .await
    .unwrap();
    let ok = db
        .enqueue(NewJob::new(
            "debit",
            json!({"amount": 5, "fail_after_complete": false}),
        ))
        .await;
    let rolled = db
        .enqueue(
            NewJob::new("debit", json!({"amount": 7, "fail_after_complete": true})).max_attempts(1),
        )
        .await;

    #[derive(serde::Deserialize)]
    struct Debit {
        amount: i32,
        fail_after_complete: bool,
    }
    let mut registry = Registry::new();
    registry.register_fn("debit", |ctx: genq::JobContext, args: Debit| async move {
        let mut tx = ctx.pool.begin().await?;
        sqlx::query("INSERT INTO debits VALUES ($1, $2)")
            .bind(ctx.id)
            .bind(args.amount)
            .execute(&mut *tx)
            .await?;
        ctx.complete_in(&mut tx)
            .await
            .map_err(|e| JobError::retry(e.to_string()))?;
        if args.fail_after_complete {
            // Dropping the transaction rolls back the debit and the completion together.
            return Err(JobError::retry("crashed before commit"));
        }
        tx.commit().await?;
        Ok(())
    });
    let daemon = db.daemon(fast_config(), registry);
    let done = db
        .wait_for_state(ok, JobState::Completed, Duration::from_secs(10))
        .await;
    let failed = db
        .wait_for_state(rolled, JobState::Discarded, Duration::from_secs(10))
        .await;
    daemon.shutdown().await;
    assert_eq!(done.errors, json!([]));
    assert!(failed.errors[0]["error"]
        .as_str()
        .unwrap()
        .contains("crashed before commit"));
    let debits: Vec<(i64, i32)> = sqlx::query_as("SELECT job_id, amount FROM debits")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        debits,
        vec![(ok, 5)],
        "the debit committed with its job's completion, and only then"
    );
}
