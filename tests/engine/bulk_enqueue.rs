//! Bulk enqueue from typed arrays (`Client::enqueue_many`, migration 0018) and from SQL
//! (`genq.enqueue_many(jsonb)`, which delegates to it): unique keys, fairness keys,
//! wake-ups, validation and transactions behave as they did with one JSON document.

use std::time::Duration;

use chrono::{DateTime, Utc};
use genq::queue::enqueue::enqueue_many_in;
use genq::queue::fairness;
use genq::NewJob;
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPoolOptions};

use crate::common::privileges::{connect, login, Roles};
use crate::common::{bulk_wakeups, notifications, TestDb};

async fn count(db: &TestDb, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(&db.pool).await.unwrap()
}

async fn bulk(db: &TestDb, jobs: &[NewJob]) -> Result<i64, sqlx::Error> {
    enqueue_many_in(&mut db.pool.acquire().await.unwrap(), jobs).await
}

#[sqlx::test(migrations = false)]
async fn bulk_enqueue_skips_keys_held_in_the_table_and_repeated_in_the_batch(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    let held = db
        .enqueue(NewJob::new("noop", json!({"held": true})).unique_key("held"))
        .await;
    let jobs = vec![
        NewJob::new("noop", json!({"n": 1})).unique_key("held"),
        NewJob::new("noop", json!({"n": 2})).unique_key("fresh"),
        NewJob::new("noop", json!({"n": 3})).unique_key("fresh"),
        NewJob::new("noop", json!({"n": 4})),
    ];
    assert_eq!(
        bulk(&db, &jobs).await.unwrap(),
        2,
        "held and repeated keys skipped"
    );
    let rows: Vec<(Option<String>, serde_json::Value)> =
        sqlx::query_as("SELECT unique_key, payload FROM genq.jobs WHERE id <> $1 ORDER BY id")
            .bind(held)
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        rows,
        vec![
            (Some("fresh".into()), json!({"n": 2})),
            (None, json!({"n": 4}))
        ],
        "the first job of a repeated key wins"
    );

    // From SQL, the same rules.
    let n: i64 = sqlx::query_scalar(
        r#"SELECT genq.enqueue_many('[{"kind": "a", "unique_key": "held"},
             {"kind": "a", "unique_key": "k2"}, {"kind": "a", "unique_key": "k2"}, {"kind": "a"}]')"#,
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(n, 2);
    assert_eq!(count(&db, "SELECT count(*) FROM genq.jobs").await, 5);

    // Once the holder is final, its key is free again.
    sqlx::query("UPDATE genq.jobs SET state = 'completed', finished_at = now() WHERE id = $1")
        .bind(held)
        .execute(&db.pool)
        .await
        .unwrap();
    let again = [NewJob::new("noop", json!({})).unique_key("held")];
    assert_eq!(bulk(&db, &again).await.unwrap(), 1);
}

