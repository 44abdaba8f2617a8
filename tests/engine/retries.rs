//! Retries: backoff schedule, attempt limit, explicit retry-after, permanent errors, snooze.

use std::time::Duration;

use chrono::{DateTime, Utc};
use genq::{JobError, JobState, NewJob, Registry};
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::common::{fast_config, wait_until, Runs, TestDb};

fn error_times(errors: &serde_json::Value) -> Vec<DateTime<Utc>> {
    errors
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["at"].as_str().unwrap().parse().unwrap())
        .collect()
}

#[sqlx::test(migrations = false)]
async fn failures_back_off_exponentially_then_discard_with_history(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    let id = db
        .enqueue(NewJob::new("flaky", json!({})).max_attempts(5))
        .await;
    let mut registry = Registry::new();
    registry.register_fn("flaky", |ctx, _: serde_json::Value| async move {
        Err::<(), _>(JobError::retry(format!(
            "provider 503 on attempt {}",
            ctx.attempt
        )))
    });
    let mut config = fast_config();
    config.backoff.base = Duration::from_millis(200);
    let daemon = db.daemon(config, registry);
    let job = db
        .wait_for_state(id, JobState::Discarded, Duration::from_secs(20))
        .await;
    daemon.shutdown().await;

    assert_eq!(job.attempt, 5);
    assert!(job.finished_at.is_some());
    let errors = job.errors.as_array().unwrap();
    assert_eq!(errors.len(), 5, "one entry per failed attempt");
    for (i, e) in errors.iter().enumerate() {
        assert_eq!(e["attempt"], json!(i + 1));
        assert!(e["error"]
            .as_str()
            .unwrap()
            .starts_with(&format!("provider 503 on attempt {}", i + 1)));
    }
    assert!(errors[4]["error"]
        .as_str()
        .unwrap()
        .contains("no attempts left"));
    // Delays 200, 400, 800, 1600 ms: each gap at least its delay, and growing.
    let at = error_times(&job.errors);
    let gaps: Vec<i64> = at
        .windows(2)
        .map(|w| (w[1] - w[0]).num_milliseconds())
        .collect();
    for (gap, min) in gaps.iter().zip([200, 400, 800, 1600]) {
        assert!(*gap >= min, "gaps {gaps:?}");
    }
    assert!(gaps.windows(2).all(|w| w[1] > w[0]), "gaps grow: {gaps:?}");
}

#[sqlx::test(migrations = false)]
async fn an_explicit_retry_after_overrides_backoff(po: PgPoolOptions, co: PgConnectOptions) {
    let db = TestDb::new(po, co).await;
    let id = db.enqueue(NewJob::new("limited", json!({}))).await;
    let mut registry = Registry::new();
    registry.register_fn("limited", |_ctx, _: serde_json::Value| async move {
        Err::<(), _>(JobError::retry_after(
            "429 Too Many Requests",
            Duration::from_secs(30),
        ))
    });
    let daemon = db.daemon(fast_config(), registry);
    let job = db
        .wait_for_state(id, JobState::Retryable, Duration::from_secs(10))
        .await;
    daemon.shutdown().await;
    let failed_at = error_times(&job.errors)[0];
    let delay = (job.run_at - failed_at).num_milliseconds();
    assert!(
        (29_000..=31_000).contains(&delay),
        "run_at is 30 s after the failure, got {delay} ms"
    );
}

#[sqlx::test(migrations = false)]
async fn a_permanent_error_discards_at_once(po: PgPoolOptions, co: PgConnectOptions) {
    let db = TestDb::new(po, co).await;
    let id = db.enqueue(NewJob::new("moderated", json!({}))).await;
    let mut registry = Registry::new();
    registry.register_fn("moderated", |_ctx, _: serde_json::Value| async move {
        Err::<(), _>(JobError::permanent("prompt rejected by moderation"))
    });
    let daemon = db.daemon(fast_config(), registry);
    let job = db
        .wait_for_state(id, JobState::Discarded, Duration::from_secs(10))
        .await;
    daemon.shutdown().await;
    assert_eq!(job.attempt, 1);
    assert_eq!(
        job.errors[0]["error"],
        json!("prompt rejected by moderation")
    );
}

