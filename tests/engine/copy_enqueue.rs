//! Bulk enqueue by COPY (migration 0020, decision 55): a large batch without unique keys is
//! copied into `genq.jobs`, and copied rows (the Rust client's, or a backend's own `COPY` or
//! `INSERT`) keep every rule of `genq.enqueue_many`: values, queues, fair keys, wake-ups,
//! transactions, errors that write nothing.

use chrono::{DateTime, Utc};
use genq::queue::enqueue::enqueue_many_in;
use genq::queue::enqueue_copy::{copy_shape, COPY_MIN_JOBS};
use genq::queue::fairness;
use genq::NewJob;
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};
use sqlx::PgConnection;

use crate::common::fair_keys::{
    assert_woken_no_earlier_than_the_clock, counting_calls, function_calls, park_behind_and_ahead,
    CLOCK,
};
use crate::common::privileges::{assert_denied, connect, login, refused, Roles};
use crate::common::{bulk_wakeups, genq_output, TestDb};

async fn count(db: &TestDb, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&db.pool).await.unwrap()
}

/// Enqueues `jobs` in a transaction on `conn` and returns how many were inserted, and
/// whether they were copied (the intake trigger ran, `genq.enqueue_many` did not).
async fn enqueue_counting(conn: &mut PgConnection, jobs: &[NewJob]) -> (i64, bool) {
    const COUNTED: [&str; 2] = ["jobs_intake", "enqueue_many"];
    let mut tx = counting_calls(conn).await;
    let before = function_calls(&mut tx, &COUNTED).await;
    let n = enqueue_many_in(&mut tx, jobs).await.unwrap();
    let after = function_calls(&mut tx, &COUNTED).await;
    let copied = after[0] - before[0] == 1 && after[1] == before[1];
    tx.commit().await.unwrap();
    (n, copied)
}

/// Strings a COPY format must carry untouched.
const HOSTILE: [&str; 6] = [
    "tab\there",
    "new\nline\r\n",
    "back\\slash \\N \\.",
    "quote\"s and 'apostrophes'",
    "ünïcödé ✓ 🎬",
    "\\x00 not a nul",
];

fn varied_job(i: usize, run_at: Option<DateTime<Utc>>) -> NewJob {
    let mut job = NewJob::new(
        format!("kind.{}", HOSTILE[i % HOSTILE.len()]),
        json!({ "i": i, "text": HOSTILE[(i + 1) % HOSTILE.len()], "nested": { "list": [i, null, true, 1.5] } }),
    )
    .queue(["copy-a", "copy-b", "copy_c.1"][i % 3])
    .priority(i as i32 % 7 - 3)
    .max_attempts(1 + i as i32 % 5);
    if i % 4 == 0 {
        job = job.fairness_key(format!("user {}", HOSTILE[i % HOSTILE.len()]));
    }
    if i % 5 == 0 {
        job = job.limit_group(format!("group:{}", i % 3));
    }
    if let Some(at) = run_at {
        job = job.run_at(at + chrono::Duration::microseconds(i as i64));
    }
    job
}

type Row = (
    String,
    serde_json::Value,
    String,
    i32,
    i32,
    Option<String>,
    Option<String>,
    DateTime<Utc>,
    String,
);

