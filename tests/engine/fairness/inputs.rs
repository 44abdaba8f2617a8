//! Bad input to the fairness SQL API is refused with SQLSTATE 22023 and writes nothing;
//! what operators see (queue list, job show) names the fairness state.

use genq::queue::queue_control;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::{claim_some, enqueue_for, fair_queue, Q};
use crate::common::TestDb;

#[sqlx::test(migrations = false)]
async fn bad_fairness_arguments_are_refused_and_write_nothing(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    let long = "k".repeat(256);
    let cases = [
        "SELECT genq.set_fair_key('q', 'a', 0, NULL)".to_string(),
        "SELECT genq.set_fair_key('q', 'a', 1001, NULL)".to_string(),
        "SELECT genq.set_fair_key('q', 'a', 1, -1)".to_string(),
        "SELECT genq.set_fair_key('q', '', 1, 1)".to_string(),
        "SELECT genq.set_fair_key('q', NULL, 1, 1)".to_string(),
        format!("SELECT genq.set_fair_key('q', '{long}', 1, 1)"),
        "SELECT genq.set_queue_fairness('q', NULL, NULL)".to_string(),
        "SELECT genq.set_queue_fairness('q', true, -1)".to_string(),
        "SELECT genq.set_limit_group('', 1)".to_string(),
        "SELECT genq.set_limit_group('g', -1)".to_string(),
        format!("SELECT genq.set_limit_group('{long}', 1)"),
        "SELECT genq.enqueue('noop', queue => 'q', limit_group => '')".to_string(),
        format!("SELECT genq.enqueue('noop', queue => 'q', fairness_key => '{long}')"),
        format!("SELECT genq.enqueue('noop', queue => 'q', limit_group => '{long}')"),
        r#"SELECT genq.enqueue_many('[{"kind": "noop", "queue": "q", "limit_group": ""}]')"#
            .to_string(),
        format!(
            r#"SELECT genq.enqueue_many('[{{"kind": "noop", "queue": "q", "fairness_key": "{long}"}}]')"#
        ),
    ];
    for sql in &cases {
        let err = sqlx::query(sql).execute(&db.pool).await.expect_err(sql);
        let code = err
            .as_database_error()
            .and_then(|e| e.code())
            .map(|c| c.to_string());
        assert_eq!(code.as_deref(), Some("22023"), "{sql}: {err}");
    }
    let written: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM genq.jobs) + (SELECT count(*) FROM genq.fair_keys)
              + (SELECT count(*) FROM genq.limit_groups)
              + (SELECT count(*) FROM genq.queues WHERE name = 'q')",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(written, 0);
}

#[sqlx::test(migrations = false)]
async fn queue_list_and_job_show_tell_fairness_state(po: PgPoolOptions, co: PgConnectOptions) {
    let db = TestDb::new(po, co).await;
    fair_queue(&db, Some(1)).await;
    enqueue_for(&db, "noop", "a", 3).await;
    enqueue_for(&db, "noop", "b", 1).await;
    let listed = queue_control::list(&db.pool).await.unwrap();
    let q = listed.iter().find(|q| q.name == Q).unwrap();
    assert!(q.fair);
    assert_eq!(q.key_max_active, Some(1));
    assert_eq!(q.keys_waiting, Some(2));
    assert_eq!(q.available, 4);

    let got = claim_some(&db.pool, 10).await;
    assert_eq!(got.len(), 2);
    let c = db
        .enqueue(
            genq::NewJob::new("noop", serde_json::json!({}))
                .queue(Q)
                .fairness_key("c"),
        )
        .await;
    assert_eq!(
        db.job(c).await.waiting_for.as_deref(),
        Some("waiting for its turn: 1 keys have work waiting")
    );
    let listed = queue_control::list(&db.pool).await.unwrap();
    let q = listed.iter().find(|q| q.name == Q).unwrap();
    assert_eq!((q.running, q.available), (2, 3));
    let stats = genq::queue::fairness::queue_stats(&db.pool).await.unwrap();
    let s = stats.iter().find(|s| s.name == Q).unwrap();
    assert_eq!(
        (s.keys_at_limit, s.held_back),
        (2, 2),
        "a at 1 with 2 waiting; b at 1 with none"
    );
    assert_eq!(
        db.job(got[0].id).await.waiting_for,
        None,
        "a running job is not waiting"
    );
    let plain = db
        .enqueue(genq::NewJob::new("noop", serde_json::json!({})))
        .await;
    assert_eq!(
        db.job(plain).await.waiting_for.as_deref(),
        Some("waiting for a free worker")
    );
}
