//! Fair queues and their limits: the engine's API over migration 0013 (docs/fairness.md).
//!
//! A fair queue is claimed round-robin across fairness keys (`genq.claim_fair`); per-key
//! and group limits are counted in slots (`genq.fair_slots`), freed when their job leaves
//! `running` unless the worker kept the slot for something that outlives the job (the
//! product's in-flight renders). Everything here is product-agnostic: a key is any string
//! (a user, a tenant), a group any shared resource.

use sqlx::{PgConnection, PgPool};

const SET_QUEUE: &str = "SELECT genq.set_queue_fairness($1, $2, $3)";
const SET_GROUP: &str = "SELECT genq.set_limit_group($1, $2)";
const SET_KEY: &str = "SELECT genq.set_fair_key($1, $2, $3, $4)";
const KEEP: &str = "SELECT genq.keep_slot($1, $2)";
const RELEASE: &str = "SELECT genq.release_slot($1)";
/// Slots whose job is no longer running: the trigger on `genq.jobs` frees them as the job
/// leaves `running`, so only a bypassed trigger (a manual delete of a running job) leaves
/// one. Kept slots (job_id NULL) belong to their keeper and are not touched.
const FREE_ORPHANS: &str = r#"
DELETE FROM genq.fair_slots s
 WHERE s.job_id IS NOT NULL
   AND NOT EXISTS (SELECT 1 FROM genq.jobs j WHERE j.id = s.job_id AND j.state = 'running')
"#;
const STATS: &str = r#"
SELECT q.name,
       (SELECT count(*) FROM genq.fair_keys k WHERE k.queue = q.name AND k.waiting) AS keys_waiting,
       coalesce(l.keys_at_limit, 0) AS keys_at_limit,
       coalesce(l.held_back, 0)::bigint AS held_back
  FROM genq.queues q
  LEFT JOIN LATERAL (
    SELECT count(*) AS keys_at_limit, sum(h.n) AS held_back
      FROM (SELECT s.key, count(*) AS n FROM genq.fair_slots s
             WHERE s.queue = q.name AND s.key <> '' GROUP BY s.key) a
      JOIN genq.fair_keys k ON k.queue = q.name AND k.key = a.key
      CROSS JOIN LATERAL (
        SELECT count(*) AS n FROM (
          SELECT 1 FROM genq.jobs j
           WHERE j.queue = q.name AND j.fairness_key = a.key
             AND j.state IN ('available', 'retryable') AND j.run_at <= now()
           LIMIT 10000) c) h
     WHERE a.n >= coalesce(k.max_active, q.key_max_active)
  ) l ON true
 WHERE q.fair
 ORDER BY q.name
"#;
const GROUPS: &str = r#"
SELECT g.name, g.max_active,
       (SELECT count(*) FROM genq.fair_slots s WHERE s.grp = g.name) AS active
  FROM genq.limit_groups g
 ORDER BY g.name
"#;

/// Turns fair claiming on or off for `queue` and sets its default per-key limit (`None`:
/// no limit). Turning it on keys the queue's pending keyless jobs `''` (taken first).
pub async fn set_queue(
    pool: &PgPool,
    queue: &str,
    fair: bool,
    key_max_active: Option<i32>,
) -> Result<(), sqlx::Error> {
    crate::db::query(SET_QUEUE)
        .bind(queue)
        .bind(fair)
        .bind(key_max_active)
        .execute(pool)
        .await?;
    Ok(())
}

/// Sets the limit of a group (`None`: no limit), e.g. a shared account's capacity.
pub async fn set_group(
    pool: &PgPool,
    name: &str,
    max_active: Option<i32>,
) -> Result<(), sqlx::Error> {
    crate::db::query(SET_GROUP)
        .bind(name)
        .bind(max_active)
        .execute(pool)
        .await?;
    Ok(())
}

/// Sets a key's weight (`None`: 1) and limit (`None`: the queue's default).
pub async fn set_key(
    pool: &PgPool,
    queue: &str,
    key: &str,
    weight: Option<f32>,
    max_active: Option<i32>,
) -> Result<(), sqlx::Error> {
    crate::db::query(SET_KEY)
        .bind(queue)
        .bind(key)
        .bind(weight)
        .bind(max_active)
        .execute(pool)
        .await?;
    Ok(())
}

/// The running attempt `(job, attempt)` keeps its slot past the job's end; returns the
/// slot's id (`None`: the job holds no slot, or the attempt no longer owns the job). Call it
/// in the transaction that records the slot's new owner, before completing the job.
pub async fn keep_in(
    conn: &mut PgConnection,
    job: i64,
    attempt: i32,
) -> Result<Option<i64>, sqlx::Error> {
    crate::db::query_scalar(KEEP)
        .bind(job)
        .bind(attempt)
        .fetch_one(conn)
        .await
}

/// Frees a kept slot. True if this call freed it; false if it was already free.
pub async fn release_in(conn: &mut PgConnection, slot: i64) -> Result<bool, sqlx::Error> {
    crate::db::query_scalar(RELEASE)
        .bind(slot)
        .fetch_one(conn)
        .await
}

/// Frees slots held by jobs that are no longer running (the maintenance safety net).
pub async fn free_orphans(pool: &PgPool) -> Result<u64, sqlx::Error> {
    Ok(crate::db::query(FREE_ORPHANS)
        .execute(pool)
        .await?
        .rows_affected())
}

/// Keys and held-back work of one fair queue.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct FairQueueStats {
    /// Queue.
    pub name: String,
    /// Keys with (possibly) claimable work and room, in the claim's walk.
    pub keys_waiting: i64,
    /// Keys holding as many slots as their limit allows.
    pub keys_at_limit: i64,
    /// Due jobs of keys at their limit (counted up to 10,000 per key).
    pub held_back: i64,
}

/// One limit group and its use.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct GroupStats {
    /// Group name.
    pub name: String,
    /// Its limit (`None`: none).
    pub max_active: Option<i32>,
    /// Slots in use.
    pub active: i64,
}

/// Live statistics of every fair queue.
pub async fn queue_stats(pool: &PgPool) -> Result<Vec<FairQueueStats>, sqlx::Error> {
    crate::db::query_as(STATS).fetch_all(pool).await
}

/// Live use of every limit group.
pub async fn group_stats(pool: &PgPool) -> Result<Vec<GroupStats>, sqlx::Error> {
    crate::db::query_as(GROUPS).fetch_all(pool).await
}
