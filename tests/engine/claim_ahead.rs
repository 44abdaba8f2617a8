//! The claim-ahead buffer (decision 51): jobs claimed beyond the free slots wait in their
//! producer, keep their leases, never raise the number of jobs executing at once above
//! `concurrency`, and go back (available at once, no attempt spent) on shutdown, pause,
//! or when they wait too long. A cancelled buffered job never runs. Fair queues and queues
//! with a fleet-wide cap do not buffer.
//!
//! To get jobs stuck in a buffer, a scenario runs many fast jobs first (the buffer is sized
//! from the recent start rate), then one slow "blocker" that holds the only slot while the
//! "victims" claimed with it wait behind it.
//!
//! The metrics (`genq_claim_ahead_buffered`, `genq_jobs_handed_back_total`) are read from
//! the process's recorder, which is what the daemon's `/metrics` renders; nextest runs each
//! test in its own process, so a test sees only its own daemons' series.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use genq::config::{Config, QueueConfig};
use genq::queue::claim::claim;
use genq::queue::job_control as control;
use genq::queue::queue_control::{self, Target};
use genq::{Client, DaemonHandle, JobState, NewJob, Registry};
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::common::prom::{self, Sample};
use crate::common::{fast_config, wait_until, Runs, TestDb};

const VICTIMS: usize = 10;

/// What `/metrics` would show now.
fn scrape() -> Vec<Sample> {
    prom::parse(&genq::metrics::handle().render())
}

/// Every series of `genq_jobs_handed_back_total`: ((queue, reason), value).
fn handed_back() -> Vec<((String, String), f64)> {
    let mut series: Vec<_> = scrape()
        .into_iter()
        .filter(|s| s.name == "genq_jobs_handed_back_total")
        .map(|s| {
            (
                (s.labels["queue"].clone(), s.labels["reason"].clone()),
                s.value,
            )
        })
        .collect();
    series.sort_by(|a, b| a.0.cmp(&b.0));
    series
}

/// `genq_claim_ahead_buffered` of the queue `default`, if exported yet.
fn buffered_gauge() -> Option<f64> {
    let samples = scrape();
    samples
        .iter()
        .find(|s| {
            s.name == "genq_claim_ahead_buffered"
                && s.labels.get("queue").map(String::as_str) == Some("default")
        })
        .map(|s| s.value)
}

fn reason(r: &str) -> Vec<((String, String), f64)> {
    vec![(("default".into(), r.into()), VICTIMS as f64)]
}

/// Samples the daemon's own gauges every 100 ms (the buffered gauge among them).
fn sampled(mut c: Config) -> Config {
    c.metrics.sample_interval = Duration::from_millis(100);
    c
}

/// Handler start times, by job id.
#[derive(Clone, Default)]
struct Starts(Arc<Mutex<HashMap<i64, DateTime<Utc>>>>);

/// `fast` records its run; `block` records it and sleeps `payload.ms`.
fn registry(runs: &Runs, starts: &Starts) -> Registry {
    let mut registry = Registry::new();
    let (r, s) = (runs.clone(), starts.clone());
    registry.register_fn("fast", move |ctx, _: serde_json::Value| {
        let (r, s) = (r.clone(), s.clone());
        async move {
            s.0.lock().unwrap().insert(ctx.id, Utc::now());
            r.record(ctx.id);
            Ok(())
        }
    });
    let r = runs.clone();
    registry.register_fn("block", move |ctx, p: serde_json::Value| {
        let r = r.clone();
        async move {
            r.record(ctx.id);
            tokio::time::sleep(Duration::from_millis(p["ms"].as_u64().unwrap_or(0))).await;
            Ok(())
        }
    });
    registry
}

struct Blocked {
    daemon: DaemonHandle,
    runs: Runs,
    starts: Starts,
    blocker: i64,
    victims: Vec<i64>,
    max_attempts: i32,
}

