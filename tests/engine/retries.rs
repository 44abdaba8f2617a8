//! Retries: backoff schedule, attempt limit, explicit retry-after, permanent errors, snooze.

use std::time::Duration;

use chrono::{DateTime, Utc};
use genq::{JobError, JobState, NewJob, Registry};
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::common::{fast_config, Runs, TestDb};

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
