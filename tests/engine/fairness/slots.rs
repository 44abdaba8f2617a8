//! Per-key and group limits: a key at its limit waits (available, no attempt spent), and
//! its slot comes back on every way a job leaves `running` (success, retry, snooze,
//! discard, cancel, lease rescue) or, when kept, on release; a raised limit takes effect at
//! once.

use std::time::Duration;

use genq::queue::complete::{complete_batch, Completion, Outcome};
use genq::queue::fairness;
use genq::queue::job_control;
use genq::queue::lease::rescue_expired;
use genq::JobState;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::{claim_some, enqueue_for, fair_queue, keys, slots_of, Q};
use crate::common::TestDb;

async fn finish(db: &TestDb, job: &genq::queue::ClaimedJob, outcome: Outcome) {
    let written = complete_batch(
        &db.pool,
        &[Completion {
            id: job.id,
            attempt: job.attempt,
            outcome,
            queue: job.queue.clone(),
            kind: job.kind.clone(),
        }],
    )
    .await
    .unwrap();
    assert_eq!(written, [job.id]);
}

#[sqlx::test(migrations = false)]
async fn a_key_at_its_limit_waits_and_every_way_a_job_ends_frees_its_slot(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    fair_queue(&db, Some(2)).await;
    enqueue_for(&db, "noop", "a", 12).await;
    enqueue_for(&db, "noop", "b", 1).await;

    let first = claim_some(&db.pool, 10).await;
    let mut ks = keys(&first);
    ks.sort();
    assert_eq!(ks, ["a", "a", "b"], "a holds two, its limit");
    assert_eq!(slots_of(&db, "a").await, 2);
    assert!(claim_some(&db.pool, 10).await.is_empty(), "a waits");
    let a_waiting: i64 = sqlx::query_scalar(
        "SELECT min(id) FROM genq.jobs WHERE fairness_key = 'a' AND state = 'available'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let waiting = db.job(a_waiting).await;
    assert_eq!(waiting.state, JobState::Available);
    assert_eq!(waiting.attempt, 0, "waiting spends no attempt");
    assert_eq!(
        waiting.waiting_for.as_deref(),
        Some("key limit: key a has 2 of 2 slots in use")
    );
    let a_jobs: Vec<_> = first
        .iter()
        .filter(|j| j.fairness_key.as_deref() == Some("a"))
        .cloned()
        .collect();

    // Success frees one slot: a gets exactly one more.
    finish(&db, &a_jobs[0], Outcome::Completed).await;
    let next = claim_some(&db.pool, 10).await;
    assert_eq!(keys(&next), ["a"]);
    // A failure that will be retried frees it too.
    finish(
        &db,
        &next[0],
        Outcome::Retry {
            delay: Duration::from_secs(3600),
            message: "boom".into(),
        },
    )
    .await;
    assert_eq!(slots_of(&db, "a").await, 1);
    let next = claim_some(&db.pool, 10).await;
    assert_eq!(keys(&next), ["a"]);
    // A snooze.
    finish(
        &db,
        &next[0],
        Outcome::Snooze {
            delay: Duration::from_secs(3600),
        },
    )
    .await;
    let next = claim_some(&db.pool, 10).await;
    assert_eq!(keys(&next), ["a"]);
    // A discard.
    finish(
        &db,
        &next[0],
        Outcome::Discard {
            message: "permanent".into(),
        },
    )
    .await;
    let next = claim_some(&db.pool, 10).await;
    assert_eq!(keys(&next), ["a"]);
    // An operator's cancel of the running job.
    let (_, from) = job_control::cancel(&db.pool, next[0].id).await.unwrap();
    assert_eq!(from, JobState::Running);
    assert_eq!(slots_of(&db, "a").await, 1);
    let next = claim_some(&db.pool, 10).await;
    assert_eq!(keys(&next), ["a"]);
    assert_eq!(slots_of(&db, "a").await, 2);

    // A lease that expires (its daemon died): the rescue frees the slot.
    sqlx::query("UPDATE genq.jobs SET lease_until = now() - interval '1 second' WHERE id = $1")
        .bind(next[0].id)
        .execute(&db.pool)
        .await
        .unwrap();
    let rescued = rescue_expired(&db.pool, 100).await.unwrap();
    assert_eq!(rescued.len(), 1);
    assert_eq!(slots_of(&db, "a").await, 1);
    assert_eq!(keys(&claim_some(&db.pool, 10).await), ["a"]);
    assert_eq!(slots_of(&db, "a").await, 2, "never more than the limit");
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM genq.fair_slots")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(total, 3, "a's two and b's one; none leaked");
}

#[sqlx::test(migrations = false)]
async fn a_kept_slot_outlives_its_job_until_released_once(po: PgPoolOptions, co: PgConnectOptions) {
    let db = TestDb::new(po, co).await;
    fair_queue(&db, Some(1)).await;
    enqueue_for(&db, "noop", "a", 3).await;
    let job = claim_some(&db.pool, 5).await.remove(0);

    let mut tx = db.pool.begin().await.unwrap();
    let slot = fairness::keep_in(&mut tx, job.id, job.attempt + 1)
        .await
        .unwrap();
    assert_eq!(slot, None, "a stale attempt keeps nothing");
    let slot = fairness::keep_in(&mut tx, job.id, job.attempt)
        .await
        .unwrap()
        .expect("the running attempt keeps its slot");
    genq::queue::complete::complete_in(&mut tx, job.id, job.attempt)
        .await
        .unwrap();
    tx.commit().await.unwrap();

    assert_eq!(db.job(job.id).await.state, JobState::Completed);
    assert_eq!(slots_of(&db, "a").await, 1, "kept past the job's end");
    assert!(
        claim_some(&db.pool, 5).await.is_empty(),
        "a is still at its limit"
    );

    let mut conn = db.pool.acquire().await.unwrap();
    assert!(fairness::release_in(&mut conn, slot).await.unwrap());
    assert!(
        !fairness::release_in(&mut conn, slot).await.unwrap(),
        "a second release frees nothing"
    );
    assert_eq!(slots_of(&db, "a").await, 0);
    assert_eq!(keys(&claim_some(&db.pool, 5).await), ["a"]);
}

#[sqlx::test(migrations = false)]
async fn a_limit_changed_while_work_waits_applies_at_the_next_claim(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    fair_queue(&db, None).await;
    fairness::set_key(&db.pool, Q, "a", None, Some(1))
        .await
        .unwrap();
    enqueue_for(&db, "noop", "a", 6).await;
    assert_eq!(claim_some(&db.pool, 10).await.len(), 1);
    assert!(claim_some(&db.pool, 10).await.is_empty());
    let parked: bool =
        sqlx::query_scalar("SELECT waiting FROM genq.fair_keys WHERE queue = $1 AND key = 'a'")
            .bind(Q)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert!(!parked, "a key at its limit leaves the claim's walk");

    fairness::set_key(&db.pool, Q, "a", None, Some(3))
        .await
        .unwrap();
    assert_eq!(claim_some(&db.pool, 10).await.len(), 2, "raised to 3");
    fairness::set_key(&db.pool, Q, "a", None, Some(1))
        .await
        .unwrap();
    assert!(
        claim_some(&db.pool, 10).await.is_empty(),
        "lowered: nothing new until running work ends"
    );
    assert_eq!(slots_of(&db, "a").await, 3, "running work is not stopped");
}

#[sqlx::test(migrations = false)]
async fn a_group_limit_caps_jobs_of_every_key(po: PgPoolOptions, co: PgConnectOptions) {
    let db = TestDb::new(po, co).await;
    fair_queue(&db, None).await;
    fairness::set_group(&db.pool, "render:x", Some(2))
        .await
        .unwrap();
    let client = genq::Client::new(db.pool.clone());
    let mut ids = Vec::new();
    for key in ["a", "b", "c"] {
        ids.push(
            client
                .enqueue(
                    &genq::NewJob::new("noop", serde_json::json!({}))
                        .queue(Q)
                        .fairness_key(key)
                        .limit_group("render:x"),
                )
                .await
                .unwrap(),
        );
    }
    enqueue_for(&db, "noop", "d", 1).await;
    let got = claim_some(&db.pool, 10).await;
    let mut ks = keys(&got);
    ks.sort();
    assert_eq!(ks, ["a", "b", "d"], "two of the group, and d outside it");
    assert_eq!(
        db.job(ids[2]).await.waiting_for.as_deref(),
        Some("group limit: group render:x has 2 of 2 slots in use")
    );
    let stats = fairness::group_stats(&db.pool).await.unwrap();
    assert_eq!(stats.len(), 1);
    assert_eq!((stats[0].max_active, stats[0].active), (Some(2), 2));
    let a = got
        .iter()
        .find(|j| j.fairness_key.as_deref() == Some("a"))
        .unwrap();
    finish(&db, a, Outcome::Completed).await;
    assert_eq!(keys(&claim_some(&db.pool, 10).await), ["c"]);
}

#[sqlx::test(migrations = false)]
async fn safety_nets_free_slots_whose_owner_is_gone(po: PgPoolOptions, co: PgConnectOptions) {
    let db = TestDb::new(po, co).await;
    fair_queue(&db, Some(1)).await;
    enqueue_for(&db, "noop", "a", 2).await;
    let job = claim_some(&db.pool, 5).await.remove(0);
    // A slot whose job left `running` behind the trigger's back (here: the trigger is
    // bypassed by session_replication_role, as a restore or a manual fix might).
    let mut conn = db.pool.acquire().await.unwrap();
    sqlx::query("SET session_replication_role = replica")
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query("UPDATE genq.jobs SET state = 'completed', finished_at = now() WHERE id = $1")
        .bind(job.id)
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query("SET session_replication_role = origin")
        .execute(&mut *conn)
        .await
        .unwrap();
    // And a kept render slot no generation owns.
    sqlx::query(
        "INSERT INTO genq.fair_slots (queue, key, grp, kept_at) VALUES ('generation', 'u1', 'render:fal', now())",
    )
    .execute(&mut *conn)
    .await
    .unwrap();
    assert!(
        claim_some(&db.pool, 5).await.is_empty(),
        "a still looks busy"
    );

    assert_eq!(fairness::free_orphans(&db.pool).await.unwrap(), 1);
    assert_eq!(fairness::free_orphans(&db.pool).await.unwrap(), 0);
    assert_eq!(
        genq::generation::record::free_unowned_slots(&mut conn)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        keys(&claim_some(&db.pool, 5).await),
        ["a"],
        "a's turn again"
    );
}

#[sqlx::test(migrations = false)]
async fn a_full_group_does_not_stop_the_claim_from_reaching_other_groups(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    fair_queue(&db, None).await;
    fairness::set_group(&db.pool, "render:x", Some(1))
        .await
        .unwrap();
    let client = genq::Client::new(db.pool.clone());
    // Keys a, b and c wait on group x (a gets its one slot); d, served last so far, on y.
    for (key, group) in [("a", "render:x"), ("b", "render:x"), ("c", "render:x")] {
        client
            .enqueue(
                &genq::NewJob::new("noop", serde_json::json!({}))
                    .queue(Q)
                    .fairness_key(key)
                    .limit_group(group),
            )
            .await
            .unwrap();
    }
    assert_eq!(keys(&claim_some(&db.pool, 1).await), ["a"]);
    client
        .enqueue(
            &genq::NewJob::new("noop", serde_json::json!({}))
                .queue(Q)
                .fairness_key("d")
                .limit_group("render:y"),
        )
        .await
        .unwrap();
    // One job wanted: b and c come first in the walk, but their group is full.
    assert_eq!(keys(&claim_some(&db.pool, 1).await), ["d"]);
    assert!(claim_some(&db.pool, 1).await.is_empty());
}