async fn stored(db: &TestDb) -> Vec<Row> {
    sqlx::query_as(
        "SELECT kind, payload, queue, priority, max_attempts, fairness_key, limit_group, run_at,
                state::text FROM genq.jobs ORDER BY id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

#[sqlx::test(migrations = false)]
async fn a_large_batch_is_copied_with_every_field_in_input_order(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    let mut conn = db.pool.acquire().await.unwrap();
    let before = Utc::now();
    // Every job due now (the column's default), then every job at a time of its own.
    let now_jobs: Vec<NewJob> = (0..3000).map(|i| varied_job(i, None)).collect();
    let at = Utc::now() + chrono::Duration::hours(2);
    let at_jobs: Vec<NewJob> = (0..3000).map(|i| varied_job(i, Some(at))).collect();
    assert_eq!(enqueue_counting(&mut conn, &now_jobs).await, (3000, true));
    assert_eq!(enqueue_counting(&mut conn, &at_jobs).await, (3000, true));
    let after = Utc::now();

    let rows = stored(&db).await;
    assert_eq!(rows.len(), 6000);
    for (row, job) in rows.iter().zip(now_jobs.iter().chain(&at_jobs)) {
        assert_eq!(
            (&row.0, &row.1, &row.2, row.3, row.4, &row.5, &row.6),
            (
                &job.kind,
                &job.payload,
                &job.queue,
                job.priority,
                job.max_attempts,
                &job.fairness_key,
                &job.limit_group
            )
        );
        assert_eq!(row.8, "available");
        match job.run_at {
            Some(at) => assert_eq!(row.7.timestamp_micros(), at.timestamp_micros()),
            None => assert!(row.7 >= before - chrono::Duration::seconds(5) && row.7 <= after),
        }
    }
    // The queues were created as genq.enqueue_many creates them.
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM genq.queues WHERE name IN ('copy-a', 'copy-b', 'copy_c.1')"
        )
        .await,
        3
    );
}

#[sqlx::test(migrations = false)]
async fn batches_copy_cannot_express_go_through_enqueue_many(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    let mut conn = db.pool.acquire().await.unwrap();
    let plain = |i: usize| NewJob::new("noop", json!({ "i": i }));
    let small: Vec<NewJob> = (0..COPY_MIN_JOBS - 1).map(plain).collect();
    assert_eq!(enqueue_counting(&mut conn, &small).await, (255, false));
    // One unique key: held keys must be skipped, which a COPY cannot do.
    db.enqueue(plain(0).unique_key("held")).await;
    let mut keyed: Vec<NewJob> = (0..1000).map(plain).collect();
    keyed[500] = plain(500).unique_key("held");
    assert_eq!(enqueue_counting(&mut conn, &keyed).await, (999, false));
    // run_at on some jobs only: the others' default is the server's clock.
    let mut mixed: Vec<NewJob> = (0..1000).map(plain).collect();
    mixed[3] = plain(3).run_at(Utc::now());
    assert_eq!(enqueue_counting(&mut conn, &mixed).await, (1000, false));
    assert!(copy_shape(&(0..1000).map(plain).collect::<Vec<_>>()).is_some());
}

#[sqlx::test(migrations = false)]
async fn copied_jobs_mark_fair_keys_once_and_take_the_keyless_bucket(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    fairness::set_queue(&db.pool, "fair", true, None)
        .await
        .unwrap();
    // Keys that waited before and were parked: marking wakes them no earlier than the clock.
    park_behind_and_ahead(&db, "fair").await;
    let keys = 2000;
    let mut jobs: Vec<NewJob> = (0..2 * keys)
        .map(|i| {
            NewJob::new("noop", json!({}))
                .queue("fair")
                .fairness_key(format!("u{}", i % keys))
        })
        .collect();
    jobs.push(
        NewJob::new("noop", json!({}))
            .queue("fair")
            .fairness_key("parked"),
    );
    jobs.push(
        NewJob::new("noop", json!({}))
            .queue("fair")
            .fairness_key("ahead"),
    );
    jobs.push(NewJob::new("noop", json!({})).queue("fair"));
    jobs.push(
        NewJob::new("noop", json!({}))
            .queue("plain")
            .fairness_key("ignored"),
    );
    let mut conn = db.pool.acquire().await.unwrap();
    assert_eq!(
        enqueue_counting(&mut conn, &jobs).await,
        (2 * keys as i64 + 4, true)
    );

    let waiting = count(
        &db,
        &format!("SELECT count(*) FROM genq.fair_keys WHERE queue = 'fair' AND waiting AND key LIKE 'u%' AND vtime = {CLOCK}"),
    )
    .await;
    assert_eq!(
        waiting, keys as i64,
        "every new key marked once, at the queue's clock"
    );
    assert_woken_no_earlier_than_the_clock(&db, "fair").await;
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM genq.fair_keys WHERE queue = 'plain'"
        )
        .await,
        0
    );
    let keyless: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT queue, fairness_key FROM genq.jobs WHERE fairness_key IS NULL OR fairness_key IN ('', 'ignored') ORDER BY id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        keyless,
        vec![
            ("fair".into(), Some(String::new())),
            ("plain".into(), Some("ignored".into()))
        ],
        "a fair queue's job without a key gets the empty key, as genq.enqueue gives it"
    );
}

