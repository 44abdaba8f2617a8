//! Two daemons claiming one fair queue: a per-key limit holds across both under load
//! (sampled in the handlers), and light keys enqueued behind a heavy backlog are served
//! within a few claims, not after the backlog.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use genq::config::QueueConfig;
use genq::{JobState, Registry};
use serde::Deserialize;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::{enqueue_for, fair_queue, Q};
use crate::common::{fast_config, wait_until, TestDb};

#[derive(Deserialize)]
struct Args {
    key: String,
}

/// Per key: (running now, most running at once), across every daemon of the test; and
/// the order jobs finished in.
#[derive(Clone, Default)]
struct Tracker {
    running: Arc<Mutex<HashMap<String, (u32, u32)>>>,
    finished: Arc<Mutex<Vec<String>>>,
}

fn tracking(tracker: &Tracker, work: Duration) -> Registry {
    let tracker = tracker.clone();
    let mut registry = Registry::new();
    registry.register_fn("track", move |_ctx, args: Args| {
        let tracker = tracker.clone();
        async move {
            {
                let mut running = tracker.running.lock().unwrap();
                let e = running.entry(args.key.clone()).or_default();
                e.0 += 1;
                e.1 = e.1.max(e.0);
            }
            tokio::time::sleep(work).await;
            tracker
                .running
                .lock()
                .unwrap()
                .get_mut(&args.key)
                .unwrap()
                .0 -= 1;
            tracker.finished.lock().unwrap().push(args.key);
            Ok(())
        }
    });
    registry
}

fn config(concurrency: u32) -> genq::Config {
    let mut c = fast_config();
    c.queues
        .insert(Q.into(), QueueConfig::with_concurrency(concurrency));
    c
}

#[sqlx::test(migrations = false)]
async fn a_per_key_limit_holds_across_two_daemons_under_load(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    fair_queue(&db, Some(2)).await;
    for k in 0..8 {
        enqueue_for(&db, "track", &format!("k{k}"), 15).await;
    }
    let tracker = Tracker::default();
    let a = db.daemon(config(8), tracking(&tracker, Duration::from_millis(20)));
    let b = db.daemon(config(8), tracking(&tracker, Duration::from_millis(20)));
    let most_slots = AtomicI64::new(0);
    wait_until(Duration::from_secs(60), "every job to complete", || async {
        let slots: i64 = sqlx::query_scalar(
            "SELECT coalesce(max(n), 0) FROM (SELECT count(*) AS n FROM genq.fair_slots GROUP BY key) s",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        most_slots.fetch_max(slots, Ordering::Relaxed);
        db.count("track", JobState::Completed).await == 120
    })
    .await;
    a.shutdown().await;
    b.shutdown().await;
    let running = tracker.running.lock().unwrap().clone();
    assert_eq!(running.len(), 8);
    for (key, (now, most)) in &running {
        assert_eq!(*now, 0);
        assert!(*most <= 2, "{key} ran {most} at once");
    }
    assert!(
        running.values().any(|(_, most)| *most == 2),
        "the limit was reached, so it was tested: {running:?}"
    );
    let most_slots = most_slots.into_inner();
    assert!(most_slots <= 2, "sampled slots per key: {most_slots}");
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM genq.fair_slots")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(left, 0, "every slot freed");
}

#[sqlx::test(migrations = false)]
async fn light_keys_behind_a_heavy_backlog_are_served_within_a_few_claims_on_two_daemons(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    fair_queue(&db, None).await;
    enqueue_for(&db, "track", "heavy", 300).await;
    let tracker = Tracker::default();
    let a = db.daemon(config(2), tracking(&tracker, Duration::from_millis(10)));
    let b = db.daemon(config(2), tracking(&tracker, Duration::from_millis(10)));
    wait_until(
        Duration::from_secs(30),
        "the heavy key to be under way",
        || async { tracker.finished.lock().unwrap().len() >= 20 },
    )
    .await;
    let started_at = tracker.finished.lock().unwrap().len();
    for l in 0..5 {
        enqueue_for(&db, "track", &format!("light{l}"), 1).await;
    }
    wait_until(Duration::from_secs(60), "every job to complete", || async {
        db.count("track", JobState::Completed).await == 305
    })
    .await;
    a.shutdown().await;
    b.shutdown().await;
    let finished = tracker.finished.lock().unwrap().clone();
    let last_light = finished
        .iter()
        .rposition(|k| k.starts_with("light"))
        .unwrap();
    // Two daemons with two slots each: at most four heavy jobs were claimed, plus what
    // was running, before the light keys' turn; allow a generous margin, far below the
    // ~280 jobs still in the heavy backlog.
    assert!(
        last_light < started_at + 30,
        "light jobs finished by position {last_light} (enqueued at {started_at}): {finished:?}"
    );
}
