//! The fair claim with many keys (migration 0017): every key is served before any key gets a
//! second turn, a turn is one job in small claims and a quantum of up to 10 jobs in claims
//! of 200 or more, weights hold with the quantum, and slots are taken only where a limit
//! applies, with a limit set later counting the work already running; a queue turned fair
//! with a backlog marks all its keys in one statement (migration 0021).

use std::collections::HashMap;

use genq::queue::fairness;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::{claim_some, enqueue_for, fair_queue, keys, slots_of, Q};
use crate::common::fair_keys::{
    assert_woken_no_earlier_than_the_clock, counting_calls, function_calls, park_behind_and_ahead,
    CLOCK,
};
use crate::common::TestDb;

/// Enqueues `per_key` no-op jobs for each of `keys` keys named `k0..`, interleaved (job `g`
/// is key `k<g % keys>`), in one statement.
async fn enqueue_keys(db: &TestDb, keys: i64, per_key: i64) {
    sqlx::query(
        "SELECT genq.enqueue_many(jsonb_agg(jsonb_build_object(
                    'kind', 'noop', 'queue', $1::text, 'fairness_key', 'k' || (g % $2))))
           FROM generate_series(0, $2 * $3 - 1) g",
    )
    .bind(Q)
    .bind(keys)
    .bind(per_key)
    .execute(&db.pool)
    .await
    .unwrap();
}

fn tally(counts: &mut HashMap<String, usize>, claimed: &[String]) {
    for k in claimed {
        *counts.entry(k.clone()).or_default() += 1;
    }
}

#[sqlx::test(migrations = false)]
async fn with_many_keys_small_claims_serve_every_key_once_before_any_twice(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    fair_queue(&db, None).await;
    enqueue_keys(&db, 120, 5).await;
    let mut counts = HashMap::new();
    // Claims of 50 (a quantum of 1): 120 keys, so the first 120 jobs are one per key.
    for size in [50, 50, 20] {
        let claimed = keys(&claim_some(&db.pool, size).await);
        assert_eq!(claimed.len(), size as usize);
        tally(&mut counts, &claimed);
    }
    assert_eq!(counts.len(), 120, "every key served");
    assert!(counts.values().all(|n| *n == 1), "none twice: {counts:?}");
    let claimed = keys(&claim_some(&db.pool, 50).await);
    tally(&mut counts, &claimed);
    assert!(counts.values().all(|n| *n <= 2));
}

#[sqlx::test(migrations = false)]
async fn with_many_keys_large_claims_serve_a_quantum_per_key_per_turn(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    fair_queue(&db, None).await;
    enqueue_keys(&db, 250, 25).await;
    // Claims of 1000: a quantum of 10, so 100 keys per claim, ten jobs each.
    let mut counts: HashMap<String, usize> = HashMap::new();
    let first = keys(&claim_some(&db.pool, 1000).await);
    assert_eq!(first.len(), 1000);
    tally(&mut counts, &first);
    assert_eq!(counts.len(), 100);
    assert!(counts.values().all(|n| *n == 10), "{counts:?}");
    // 2,500 jobs in all: exactly one turn of ten for each of the 250 keys.
    tally(&mut counts, &keys(&claim_some(&db.pool, 1000).await));
    tally(&mut counts, &keys(&claim_some(&db.pool, 500).await));
    assert_eq!(counts.len(), 250, "every key had its turn");
    assert!(
        counts.values().all(|n| *n == 10),
        "no key had a second turn before every key had its first"
    );
    // The next turns: no key more than one quantum ahead of another.
    for _ in 0..3 {
        tally(&mut counts, &keys(&claim_some(&db.pool, 1000).await));
        let most = counts.values().max().unwrap();
        let least = counts.values().min().unwrap();
        assert!(most - least <= 10, "{least}..{most}");
    }
    // The rest drains (each key ends with 25), and a drained key leaves the walk.
    while !claim_some(&db.pool, 1000).await.is_empty() {}
    let waiting: i64 =
        sqlx::query_scalar("SELECT count(*) FROM genq.fair_keys WHERE queue = $1 AND waiting")
            .bind(Q)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(waiting, 0, "drained keys are parked");
    let running: i64 =
        sqlx::query_scalar("SELECT count(*) FROM genq.jobs WHERE queue = $1 AND state = 'running'")
            .bind(Q)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(running, 250 * 25);
}

#[sqlx::test(migrations = false)]
async fn a_weight_two_key_gets_two_quanta_per_turn_in_large_claims(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    fair_queue(&db, None).await;
    enqueue_keys(&db, 150, 40).await;
    fairness::set_key(&db.pool, Q, "k7", Some(2.0), None)
        .await
        .unwrap();
    let mut counts: HashMap<String, usize> = HashMap::new();
    for _ in 0..4 {
        let claimed = keys(&claim_some(&db.pool, 1000).await);
        assert_eq!(claimed.len(), 1000);
        tally(&mut counts, &claimed);
    }
    let heavy = counts["k7"];
    let light: Vec<usize> = counts
        .iter()
        .filter(|(k, _)| *k != "k7")
        .map(|(_, n)| *n)
        .collect();
    let (least, most) = (*light.iter().min().unwrap(), *light.iter().max().unwrap());
    assert!(
        most - least <= 10,
        "weight-1 keys within a quantum: {least}..{most}"
    );
    assert!(
        heavy >= 2 * least && heavy <= 2 * most,
        "weight 2: {heavy} against {least}..{most}"
    );
}