/// One slot; 600 fast jobs, then a blocker holding the slot for `block`, then the victims,
/// which end up buffered behind it. Returns once they are.
async fn blocked_buffer(db: &TestDb, mut config: Config, block: Duration) -> Blocked {
    config
        .queues
        .insert("default".into(), QueueConfig::with_concurrency(1));
    let fast: Vec<NewJob> = (0..600)
        .map(|_| NewJob::new("fast", json!({})).priority(0))
        .collect();
    Client::new(db.pool.clone())
        .enqueue_many(&fast)
        .await
        .unwrap();
    let blocker = db
        .enqueue(NewJob::new("block", json!({ "ms": block.as_millis() as u64 })).priority(1))
        .await;
    let mut victims = Vec::new();
    for _ in 0..VICTIMS {
        victims.push(db.enqueue(NewJob::new("fast", json!({})).priority(2)).await);
    }
    let max_attempts = db.job(victims[0]).await.max_attempts;
    let (runs, starts) = (Runs::default(), Starts::default());
    let daemon = db.daemon(config, registry(&runs, &starts));
    wait_until(
        Duration::from_secs(30),
        "the victims to wait in the buffer behind the blocker",
        || async { runs.get(blocker) == 1 && daemon.buffered() == VICTIMS },
    )
    .await;
    for &v in &victims {
        let job = db.job(v).await;
        assert_eq!(job.state, JobState::Running, "claimed (buffered)");
        assert_eq!(runs.get(v), 0, "not started");
    }
    assert_eq!(daemon.running(), 1, "only the blocker executes");
    Blocked {
        daemon,
        runs,
        starts,
        blocker,
        victims,
        max_attempts,
    }
}

/// The victim went back as if never claimed: available now, no failure, no error, and as
/// many attempts left as before (`attempt` only grows; `max_attempts` grew with it).
async fn assert_handed_back(db: &TestDb, victims: &[i64], runs: &Runs, max_attempts: i32) {
    for &v in victims {
        let job = db.job(v).await;
        assert_eq!(job.state, JobState::Available, "job {v} handed back");
        assert_eq!(job.failures, 0);
        assert_eq!(job.errors.as_array().map_or(0, |e| e.len()), 0);
        assert_eq!(
            job.max_attempts - job.attempt,
            max_attempts,
            "no attempt spent"
        );
        assert!(job.run_at <= Utc::now(), "claimable at once");
        assert!(job.worker_id.is_none() && job.lease_until.is_none());
        assert_eq!(runs.get(v), 0);
    }
}

fn long_wait(mut c: Config) -> Config {
    c.worker.claim_ahead_wait = Duration::from_secs(60);
    c
}

#[sqlx::test(migrations = false)]
async fn shutdown_hands_buffered_jobs_back_at_once_without_spending_an_attempt(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    let mut config = sampled(long_wait(fast_config()));
    config.worker.shutdown_grace = Duration::from_secs(20);
    let Blocked {
        daemon,
        runs,
        blocker,
        victims,
        max_attempts,
        ..
    } = blocked_buffer(&db, config, Duration::from_secs(6)).await;
    wait_until(
        Duration::from_secs(2),
        "the buffered gauge to show the victims",
        || async { buffered_gauge() == Some(VICTIMS as f64) },
    )
    .await;
    assert!(handed_back().is_empty(), "nothing handed back yet");
    let stopping = tokio::spawn(async move { daemon.shutdown().await });
    wait_until(
        Duration::from_secs(3),
        "the buffered jobs to be handed back while the blocker still runs",
        || async {
            db.count("fast", JobState::Running).await == 0
                && db.job(blocker).await.state == JobState::Running
        },
    )
    .await;
    assert_handed_back(&db, &victims, &runs, max_attempts).await;
    assert_eq!(handed_back(), reason("shutdown"));
    wait_until(
        Duration::from_secs(3),
        "the buffered gauge to return to 0 during the grace period",
        || async { buffered_gauge() == Some(0.0) },
    )
    .await;
    // Another daemon can take them at once, while the first is still in its grace period.
    let taken = claim(&db.pool, "default", "other", 100, Duration::from_secs(30))
        .await
        .unwrap();
    let mut ids: Vec<i64> = taken.iter().map(|j| j.id).collect();
    ids.sort_unstable();
    assert_eq!(ids, victims);
    assert!(taken.iter().all(|j| j.failures == 0));
    let report = stopping.await.unwrap();
    assert_eq!(
        report.handed_back, 0,
        "the blocker finished within the grace"
    );
    assert_eq!(db.job(blocker).await.state, JobState::Completed);
}

