//! The soak benchmark's parts on a fresh database: its per-minute sampler reads sane
//! figures, its job kind does what the payload asks, and migration 0019's storage settings
//! for the churning tables are in place.

use std::time::Duration;

use chrono::{DateTime, Utc};
use genq::dev::bench::soak::{self, Soak};
use genq::{NewJob, Registry};
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::common::*;

#[sqlx::test(migrations = false)]
async fn the_soak_sampler_reads_a_window_of_finished_jobs_and_the_table_statistics(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    let t0: DateTime<Utc> = sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let mut jobs: Vec<NewJob> = (0..20)
        .map(|_| NewJob::new(soak::KIND, json!({})))
        .collect();
    jobs.push(NewJob::new(soak::KIND, json!({ "discard": true })));
    jobs.push(NewJob::new(soak::KIND, json!({ "fail": 1 })));
    genq::Client::new(db.pool.clone())
        .enqueue_many(&jobs)
        .await
        .unwrap();
    let mut registry = Registry::new();
    registry.register(Soak);
    let daemon = db.daemon(fast_config(), registry);
    wait_until(Duration::from_secs(20), "every soak job to finish", || async {
        sqlx::query_scalar::<_, bool>(
            "SELECT NOT EXISTS (SELECT 1 FROM genq.jobs WHERE kind = 'soak' AND finished_at IS NULL)",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap()
    })
    .await;
    daemon.shutdown().await;
    let states: Vec<(String, i32)> = sqlx::query_as(
        "SELECT state::text, attempt FROM genq.jobs WHERE kind = 'soak' AND payload <> '{}' ORDER BY state::text",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        states,
        vec![("completed".into(), 2), ("discarded".into(), 1)],
        "discard is discarded at once; fail 1 completes on the second attempt"
    );
    let t1: DateTime<Utc> = sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let s = soak::sample(&db.pool, soak::KIND, t0, t1).await.unwrap();
    assert_eq!(s.finished, 22, "every job finished in the window: {s:?}");
    // The retried job's first attempt is no longer on its row (attempt 2 replaced it).
    assert_eq!(s.first_attempts, 21, "{s:?}");
    let (p50, p99) = (s.pickup_p50_ms.unwrap(), s.pickup_p99_ms.unwrap());
    assert!(0.0 <= p50 && p50 <= p99 && p99 < 20_000.0, "{s:?}");
    assert!(s.heap_bytes >= 8192 && s.index_bytes >= 8192, "{s:?}");
    assert!(
        s.live_tup >= 0 && s.dead_tup >= 0 && s.tup_hot_upd <= s.tup_upd,
        "{s:?}"
    );
    assert!(s.autovacuum_count >= 0 && s.autoanalyze_count >= 0, "{s:?}");
    // A window before the jobs holds none of them.
    let empty = soak::sample(&db.pool, soak::KIND, t0 - chrono::Duration::hours(1), t0)
        .await
        .unwrap();
    assert_eq!((empty.finished, empty.first_attempts), (0, 0));
    assert_eq!(empty.pickup_p99_ms, None);
}

#[sqlx::test(migrations = false)]
async fn genq_jobs_keeps_its_vacuum_settings_and_prunes_through_the_state_and_age_index(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    let reloptions: Vec<String> = sqlx::query_scalar(
        "SELECT unnest(reloptions) FROM pg_class WHERE oid = 'genq.jobs'::regclass",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    for setting in [
        "autovacuum_vacuum_scale_factor=0",
        "autovacuum_vacuum_threshold=5000",
        "autovacuum_vacuum_insert_scale_factor=0",
    ] {
        assert!(
            reloptions.iter().any(|r| r == setting),
            "{setting} in {reloptions:?}"
        );
    }
    let index: String =
        sqlx::query_scalar("SELECT pg_get_indexdef('genq.jobs_finished_idx'::regclass)")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(
        index.contains("(state, finished_at)") && index.contains("WHERE"),
        "{index}"
    );
    // 20,000 pruned-looking rows and 10 discarded ones of the same age kept for 7 days: the
    // prune batch of one state is a range scan of that index, never a sequential scan.
    sqlx::query(
        "INSERT INTO genq.jobs (kind, state, attempt, finished_at)
         SELECT 'soak', CASE WHEN g <= 10 THEN 'discarded' ELSE 'completed' END::genq.job_state, 1,
                now() - interval '2 days' + g * interval '1 ms'
           FROM generate_series(1, 20010) g",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    sqlx::query("ANALYZE genq.jobs")
        .execute(&db.pool)
        .await
        .unwrap();
    let plan: Vec<String> = sqlx::query_scalar(
        "EXPLAIN SELECT id, finished_at FROM genq.jobs
          WHERE state = 'completed'::genq.job_state AND finished_at >= '-infinity'::timestamptz
            AND finished_at < now() - make_interval(secs => 86400)
          ORDER BY finished_at LIMIT 1000",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let plan = plan.join("\n");
    assert!(
        plan.contains("jobs_finished_idx") && !plan.contains("Seq Scan"),
        "{plan}"
    );
    let deleted = genq::queue::prune::prune(
        &db.pool,
        Duration::from_secs(24 * 3600),
        Duration::from_secs(7 * 24 * 3600),
        1000,
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    assert_eq!(
        deleted, 20_000,
        "every completed row in batches of 1000; discarded kept"
    );
}