#[sqlx::test(migrations = false)]
async fn keys_without_a_limit_take_no_slots_and_a_limit_set_later_counts_running_work(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    fair_queue(&db, None).await;
    enqueue_for(&db, "noop", "a", 8).await;
    enqueue_for(&db, "noop", "b", 8).await;
    let first = keys(&claim_some(&db.pool, 10).await);
    assert_eq!(first.len(), 10);
    assert_eq!(slots_of(&db, "a").await, 0, "no limit: no slot");
    assert_eq!(slots_of(&db, "b").await, 0);

    // A key limit set while five of a's jobs run counts them at once.
    fairness::set_key(&db.pool, Q, "a", None, Some(6))
        .await
        .unwrap();
    assert_eq!(slots_of(&db, "a").await, 5, "running work counted");
    assert_eq!(slots_of(&db, "b").await, 0, "other keys untouched");
    let next = keys(&claim_some(&db.pool, 10).await);
    assert_eq!(
        next.iter().filter(|k| *k == "a").count(),
        1,
        "room for one: {next:?}"
    );
    assert_eq!(slots_of(&db, "a").await, 6);

    // A queue default set later counts every key's running work.
    fairness::set_queue(&db.pool, Q, true, Some(5))
        .await
        .unwrap();
    assert_eq!(slots_of(&db, "b").await, 8, "b's eight running jobs");
    assert!(
        claim_some(&db.pool, 10).await.is_empty(),
        "both at their limits"
    );
    // Setting it again adds nothing twice.
    fairness::set_queue(&db.pool, Q, true, Some(5))
        .await
        .unwrap();
    assert_eq!(slots_of(&db, "b").await, 8);
    assert_eq!(slots_of(&db, "a").await, 6);
}

#[sqlx::test(migrations = false)]
async fn a_queue_turned_fair_marks_its_backlog_keys_in_one_statement(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    // The queue was fair once: its clock moved on, one key parked behind it, one ahead.
    fair_queue(&db, None).await;
    park_behind_and_ahead(&db, Q).await;
    fairness::set_queue(&db.pool, Q, false, None).await.unwrap();

    // A backlog built while the queue is plain: nothing is marked, keyless jobs keep NULL.
    let backlog_keys = 1000;
    enqueue_keys(&db, backlog_keys, 2).await;
    enqueue_for(&db, "noop", "parked", 1).await;
    enqueue_for(&db, "noop", "ahead", 1).await;
    sqlx::query("SELECT genq.enqueue_many(jsonb_build_array(jsonb_build_object('kind', 'noop', 'queue', 'fair')))")
        .execute(&db.pool)
        .await
        .unwrap();
    let marked: i64 =
        sqlx::query_scalar("SELECT count(*) FROM genq.fair_keys WHERE queue = 'fair'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(marked, 2, "no key marked while the queue is plain");

    let mut conn = db.pool.acquire().await.unwrap();
    let mut tx = counting_calls(&mut conn).await;
    const COUNTED: [&str; 2] = ["mark_fair_key", "mark_fair_keys"];
    let before = function_calls(&mut tx, &COUNTED).await;
    sqlx::query("SELECT genq.set_queue_fairness('fair', true, NULL)")
        .execute(&mut *tx)
        .await
        .unwrap();
    let after = function_calls(&mut tx, &COUNTED).await;
    assert_eq!(
        (after[0] - before[0], after[1] - before[1]),
        (0, 1),
        "one set-based marking, no call per key"
    );
    tx.commit().await.unwrap();

    let new_keys: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM genq.fair_keys WHERE queue = 'fair' AND key LIKE 'k%' AND waiting AND vtime = $1",
    )
    .bind(CLOCK)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        new_keys, backlog_keys,
        "every key of the backlog waiting, at the queue's clock"
    );
    assert_woken_no_earlier_than_the_clock(&db, Q).await;

    // Claims (small ones: a turn is one job): the keyless job first, then every key once
    // (the one ahead not yet) before any twice.
    assert_eq!(keys(&claim_some(&db.pool, 1).await), vec![String::new()]);
    let round = backlog_keys as usize + 1;
    let mut first = Vec::new();
    while first.len() < round {
        let want = (round - first.len()).min(100) as u32;
        let claimed = keys(&claim_some(&db.pool, want).await);
        assert_eq!(claimed.len(), want as usize, "the backlog is claimable");
        first.extend(claimed);
    }
    let mut distinct = first.clone();
    distinct.sort();
    distinct.dedup();
    assert_eq!(
        distinct.len(),
        first.len(),
        "no key twice in the first round"
    );
    assert!(first.contains(&"parked".to_string()));
    assert!(
        !first.contains(&"ahead".to_string()),
        "the key ahead waits its turn"
    );
}
