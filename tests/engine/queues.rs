//! Fleet-wide queue control: pause, resume, drain, and the running cap across daemons.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use genq::config::QueueConfig;
use genq::queue::enqueue::enqueue_many_in;
use genq::queue::queue_control::{self, Target};
use genq::{JobState, NewJob, Registry};
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::common::{fast_config, genq_command, genq_run_async, wait_until, Runs, TestDb};

fn counting(runs: &Runs) -> Registry {
    let runs = runs.clone();
    let mut registry = Registry::new();
    registry.register_fn("count", move |ctx, _: serde_json::Value| {
        let runs = runs.clone();
        async move {
            runs.record(ctx.id);
            Ok(())
        }
    });
    registry
}

#[sqlx::test(migrations = false)]
async fn pause_stops_every_daemon_and_resume_processes_the_backlog_once(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    let runs = Runs::default();
    let a = db.daemon(fast_config(), counting(&runs));
    let b = db.daemon(fast_config(), counting(&runs));

    let paused = queue_control::pause(&db.pool, Target::One("default"), Some("provider incident"))
        .await
        .unwrap();
    assert_eq!(paused, vec!["default".to_string()]);
    let jobs: Vec<NewJob> = (0..50)
        .map(|i| NewJob::new("count", json!({ "i": i })))
        .collect();
    enqueue_many_in(&mut db.pool.acquire().await.unwrap(), &jobs)
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(
        runs.snapshot().is_empty(),
        "no daemon claimed from a paused queue"
    );
    assert_eq!(
        db.count("count", JobState::Available).await,
        50,
        "enqueueing kept working"
    );
    let listed = queue_control::list(&db.pool).await.unwrap();
    let default = listed.iter().find(|q| q.name == "default").unwrap();
    assert!(default.paused);
    assert_eq!(default.pause_reason.as_deref(), Some("provider incident"));
    assert_eq!(default.available, 50);

    let resumed = queue_control::resume(&db.pool, Target::One("default"))
        .await
        .unwrap();
    assert_eq!(resumed, vec!["default".to_string()]);
    wait_until(
        Duration::from_secs(10),
        "the backlog to be processed",
        || async { db.count("count", JobState::Completed).await == 50 },
    )
    .await;
    a.shutdown().await;
    b.shutdown().await;
    let runs = runs.snapshot();
    assert_eq!(runs.len(), 50);
    assert!(runs.values().all(|&n| n == 1), "each job ran once");
}

#[sqlx::test(migrations = false)]
async fn max_running_holds_across_two_daemons(po: PgPoolOptions, co: PgConnectOptions) {
    let db = TestDb::new(po, co).await;
    queue_control::set_max_running(&db.pool, "capped", Some(3))
        .await
        .unwrap();
    let current = Arc::new(AtomicUsize::new(0));
    let peak = Arc::new(AtomicUsize::new(0));
    let mut config = fast_config();
    config
        .queues
        .insert("capped".into(), QueueConfig::with_concurrency(10));
    let daemons: Vec<_> = (0..2)
        .map(|_| {
            let (current, peak) = (current.clone(), peak.clone());
            let mut registry = Registry::new();
            registry.register_fn("capped.work", move |_ctx, _: serde_json::Value| {
                let (current, peak) = (current.clone(), peak.clone());
                async move {
                    let now = current.fetch_add(1, Ordering::SeqCst) + 1;
                    peak.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(40)).await;
                    current.fetch_sub(1, Ordering::SeqCst);
                    Ok(())
                }
            });
            db.daemon(config.clone(), registry)
        })
        .collect();
    let jobs: Vec<NewJob> = (0..60)
        .map(|i| NewJob::new("capped.work", json!({ "i": i })).queue("capped"))
        .collect();
    enqueue_many_in(&mut db.pool.acquire().await.unwrap(), &jobs)
        .await
        .unwrap();

    let mut db_peak = 0;
    let started = Instant::now();
    while db.count("capped.work", JobState::Completed).await < 60 {
        db_peak = db_peak.max(queue_control::running(&db.pool, "capped").await.unwrap());
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "jobs did not finish"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    for d in daemons {
        d.shutdown().await;
    }
    let peak = peak.load(Ordering::SeqCst);
    assert!(
        peak <= 3,
        "at most 3 handlers ran at once across both daemons (saw {peak})"
    );
    assert!(
        db_peak <= 3,
        "the database never showed more than 3 running (saw {db_peak})"
    );
    assert!(
        peak >= 2,
        "the cap still allowed parallel work (saw {peak})"
    );
}

