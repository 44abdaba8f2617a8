//! What a handler cannot do to the daemon: panic, hang, or receive what it cannot read.

use std::time::Duration;

use genq::{JobState, NewJob, Registry};
use serde::Deserialize;
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::common::{fast_config, TestDb};

#[sqlx::test(migrations = false)]
async fn a_panic_is_a_failed_attempt_and_the_worker_lives_on(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    let id = db.enqueue(NewJob::new("fragile", json!({}))).await;
    let mut registry = Registry::new();
    registry.register_fn("fragile", |ctx, _: serde_json::Value| async move {
        if ctx.attempt == 1 {
            panic!("index out of bounds in frame decoder");
        }
        Ok(())
    });
    let daemon = db.daemon(fast_config(), registry);
    let job = db
        .wait_for_state(id, JobState::Completed, Duration::from_secs(10))
        .await;
    // The same daemon keeps working after the panic.
    let next = db.enqueue(NewJob::new("noop", json!({}))).await;
    db.wait_for_state(next, JobState::Completed, Duration::from_secs(10))
        .await;
    daemon.shutdown().await;
    assert_eq!(job.attempt, 2);
    assert_eq!(
        job.errors[0]["error"],
        json!("panicked: index out of bounds in frame decoder")
    );
}

#[sqlx::test(migrations = false)]
async fn a_hung_handler_times_out_as_a_failed_attempt(po: PgPoolOptions, co: PgConnectOptions) {
    let db = TestDb::new(po, co).await;
    let id = db
        .enqueue(NewJob::new("hangs", json!({})).max_attempts(2))
        .await;
    let mut registry = Registry::new();
    registry.register_fn("hangs", |_ctx, _: serde_json::Value| async move {
        tokio::time::sleep(Duration::from_secs(3600)).await;
        Ok(())
    });
    let mut config = fast_config();
    config
        .timeouts
        .insert("hangs".into(), Duration::from_millis(300));
    let daemon = db.daemon(config, registry);
    let job = db
        .wait_for_state(id, JobState::Discarded, Duration::from_secs(10))
        .await;
    daemon.shutdown().await;
    assert_eq!(job.attempt, 2);
    assert!(
        job.errors[0]["error"]
            .as_str()
            .unwrap()
            .starts_with("timed out after 300ms"),
        "{}",
        job.errors
    );
}

#[sqlx::test(migrations = false)]
async fn an_unknown_kind_is_discarded_at_once_with_its_name(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    let id = db.enqueue(NewJob::new("video.upscale", json!({}))).await;
    let daemon = db.daemon(fast_config(), Registry::new());
    let job = db
        .wait_for_state(id, JobState::Discarded, Duration::from_secs(10))
        .await;
    daemon.shutdown().await;
    assert_eq!(job.attempt, 1, "no retry storm");
    let error = job.errors[0]["error"].as_str().unwrap();
    assert!(
        error.contains("unknown job kind \"video.upscale\""),
        "{error}"
    );
}

#[derive(Debug, Deserialize)]
struct ResizeArgs {
    #[allow(dead_code)]
    width: u32,
}

#[sqlx::test(migrations = false)]
async fn a_malformed_payload_is_discarded_with_the_serde_error(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    let id = db
        .enqueue(NewJob::new("resize", json!({"width": "wide"})))
        .await;
    let mut registry = Registry::new();
    registry.register_fn("resize", |_ctx, _args: ResizeArgs| async move { Ok(()) });
    let daemon = db.daemon(fast_config(), registry);
    let job = db
        .wait_for_state(id, JobState::Discarded, Duration::from_secs(10))
        .await;
    daemon.shutdown().await;
    assert_eq!(job.attempt, 1);
    let error = job.errors[0]["error"].as_str().unwrap();
    assert!(error.contains("payload of job kind \"resize\""), "{error}");
    assert!(
        error.contains("invalid type: string \"wide\", expected u32"),
        "{error}"
    );
}