#[sqlx::test(migrations = false)]
async fn snooze_reschedules_without_spending_attempts(po: PgPoolOptions, co: PgConnectOptions) {
    let db = TestDb::new(po, co).await;
    let id = db
        .enqueue(NewJob::new("waiting", json!({})).max_attempts(1))
        .await;
    let runs = Runs::default();
    let r = runs.clone();
    let mut registry = Registry::new();
    registry.register_fn("waiting", move |ctx, _: serde_json::Value| {
        let r = r.clone();
        async move {
            if r.record(ctx.id) <= 3 {
                return Err(JobError::snooze(Duration::from_millis(100)));
            }
            Ok(())
        }
    });
    let daemon = db.daemon(fast_config(), registry);
    let job = db
        .wait_for_state(id, JobState::Completed, Duration::from_secs(10))
        .await;
    daemon.shutdown().await;
    assert_eq!(runs.get(id), 4, "three snoozes, then success");
    // Attempt numbers only grow (they fence outcomes); each snooze gave one back.
    assert_eq!(
        (job.attempt, job.max_attempts),
        (4, 4),
        "snoozes spent no attempt"
    );
    assert_eq!(job.errors, json!([]));
}

/// The delay the row stores after its `n`th error: `run_at` minus that error's time (both
/// are the same statement's `now()`).
fn stored_delay_after_error(job: &genq::queue::job_control::JobRow, n: usize) -> Duration {
    let at = error_times(&job.errors)[n];
    (job.run_at - at).to_std().expect("run_at after the error")
}

#[sqlx::test(migrations = false)]
async fn a_job_that_snoozed_a_hundred_times_retries_after_the_base_delay(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    let id = db.enqueue(NewJob::new("long_render", json!({}))).await;
    let mut registry = Registry::new();
    registry.register_fn("long_render", |ctx, _: serde_json::Value| async move {
        match ctx.attempt {
            1..=100 => Err(JobError::snooze(Duration::ZERO)),
            101 => Err(JobError::retry("provider 502 Bad Gateway")),
            _ => Ok(()),
        }
    });
    let mut config = fast_config();
    config.worker.poll_interval = Duration::from_millis(10);
    // The README's schedule: 1 s, 2 s, 4 s ... up to 1 h.
    config.backoff.base = Duration::from_secs(1);
    config.backoff.max = Duration::from_secs(3600);
    let daemon = db.daemon(config, registry);
    let job = db
        .wait_for_state(id, JobState::Completed, Duration::from_secs(60))
        .await;
    daemon.shutdown().await;

    assert_eq!(job.attempt, 102, "100 snoozes, one failure, one success");
    assert_eq!(job.failures, 1);
    assert_eq!(job.errors.as_array().unwrap().len(), 1);
    assert_eq!(
        stored_delay_after_error(&job, 0),
        Duration::from_secs(1),
        "the first failure waits the base delay, however often the job snoozed"
    );
}

#[sqlx::test(migrations = false)]
async fn hand_backs_do_not_grow_the_delay(po: PgPoolOptions, co: PgConnectOptions) {
    let db = TestDb::new(po, co).await;
    let id = db.enqueue(NewJob::new("interrupted", json!({}))).await;
    let mut registry = Registry::new();
    registry.register_fn("interrupted", |ctx, _: serde_json::Value| async move {
        match ctx.attempt {
            1 | 4 => Err(JobError::retry("provider 503")),
            2 | 3 => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                Ok(())
            }
            _ => Ok(()),
        }
    });
    let mut config = fast_config();
    config.backoff.base = Duration::from_millis(200);
    config.backoff.max = Duration::from_secs(3600);
    config.worker.shutdown_grace = Duration::from_millis(50);
    // Attempts 2 and 3 are each handed back by a daemon stopping under them.
    for attempt in [2, 3] {
        let daemon = db.daemon(config.clone(), registry.clone());
        wait_until(
            Duration::from_secs(20),
            &format!("attempt {attempt} running"),
            || async {
                let job = db.job(id).await;
                job.state == JobState::Running && job.attempt == attempt
            },
        )
        .await;
        assert_eq!(daemon.shutdown().await.handed_back, 1);
    }
    let daemon = db.daemon(config, registry);
    let job = db
        .wait_for_state(id, JobState::Completed, Duration::from_secs(20))
        .await;
    daemon.shutdown().await;

    assert_eq!(job.attempt, 5);
    assert_eq!(
        job.failures, 2,
        "two failures; the hand-backs did not count"
    );
    assert_eq!(
        stored_delay_after_error(&job, 1),
        Duration::from_millis(400),
        "the second failure waits base · 2, not base · 2^3"
    );
}