#[sqlx::test(migrations = false)]
async fn a_copied_batch_wakes_each_due_queue_once_at_commit_and_never_on_rollback(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    let mut listener = PgListener::connect_with(&db.pool).await.unwrap();
    listener.listen("genq_jobs").await.unwrap();
    let due: Vec<NewJob> = (0..1000)
        .map(|i| NewJob::new("noop", json!({})).queue(["q1", "q2"][i % 2]))
        .collect();
    let later: Vec<NewJob> = (0..1000)
        .map(|_| {
            NewJob::new("noop", json!({}))
                .queue("later")
                .run_at(Utc::now() + chrono::Duration::hours(1))
        })
        .collect();

    let woken = bulk_wakeups(&db, &mut listener, &[due, later]).await;
    assert_eq!(
        woken,
        vec!["q1".to_string(), "q2".to_string()],
        "one wake-up per due queue; none for a queue whose jobs start later"
    );
}

#[sqlx::test(migrations = false)]
async fn a_bad_job_in_a_large_batch_writes_nothing_and_says_what_is_wrong(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    let jobs = |bad: NewJob| {
        let mut jobs: Vec<NewJob> = (0..2000)
            .map(|i| NewJob::new("noop", json!({ "i": i })))
            .collect();
        jobs[1500] = bad;
        jobs
    };
    let err = |e: sqlx::Error| match e {
        sqlx::Error::Database(e) => (
            e.code().unwrap_or_default().into_owned(),
            e.message().to_string(),
        ),
        other => panic!("{other}"),
    };
    let mut conn = db.pool.acquire().await.unwrap();
    // Rules the client sees go to genq.enqueue_many, whose messages say which.
    let cases = [
        (NewJob::new("", json!({})), "22023", "non-empty \"kind\""),
        (
            NewJob::new("noop", json!({})).max_attempts(0),
            "22023",
            "max_attempts",
        ),
        (
            NewJob::new("noop", json!("x".repeat(1 << 20))),
            "54000",
            "over 1 MiB",
        ),
        (
            NewJob::new("noop", json!({})).limit_group(""),
            "22023",
            "limit_group",
        ),
    ];
    for (bad, code, text) in cases {
        let (c, m) = err(enqueue_many_in(&mut conn, &jobs(bad)).await.unwrap_err());
        assert_eq!(c, code, "{m}");
        assert!(m.contains(text), "{m}");
    }
    // A queue name the queues table refuses fails the copy itself.
    let (c, m) = err(enqueue_many_in(
        &mut conn,
        &jobs(NewJob::new("noop", json!({})).queue("bad queue")),
    )
    .await
    .unwrap_err());
    assert_eq!(c, "23514", "{m}");
    assert!(m.contains("queues_name_check"), "{m}");
    assert_eq!(
        count(&db, "SELECT count(*) FROM genq.jobs").await,
        0,
        "nothing written"
    );
}