#[sqlx::test(migrations = false)]
async fn bulk_enqueue_marks_each_fair_key_once_with_and_without_unique_keys(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    fairness::set_queue(&db.pool, "fair", true, None)
        .await
        .unwrap();
    let jobs = vec![
        NewJob::new("noop", json!({}))
            .queue("fair")
            .fairness_key("a"),
        NewJob::new("noop", json!({}))
            .queue("fair")
            .fairness_key("a"),
        NewJob::new("noop", json!({}))
            .queue("fair")
            .fairness_key("b"),
        NewJob::new("noop", json!({})).queue("fair"),
        NewJob::new("noop", json!({}))
            .queue("plain")
            .fairness_key("c"),
        NewJob::new("noop", json!({}))
            .queue("fair")
            .fairness_key("d")
            .limit_group("g1"),
    ];
    assert_eq!(bulk(&db, &jobs).await.unwrap(), 6);
    // With unique keys (the ON CONFLICT path): a skipped job marks nothing.
    db.enqueue(NewJob::new("noop", json!({})).unique_key("u"))
        .await;
    let keyed = vec![
        NewJob::new("noop", json!({}))
            .queue("fair")
            .fairness_key("e")
            .unique_key("u"),
        NewJob::new("noop", json!({}))
            .queue("fair")
            .fairness_key("f")
            .unique_key("v"),
    ];
    assert_eq!(bulk(&db, &keyed).await.unwrap(), 1);

    let keys: Vec<(String, String, bool)> =
        sqlx::query_as("SELECT queue, key, waiting FROM genq.fair_keys ORDER BY queue, key")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    let expect = |k: &str| ("fair".to_string(), k.to_string(), true);
    assert_eq!(
        keys,
        vec![expect("a"), expect("b"), expect("d"), expect("f")]
    );
    let stored: Vec<(String, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT queue, fairness_key, limit_group FROM genq.jobs WHERE unique_key IS DISTINCT FROM 'u' ORDER BY id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let row = |q: &str, k: Option<&str>, g: Option<&str>| {
        (q.to_string(), k.map(String::from), g.map(String::from))
    };
    assert_eq!(
        stored,
        vec![
            row("fair", Some("a"), None),
            row("fair", Some("a"), None),
            row("fair", Some("b"), None),
            row("fair", Some(""), None),
            row("plain", Some("c"), None),
            row("fair", Some("d"), Some("g1")),
            row("fair", Some("f"), None),
        ],
        "a fair queue's job without a key gets the empty key; input order is id order"
    );
}

#[sqlx::test(migrations = false)]
async fn bulk_enqueue_wakes_each_due_queue_once_at_commit_and_never_on_rollback(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    let mut listener = PgListener::connect_with(&db.pool).await.unwrap();
    listener.listen("genq_jobs").await.unwrap();
    let later = Utc::now() + chrono::Duration::hours(1);
    let jobs = vec![
        NewJob::new("noop", json!({})).queue("q1"),
        NewJob::new("noop", json!({})).queue("q1"),
        NewJob::new("noop", json!({})).queue("q2"),
        NewJob::new("noop", json!({})).queue("q2").run_at(later),
        NewJob::new("noop", json!({})).queue("later").run_at(later),
    ];

    let got = bulk_wakeups(&db, &mut listener, &[jobs]).await;
    assert_eq!(got, vec!["q1", "q2"], "one wake-up per due queue");

    // The unique-key path: a queue whose only job was skipped is not woken.
    db.enqueue(NewJob::new("noop", json!({})).queue("q3").unique_key("k"))
        .await;
    notifications(&mut listener, Duration::from_millis(500)).await;
    let keyed = vec![
        NewJob::new("noop", json!({})).queue("q3").unique_key("k"),
        NewJob::new("noop", json!({})).queue("q4").unique_key("j"),
        NewJob::new("noop", json!({})).queue("q4").unique_key("j"),
    ];
    assert_eq!(bulk(&db, &keyed).await.unwrap(), 1);
    assert_eq!(
        notifications(&mut listener, Duration::from_millis(1000)).await,
        vec!["q4"]
    );
}

/// The SQLSTATE and message of a failed bulk enqueue.
fn failure(err: sqlx::Error) -> (String, String) {
    let e = err.as_database_error().expect("a database error");
    (
        e.code().unwrap_or_default().to_string(),
        e.message().to_string(),
    )
}

#[sqlx::test(migrations = false)]
async fn bulk_enqueue_rejects_bad_jobs_with_the_errors_of_0013_and_writes_nothing(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    let ok = NewJob::new("noop", json!({}));
    let big = json!({ "x": "y".repeat(1_048_577) });
    let cases = [
        (
            NewJob::new("", json!({})),
            "22023",
            r#"every job needs a non-empty "kind""#,
        ),
        (
            ok.clone().max_attempts(0),
            "22023",
            "max_attempts must be at least 1",
        ),
        (
            NewJob::new("noop", big),
            "54000",
            "a payload is over 1 MiB (1048576 bytes)",
        ),
        (
            ok.clone().unique_key("k".repeat(256)),
            "22023",
            "a kind, unique_key, fairness_key or limit_group is over 255 bytes",
        ),
        (
            ok.clone().limit_group(""),
            "22023",
            "limit_group must be null or a non-empty string",
        ),
    ];
    for (bad, code, message) in cases {
        let err = bulk(&db, &[ok.clone(), bad]).await.unwrap_err();
        assert_eq!(
            failure(err),
            (code.into(), format!("genq.enqueue_many: {message}"))
        );
    }

    // From SQL, including documents jsonb_to_recordset cannot read.
    let sql_cases = [
        (
            r#"[{"kind": "a"}, 1]"#,
            "22023",
            r#"every job needs a non-empty "kind""#,
        ),
        (
            r#"[{"kind": "a"}, {"payload": {}}]"#,
            "22023",
            r#"every job needs a non-empty "kind""#,
        ),
        (
            r#"[{"kind": "a", "max_attempts": 0.5}]"#,
            "22023",
            "max_attempts must be at least 1",
        ),
        (
            r#"[{"kind": "a", "max_attempts": 0}]"#,
            "22023",
            "max_attempts must be at least 1",
        ),
        (
            r#"[{"kind": "a", "limit_group": ""}]"#,
            "22023",
            "limit_group must be null or a non-empty string",
        ),
        (r#"{"kind": "a"}"#, "22023", "expected a JSON array of jobs"),
    ];
    for (doc, code, message) in sql_cases {
        let err = sqlx::query("SELECT genq.enqueue_many($1::jsonb)")
            .bind(doc)
            .execute(&db.pool)
            .await
            .unwrap_err();
        assert_eq!(
            failure(err),
            (code.into(), format!("genq.enqueue_many: {message}")),
            "{doc}"
        );
    }
    // A value of the wrong type with nothing else wrong: Postgres' own error, as before.
    let err = sqlx::query(r#"SELECT genq.enqueue_many('[{"kind": "a", "priority": "high"}]')"#)
        .execute(&db.pool)
        .await
        .unwrap_err();
    assert_eq!(failure(err).0, "22P02");
    // Arrays of different lengths.
    let err = sqlx::query(
        "SELECT genq.enqueue_many(ARRAY['a', 'b'], ARRAY['{}'::jsonb], NULL, NULL, NULL, NULL, NULL, NULL, NULL)",
    )
    .execute(&db.pool)
    .await
    .unwrap_err();
    assert_eq!(failure(err).0, "22023");
    assert_eq!(count(&db, "SELECT count(*) FROM genq.jobs").await, 0);
}

#[sqlx::test(migrations = false)]
async fn bulk_enqueue_of_50k_jobs_round_trips_every_field_in_order(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    let at: DateTime<Utc> = "2030-01-02T03:04:05.678901Z".parse().unwrap();
    let jobs: Vec<NewJob> = (0..50_000)
        .map(|i| {
            let mut job = NewJob::new(
                format!("kind{}", i % 7),
                json!({ "i": i, "s": "é\u{1F600}" }),
            )
            .queue(format!("bulk{}", i % 3))
            .priority(i % 11 - 5)
            .max_attempts(1 + i % 5);
            if i % 10 == 0 {
                job = job.run_at(at).unique_key(format!("u{i}"));
            }
            if i % 4 == 0 {
                job = job.fairness_key(format!("f{}", i % 13)).limit_group("g");
            }
            job
        })
        .collect();
    assert_eq!(bulk(&db, &jobs).await.unwrap(), 50_000);
    type Row = (
        String,
        serde_json::Value,
        String,
        i32,
        i32,
        Option<String>,
        Option<String>,
        Option<String>,
        DateTime<Utc>,
    );
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT kind, payload, queue, priority, max_attempts, unique_key, fairness_key, limit_group, run_at
           FROM genq.jobs ORDER BY id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), jobs.len());
    for (job, row) in jobs.iter().zip(&rows) {
        assert_eq!(
            (&row.0, &row.1, &row.2, row.3, row.4),
            (
                &job.kind,
                &job.payload,
                &job.queue,
                job.priority,
                job.max_attempts
            )
        );
        assert_eq!(
            (&row.5, &row.6, &row.7),
            (&job.unique_key, &job.fairness_key, &job.limit_group)
        );
        if let Some(at) = job.run_at {
            assert_eq!(row.8, at);
        }
    }
}

#[sqlx::test(migrations = false)]
async fn bulk_enqueue_in_a_rolled_back_transaction_leaves_nothing(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    let jobs: Vec<NewJob> = (0..1000)
        .map(|i| {
            NewJob::new("noop", json!({ "i": i }))
                .queue("rolled-back")
                .unique_key(format!("k{i}"))
        })
        .collect();
    let mut tx = db.pool.begin().await.unwrap();
    assert_eq!(enqueue_many_in(&mut tx, &jobs).await.unwrap(), 1000);
    tx.rollback().await.unwrap();
    assert_eq!(count(&db, "SELECT count(*) FROM genq.jobs").await, 0);
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM genq.queues WHERE name = 'rolled-back'"
        )
        .await,
        0
    );
    // The keys were never held.
    assert_eq!(bulk(&db, &jobs).await.unwrap(), 1000);
}

#[sqlx::test(migrations = false)]
async fn the_backend_role_calls_both_bulk_enqueues_and_cannot_insert_unique_keys_directly(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    let roles = Roles::of(&db);
    let name = format!("{}_bulk", roles.prefix);
    let options = login(&db, &name, Some(&roles.backend()), "").await;
    let mut conn = connect(&options).await;
    let jobs = [
        NewJob::new("noop", json!({})),
        NewJob::new("noop", json!({})).unique_key("k"),
    ];
    assert_eq!(enqueue_many_in(&mut conn, &jobs).await.unwrap(), 2);
    let n: i64 = sqlx::query_scalar(r#"SELECT genq.enqueue_many('[{"kind": "noop"}]')"#)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(n, 1);
    // Direct inserts (0020) cannot name a unique key: only the functions skip held keys.
    let err = sqlx::query("INSERT INTO genq.jobs (kind, unique_key) VALUES ('noop', 'k')")
        .execute(&mut conn)
        .await
        .unwrap_err();
    assert_eq!(failure(err).0, "42501");
}