#[sqlx::test(migrations = false)]
async fn buffered_jobs_keep_their_leases_by_heartbeat_and_nothing_is_rescued(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    let mut config = long_wait(fast_config());
    config.worker.lease = Duration::from_millis(800);
    config.worker.heartbeat = Duration::from_millis(200);
    let lease = config.worker.lease;
    let b = blocked_buffer(&db, config, Duration::from_secs(3)).await;
    for &v in &b.victims {
        db.wait_for_state(v, JobState::Completed, Duration::from_secs(20))
            .await;
    }
    b.daemon.shutdown().await;
    let mut longest = Duration::ZERO;
    for &v in &b.victims {
        let job = db.job(v).await;
        assert_eq!((job.attempt, job.failures), (1, 0), "job {v} never rescued");
        assert_eq!(job.errors.as_array().map_or(0, |e| e.len()), 0);
        assert_eq!(b.runs.get(v), 1);
        let claimed = job.attempted_at.expect("attempted_at is the claim time");
        let started = b.starts.0.lock().unwrap()[&v];
        longest = longest.max((started - claimed).to_std().unwrap_or_default());
    }
    assert!(
        longest > lease * 2,
        "a victim waited {longest:?} in the buffer, more than twice the lease ({lease:?})"
    );
    let rescued: i64 =
        sqlx::query_scalar("SELECT count(*) FROM genq.jobs WHERE failures > 0 OR attempt > 1")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(rescued, 0);
}

