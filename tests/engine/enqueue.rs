//! Enqueueing: transactions, unique keys, bulk, validation.

use genq::queue::enqueue::{enqueue_in, enqueue_many_in};
use genq::{JobState, NewJob};
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::common::TestDb;

#[sqlx::test(migrations = false)]
async fn enqueue_commits_with_the_callers_transaction(po: PgPoolOptions, co: PgConnectOptions) {
    let db = TestDb::new(po, co).await;

    let mut tx = db.pool.begin().await.unwrap();
    let kept = enqueue_in(&mut tx, &NewJob::new("noop", json!({"k": 1})))
        .await
        .unwrap();
    tx.commit().await.unwrap();

    let mut tx = db.pool.begin().await.unwrap();
    let rolled_back = enqueue_in(&mut tx, &NewJob::new("noop", json!({"k": 2})))
        .await
        .unwrap();
    tx.rollback().await.unwrap();

    let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM genq.jobs")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        ids,
        vec![kept],
        "the rolled-back job {rolled_back} must not exist"
    );
    let job = db.job(kept).await;
    assert_eq!(job.state, JobState::Available);
    assert_eq!(job.attempt, 0);
    assert_eq!(job.payload, json!({"k": 1}));
}

#[sqlx::test(migrations = false)]
async fn plain_sql_enqueue_with_named_arguments(po: PgPoolOptions, co: PgConnectOptions) {
    let db = TestDb::new(po, co).await;
    let id: i64 = sqlx::query_scalar(
        "SELECT genq.enqueue('email.send', '{\"to\": \"a@b.c\"}', queue => 'mail', priority => -5, max_attempts => 3)",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let job = db.job(id).await;
    assert_eq!(
        (
            job.queue.as_str(),
            job.kind.as_str(),
            job.priority,
            job.max_attempts
        ),
        ("mail", "email.send", -5, 3)
    );
    let queue_row: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM genq.queues WHERE name = 'mail')")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(queue_row, "the first enqueue creates the queue row");
}

#[sqlx::test(migrations = false)]
async fn unique_key_returns_the_pending_job_and_frees_when_final(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    let job = NewJob::new("noop", json!({})).unique_key("webhook:abc");
    let first = db.enqueue(job.clone()).await;
    let second = db.enqueue(job.clone()).await;
    assert_eq!(first, second, "a duplicate returns the pending job's id");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM genq.jobs")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(n, 1);

    // Once the holder is final, the key is free again.
    sqlx::query("UPDATE genq.jobs SET state = 'completed', finished_at = now() WHERE id = $1")
        .bind(first)
        .execute(&db.pool)
        .await
        .unwrap();
    let third = db.enqueue(job).await;
    assert_ne!(third, first);
    assert_eq!(db.job(third).await.state, JobState::Available);
}

#[sqlx::test(migrations = false)]
async fn concurrent_duplicates_make_one_job(po: PgPoolOptions, co: PgConnectOptions) {
    let db = TestDb::new(po, co).await;
    let mut tasks = Vec::new();
    for _ in 0..20 {
        let pool = db.pool.clone();
        tasks.push(tokio::spawn(async move {
            genq::Client::new(pool)
                .enqueue(&NewJob::new("noop", json!({})).unique_key("same"))
                .await
                .unwrap()
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    ids.dedup();
    assert_eq!(
        ids.len(),
        1,
        "all 20 racing enqueues return one id: {ids:?}"
    );
}

#[sqlx::test(migrations = false)]
async fn enqueue_many_inserts_in_bulk_and_skips_held_keys(po: PgPoolOptions, co: PgConnectOptions) {
    let db = TestDb::new(po, co).await;
    db.enqueue(NewJob::new("noop", json!({})).unique_key("held"))
        .await;
    let mut jobs: Vec<NewJob> = (0..100_000)
        .map(|i| NewJob::new("noop", json!({ "i": i })))
        .collect();
    jobs.push(NewJob::new("noop", json!({})).unique_key("held"));
    jobs.push(
        NewJob::new("other", json!({}))
            .queue("bulk-q")
            .unique_key("fresh"),
    );
    jobs.push(
        NewJob::new("other", json!({}))
            .queue("bulk-q")
            .unique_key("fresh"),
    );

    let mut conn = db.pool.acquire().await.unwrap();
    let inserted = enqueue_many_in(&mut conn, &jobs).await.unwrap();
    assert_eq!(inserted, 100_001, "held and repeated keys are skipped");
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM genq.jobs")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(total, 100_002);

    // The same from SQL, as a TypeScript backend would call it.
    let n: i64 = sqlx::query_scalar(
        r#"SELECT genq.enqueue_many('[{"kind": "a"}, {"kind": "b", "queue": "q2", "priority": 3}]')"#,
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(n, 2);
    let q2: i64 =
        sqlx::query_scalar("SELECT count(*) FROM genq.queues WHERE name IN ('q2', 'bulk-q')")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(q2, 2);
}

#[sqlx::test(migrations = false)]
async fn bad_input_gets_a_clear_error_and_writes_nothing(po: PgPoolOptions, co: PgConnectOptions) {
    let db = TestDb::new(po, co).await;
    let cases = [
        ("SELECT genq.enqueue('')", "kind must be a non-empty string"),
        (
            "SELECT genq.enqueue('noop', max_attempts => 0)",
            "max_attempts must be at least 1",
        ),
        (
            "SELECT genq.enqueue_many('{\"kind\": \"noop\"}')",
            "expected a JSON array",
        ),
        (
            "SELECT genq.enqueue('noop', queue => 'bad queue name!')",
            "queues_name_check",
        ),
        (
            r#"SELECT genq.enqueue_many('[{"kind": "a"}, {"payload": {}}]')"#,
            r#"every job needs a non-empty "kind""#,
        ),
        (
            r#"SELECT genq.enqueue_many('[{"kind": "a", "max_attempts": 0}]')"#,
            "max_attempts must be at least 1",
        ),
    ];
    for (sql, expected) in cases {
        let err = sqlx::query(sql)
            .execute(&db.pool)
            .await
            .unwrap_err()
            .to_string();
        assert!(err.contains(expected), "{sql}: {err}");
    }
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM genq.jobs")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(n, 0);
}
