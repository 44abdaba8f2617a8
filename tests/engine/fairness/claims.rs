//! How a fair claim orders work: interleaved across keys, priority within a key, weights,
//! keyless jobs first, a huge backlog that does not hold others back, and queues that are
//! not fair claiming exactly as before.

use genq::queue::fairness;
use genq::NewJob;
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::{claim_some, enqueue_for, fair_queue, keys, Q};
use crate::common::TestDb;

#[sqlx::test(migrations = false)]
async fn claims_alternate_between_keys_whatever_the_enqueue_order(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    fair_queue(&db, None).await;
    enqueue_for(&db, "noop", "a", 5).await;
    enqueue_for(&db, "noop", "b", 5).await;
    let mut order = Vec::new();
    for _ in 0..6 {
        order.extend(keys(&claim_some(&db.pool, 1).await));
    }
    assert_eq!(order, ["a", "b", "a", "b", "a", "b"]);
    let mut rest = keys(&claim_some(&db.pool, 10).await);
    rest.sort();
    assert_eq!(rest, ["a", "a", "b", "b"]);

    // A batch shares out too: one heavy key and three light keys, eight slots.
    enqueue_for(&db, "noop", "heavy", 100).await;
    for light in ["l1", "l2", "l3"] {
        enqueue_for(&db, "noop", light, 2).await;
    }
    let batch = keys(&claim_some(&db.pool, 8).await);
    for light in ["l1", "l2", "l3"] {
        assert_eq!(
            batch.iter().filter(|k| *k == light).count(),
            2,
            "{light} in {batch:?}"
        );
    }
    assert!(
        batch.iter().filter(|k| *k == "heavy").count() <= 2,
        "{batch:?}"
    );
}

#[sqlx::test(migrations = false)]
async fn priority_orders_jobs_within_a_key_but_not_across_keys(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    fair_queue(&db, None).await;
    let client = genq::Client::new(db.pool.clone());
    for (i, p) in [5, -1, 0].into_iter().enumerate() {
        client
            .enqueue(
                &NewJob::new("noop", json!({ "p": p, "i": i }))
                    .queue(Q)
                    .fairness_key("a")
                    .priority(p),
            )
            .await
            .unwrap();
    }
    client
        .enqueue(
            &NewJob::new("noop", json!({ "p": 10 }))
                .queue(Q)
                .fairness_key("b")
                .priority(10),
        )
        .await
        .unwrap();
    let mut order = Vec::new();
    for _ in 0..4 {
        let jobs = claim_some(&db.pool, 1).await;
        assert_eq!(jobs.len(), 1);
        order.push((jobs[0].fairness_key.clone().unwrap(), jobs[0].priority));
    }
    assert_eq!(
        order,
        [
            ("a".to_string(), -1),
            ("b".to_string(), 10),
            ("a".to_string(), 0),
            ("a".to_string(), 5)
        ],
        "a's best job first, then b's turn despite its low priority, then the rest of a in priority order"
    );
}

#[sqlx::test(migrations = false)]
async fn a_key_of_weight_two_gets_twice_the_claims(po: PgPoolOptions, co: PgConnectOptions) {
    let db = TestDb::new(po, co).await;
    fair_queue(&db, None).await;
    fairness::set_key(&db.pool, Q, "paid", Some(2.0), None)
        .await
        .unwrap();
    enqueue_for(&db, "noop", "paid", 50).await;
    enqueue_for(&db, "noop", "free", 50).await;
    let mut order = Vec::new();
    for _ in 0..30 {
        order.extend(keys(&claim_some(&db.pool, 1).await));
    }
    let paid = order.iter().filter(|k| *k == "paid").count();
    assert!(
        (19..=21).contains(&paid),
        "paid got {paid} of 30: {order:?}"
    );

    // In batches too.
    let batch = keys(&claim_some(&db.pool, 12).await);
    let paid = batch.iter().filter(|k| *k == "paid").count();
    assert!((7..=9).contains(&paid), "paid got {paid} of 12: {batch:?}");
}

#[sqlx::test(migrations = false)]
async fn a_key_with_a_huge_backlog_does_not_hold_back_a_newcomer(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    fair_queue(&db, None).await;
    sqlx::query(
        "SELECT genq.enqueue_many(jsonb_agg(jsonb_build_object('kind', 'noop', 'queue', $1,
                'fairness_key', 'heavy', 'payload', jsonb_build_object('i', i))))
           FROM generate_series(1, 20000) i",
    )
    .bind(Q)
    .execute(&db.pool)
    .await
    .unwrap();
    // The heavy key has been served a while.
    for _ in 0..5 {
        assert_eq!(keys(&claim_some(&db.pool, 10).await), vec!["heavy"; 10]);
    }
    enqueue_for(&db, "noop", "newcomer", 1).await;
    let next = claim_some(&db.pool, 1).await;
    assert_eq!(keys(&next), ["newcomer"], "the newcomer goes next");
    assert_eq!(next[0].key_backlog, Some(false), "its share is light");
    let after = claim_some(&db.pool, 3).await;
    assert_eq!(keys(&after), vec!["heavy"; 3]);
    assert!(after.iter().all(|j| j.key_backlog == Some(true)));
    // An idle key that comes back banks no credit: it starts at the queue's clock.
    enqueue_for(&db, "noop", "newcomer", 5).await;
    let mixed = keys(&claim_some(&db.pool, 4).await);
    assert!(
        mixed.iter().filter(|k| *k == "newcomer").count() <= 3,
        "{mixed:?}"
    );
    assert!(mixed.iter().any(|k| k == "heavy"), "{mixed:?}");
}

#[sqlx::test(migrations = false)]
async fn keyless_jobs_of_a_fair_queue_are_taken_first_and_other_queues_ignore_keys(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    fair_queue(&db, None).await;
    enqueue_for(&db, "noop", "a", 3).await;
    let keyless = db
        .enqueue(NewJob::new("noop", json!({})).queue(Q).priority(50))
        .await;
    let first = claim_some(&db.pool, 1).await;
    assert_eq!(first[0].id, keyless);
    assert_eq!(first[0].fairness_key.as_deref(), Some(""));
    assert_eq!(first[0].key_backlog, None);

    // A queue that is not fair: plain (priority, run_at, id) order, keys kept but unused.
    let client = genq::Client::new(db.pool.clone());
    let mut ids = Vec::new();
    for (key, p) in [("a", 3), ("a", 1), ("b", 2)] {
        ids.push(
            client
                .enqueue(
                    &NewJob::new("noop", json!({}))
                        .queue("plain")
                        .fairness_key(key)
                        .priority(p),
                )
                .await
                .unwrap(),
        );
    }
    let plain = genq::queue::claim::claim(
        &db.pool,
        "plain",
        "w",
        3,
        std::time::Duration::from_secs(30),
    )
    .await
    .unwrap();
    assert_eq!(
        plain.iter().map(|j| j.id).collect::<Vec<_>>(),
        [ids[1], ids[2], ids[0]]
    );
    assert!(plain
        .iter()
        .all(|j| j.fairness_key.is_none() && j.key_backlog.is_none()));
    let stored: Option<String> =
        sqlx::query_scalar("SELECT fairness_key FROM genq.jobs WHERE id = $1")
            .bind(ids[0])
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(stored.as_deref(), Some("a"));
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM genq.fair_keys WHERE queue = 'plain'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(rows, 0, "no key bookkeeping for a queue that is not fair");
}