#[sqlx::test(migrations = false)]
async fn concurrency_caps_executing_jobs_while_the_buffer_is_full(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    let (now, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let mut registry = Registry::new();
    let (n, p) = (now.clone(), peak.clone());
    registry.register_fn("tick", move |_, _: serde_json::Value| {
        let (n, p) = (n.clone(), p.clone());
        async move {
            let at = n.fetch_add(1, Ordering::SeqCst) + 1;
            p.fetch_max(at, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(2)).await;
            n.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        }
    });
    let jobs: Vec<NewJob> = (0..2000).map(|_| NewJob::new("tick", json!({}))).collect();
    Client::new(db.pool.clone())
        .enqueue_many(&jobs)
        .await
        .unwrap();
    let mut config = fast_config();
    config
        .queues
        .insert("default".into(), QueueConfig::with_concurrency(4));
    config.worker.claim_ahead = 100;
    let daemon = db.daemon(config, registry);
    let (mut most_buffered, mut most_running) = (0, 0);
    while db.count("tick", JobState::Completed).await < 2000 {
        for _ in 0..20 {
            most_buffered = most_buffered.max(daemon.buffered());
            most_running = most_running.max(daemon.running());
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    daemon.shutdown().await;
    let peak = peak.load(Ordering::SeqCst);
    assert!(peak <= 4, "{peak} handlers executed at once, concurrency 4");
    assert!(most_running <= 4, "{most_running} jobs started at once");
    assert!(most_buffered > 0, "the buffer was used");
    assert!(
        most_buffered <= 100 + 4,
        "{most_buffered} jobs buffered, claim_ahead 100 (+ the 4 slots a claim may refill)"
    );
}

#[sqlx::test(migrations = false)]
async fn fair_queues_and_capped_queues_do_not_buffer(po: PgPoolOptions, co: PgConnectOptions) {
    let db = TestDb::new(po, co).await;
    genq::queue::fairness::set_queue(&db.pool, "fairq", true, None)
        .await
        .unwrap();
    // "capped" gets its cap in the database only: the producer reads it.
    queue_control::set_max_running(&db.pool, "capped", Some(1000))
        .await
        .unwrap();
    let mut jobs = Vec::new();
    for i in 0..1500 {
        jobs.push(
            NewJob::new("fast", json!({}))
                .queue("fairq")
                .fairness_key(format!("u{}", i % 7)),
        );
        jobs.push(NewJob::new("fast", json!({})).queue("capped"));
    }
    Client::new(db.pool.clone())
        .enqueue_many(&jobs)
        .await
        .unwrap();
    let mut config = fast_config();
    config.queues.clear();
    config.queues.insert(
        "fairq".into(),
        QueueConfig {
            fair: Some(true),
            ..QueueConfig::with_concurrency(4)
        },
    );
    config
        .queues
        .insert("capped".into(), QueueConfig::with_concurrency(4));
    let (runs, starts) = (Runs::default(), Starts::default());
    let daemon = db.daemon(config.clone(), registry(&runs, &starts));
    let mut most_buffered = 0;
    while db.count("fast", JobState::Completed).await < 3000 {
        for _ in 0..20 {
            most_buffered = most_buffered.max(daemon.buffered());
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    daemon.shutdown().await;
    assert_eq!(most_buffered, 0, "fair and capped queues never buffer");

    // The same load on a plain queue does buffer (so the check above could fail).
    let plain: Vec<NewJob> = (0..1500)
        .map(|_| NewJob::new("fast", json!({})).queue("plain"))
        .collect();
    Client::new(db.pool.clone())
        .enqueue_many(&plain)
        .await
        .unwrap();
    config.queues.clear();
    config
        .queues
        .insert("plain".into(), QueueConfig::with_concurrency(4));
    let daemon = db.daemon(config, registry(&runs, &starts));
    let mut most_buffered = 0;
    while db.count("fast", JobState::Completed).await < 4500 {
        for _ in 0..20 {
            most_buffered = most_buffered.max(daemon.buffered());
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    daemon.shutdown().await;
    assert!(
        most_buffered > 0,
        "a plain queue buffers under the same load"
    );
}

#[sqlx::test(migrations = false)]
async fn a_cancelled_buffered_job_never_runs(po: PgPoolOptions, co: PgConnectOptions) {
    let db = TestDb::new(po, co).await;
    let b = blocked_buffer(&db, long_wait(fast_config()), Duration::from_secs(2)).await;
    let victim = b.victims[0];
    let (job, from) = control::cancel(&db.pool, victim).await.unwrap();
    assert_eq!((from, job.state), (JobState::Running, JobState::Cancelled));
    wait_until(
        Duration::from_secs(5),
        "the daemon to drop the cancelled job from its buffer",
        || async { b.daemon.buffered() == VICTIMS - 1 },
    )
    .await;
    for &v in &b.victims[1..] {
        db.wait_for_state(v, JobState::Completed, Duration::from_secs(20))
            .await;
        assert_eq!(b.runs.get(v), 1);
    }
    b.daemon.shutdown().await;
    assert_eq!(b.runs.get(victim), 0, "the cancelled job never started");
    assert_eq!(db.job(victim).await.state, JobState::Cancelled);
}

#[sqlx::test(migrations = false)]
async fn pausing_a_queue_hands_its_buffered_jobs_back(po: PgPoolOptions, co: PgConnectOptions) {
    let db = TestDb::new(po, co).await;
    let b = blocked_buffer(&db, long_wait(fast_config()), Duration::from_secs(4)).await;
    assert!(handed_back().is_empty(), "nothing handed back yet");
    queue_control::pause(&db.pool, Target::One("default"), Some("test"))
        .await
        .unwrap();
    wait_until(
        Duration::from_secs(3),
        "the paused queue's buffered jobs to go back while the blocker still runs",
        || async { b.daemon.buffered() == 0 && db.count("fast", JobState::Running).await == 0 },
    )
    .await;
    assert_eq!(db.job(b.blocker).await.state, JobState::Running);
    assert_handed_back(&db, &b.victims, &b.runs, b.max_attempts).await;
    assert_eq!(handed_back(), reason("pause"));
    queue_control::resume(&db.pool, Target::One("default"))
        .await
        .unwrap();
    for &v in &b.victims {
        db.wait_for_state(v, JobState::Completed, Duration::from_secs(20))
            .await;
        assert_eq!(b.runs.get(v), 1);
    }
    b.daemon.shutdown().await;
}

#[sqlx::test(migrations = false)]
async fn a_buffered_job_that_waits_too_long_is_handed_back(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    let mut config = sampled(fast_config());
    config.worker.claim_ahead_wait = Duration::from_millis(500);
    // Long enough for the wait bound to pass, yet the wait-until below may start late.
    let b = blocked_buffer(&db, config, Duration::from_secs(5)).await;
    wait_until(
        Duration::from_secs(3),
        "the buffered jobs to go back after claim_ahead_wait",
        || async { db.count("fast", JobState::Running).await == 0 },
    )
    .await;
    assert_eq!(db.job(b.blocker).await.state, JobState::Running);
    assert_eq!(
        b.daemon.buffered(),
        0,
        "not claimed again while the slot is busy"
    );
    assert_handed_back(&db, &b.victims, &b.runs, b.max_attempts).await;
    assert_eq!(handed_back(), reason("overstay"));
    wait_until(
        Duration::from_secs(3),
        "the buffered gauge to return to 0",
        || async { buffered_gauge() == Some(0.0) },
    )
    .await;
    for &v in &b.victims {
        let job = db
            .wait_for_state(v, JobState::Completed, Duration::from_secs(20))
            .await;
        assert_eq!(job.failures, 0);
        assert_eq!(b.runs.get(v), 1);
    }
    b.daemon.shutdown().await;
}