#[sqlx::test(migrations = false)]
async fn drain_returns_after_running_jobs_finish_and_reports_a_timeout(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    let url = db.url().await;
    let daemon = db.daemon(fast_config(), Registry::new());
    let short: Vec<i64> = futures::future::join_all(
        (0..2).map(|_| db.enqueue(NewJob::new("sleep", json!({"ms": 1500})))),
    )
    .await;
    for id in &short {
        db.wait_for_state(*id, JobState::Running, Duration::from_secs(10))
            .await;
    }
    let started = Instant::now();
    let out = genq_run_async(&url, &["queue", "drain", "default", "--timeout", "20s"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("drained"), "{stdout}");
    assert!(
        started.elapsed() >= Duration::from_millis(700),
        "drain waited for the running jobs"
    );
    for id in &short {
        assert_eq!(
            db.job(*id).await.state,
            JobState::Completed,
            "drain returned only after job {id} finished"
        );
    }
    let waiting = db.enqueue(NewJob::new("sleep", json!({"ms": 1}))).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        db.job(waiting).await.state,
        JobState::Available,
        "a drained queue stays paused"
    );

    // A job that outlasts the timeout: drain says so and exits 3.
    queue_control::resume(&db.pool, Target::One("default"))
        .await
        .unwrap();
    let long = db
        .enqueue(NewJob::new("sleep", json!({"ms": 600_000})))
        .await;
    db.wait_for_state(long, JobState::Running, Duration::from_secs(10))
        .await;
    let out = genq_run_async(&url, &["queue", "drain", "default", "--timeout", "1s"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{stdout}");
    assert!(
        stdout.contains("timed out") && stdout.contains("1 job(s) of default still running"),
        "{stdout}"
    );
    daemon.shutdown_with_grace(Duration::from_millis(100)).await;
}

#[sqlx::test(migrations = false)]
async fn queue_commands_of_the_cli(po: PgPoolOptions, co: PgConnectOptions) {
    let db = TestDb::new(po, co).await;
    let url = db.url().await;
    db.enqueue(NewJob::new("noop", json!({})).queue("mail"))
        .await;
    let run = |args: &[&str]| {
        let out = genq_command(&url).args(args).output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, _) = run(&["queue", "pause", "mail", "--reason", "smtp down"]);
    assert!(ok && out.contains("queue mail paused"), "{out}");
    let (ok, out, _) = run(&["queue", "limit", "mail", "5"]);
    assert!(ok && out.contains("at most 5"), "{out}");
    let (ok, out, _) = run(&["queue", "list", "--json"]);
    assert!(ok);
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    let mail = list
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == "mail")
        .unwrap();
    assert_eq!(
        (
            mail["paused"].clone(),
            mail["available"].clone(),
            mail["max_running"].clone()
        ),
        (json!(true), json!(1), json!(5))
    );
    assert_eq!(mail["pause_reason"], json!("smtp down"));
    let (ok, table, _) = run(&["queue", "list"]);
    assert!(
        ok && table
            .lines()
            .any(|l| l.starts_with("mail") && l.contains("paused") && l.contains("smtp down")),
        "{table}"
    );
    let (ok, out, _) = run(&["queue", "resume", "--all"]);
    assert!(ok && out.contains("mail"), "{out}");
    let (ok, _, err) = run(&["queue", "limit", "mail", "-2"]);
    assert!(!ok && err.contains("max_running must be"), "{err}");
    let (ok, _, err) = run(&["queue", "pause"]);
    assert!(
        !ok && err.contains("required arguments were not provided"),
        "{err}"
    );
}