#[sqlx::test(migrations = false)]
async fn the_backend_copies_and_inserts_jobs_with_the_same_rules_and_no_more_columns(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    fairness::set_queue(&db.pool, "fair", true, None)
        .await
        .unwrap();
    let roles = Roles::of(&db);
    let name = format!("{}_copy", roles.prefix);
    let options = login(&db, &name, Some(&roles.backend()), "").await;
    let mut conn = connect(&options).await;

    // The Rust client as the backend: copied.
    let jobs: Vec<NewJob> = (0..1000)
        .map(|i| {
            NewJob::new("noop", json!({ "i": i }))
                .queue("fair")
                .fairness_key(format!("u{}", i % 10))
        })
        .collect();
    assert_eq!(enqueue_many_in(&mut conn, &jobs).await.unwrap(), 1000);
    // Its own COPY in text format, and a plain INSERT.
    let mut copy = conn
        .copy_in_raw("COPY genq.jobs (kind, payload, queue, fairness_key) FROM STDIN")
        .await
        .unwrap();
    copy.send(b"by-copy\t{\"n\": 1}\tfair\tu10\nby-copy\t{}\tfair\t\\N\n".as_slice())
        .await
        .unwrap();
    assert_eq!(copy.finish().await.unwrap(), 2);
    sqlx::raw_sql("INSERT INTO genq.jobs (kind, queue) VALUES ('by-insert', 'inserted-q')")
        .execute(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM genq.fair_keys WHERE queue = 'fair' AND waiting"
        )
        .await,
        11
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM genq.jobs WHERE kind = 'by-copy' AND fairness_key = ''"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM genq.queues WHERE name = 'inserted-q'"
        )
        .await,
        1
    );

    // Columns that are genq's to set stay out of reach; the checks hold for hand-written rows.
    assert_denied(
        &mut conn,
        &[
            "INSERT INTO genq.jobs (kind, state) VALUES ('x', 'running')",
            "INSERT INTO genq.jobs (kind, unique_key) VALUES ('x', 'k')",
            "INSERT INTO genq.jobs (kind, attempt, lease_until) VALUES ('x', 1, now())",
            "INSERT INTO genq.jobs (kind, errors) VALUES ('x', '[]')",
            "UPDATE genq.jobs SET priority = 0",
            "DELETE FROM genq.jobs",
        ],
        "backend",
    )
    .await;
    assert_eq!(
        refused(&mut conn, "INSERT INTO genq.jobs (kind, payload) VALUES ('x', jsonb_build_object('x', repeat('a', 1100000)))").await,
        "23514"
    );
    assert_eq!(
        refused(
            &mut conn,
            &format!(
                "INSERT INTO genq.jobs (kind) VALUES ('{}')",
                "é".repeat(200)
            )
        )
        .await,
        "23514"
    );
    assert_eq!(count(&db, "SELECT count(*) FROM genq.jobs").await, 1003);
}

#[sqlx::test(migrations = false)]
async fn the_queue_bench_compares_the_four_bulk_paths(po: PgPoolOptions, co: PgConnectOptions) {
    let db = TestDb::new(po, co).await;
    let url = db.url().await;
    let args = [
        "bench",
        "--jobs",
        "3000",
        "--enqueue-rounds",
        "2",
        "--concurrency",
        "100",
        "--latency-samples",
        "3",
    ];
    let (ok, stdout, stderr) = tokio::task::spawn_blocking(move || genq_output(&url, &args))
        .await
        .unwrap();
    assert!(ok, "{stdout}\n{stderr}");
    assert!(
        stdout.contains("3000 jobs per path, 2 round(s)"),
        "{stdout}"
    );
    for path in [
        "Rust client (COPY",
        "typed arrays",
        "one JSON document",
        "raw COPY",
    ] {
        let line = stdout
            .lines()
            .find(|l| l.contains(path))
            .unwrap_or_else(|| panic!("{path}: {stdout}"));
        assert!(
            line.contains("jobs/s") && line.contains("of COPY"),
            "{line}"
        );
    }
    assert!(stdout.contains("processing:"), "{stdout}");
}
