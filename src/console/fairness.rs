//! The Fairness page's queries (issue 16 over issue 13's tables, docs/fairness.md): per
//! queue its fair switch, default key limit, keys waiting and slots in use; per limit
//! group its limit and use; and a bounded list of keys with waiting work, each with its
//! weight, limit, slots in use and whether that limit holds it back. A key at its limit
//! leaves the claim's walk (`waiting` false), so the list also looks at keys holding
//! slots. Every lookup goes through an index of migration 0013 and every list is bounded.

use sqlx::PgPool;

const QUEUES: &str = r#"
SELECT q.name, q.fair, q.key_max_active,
       (SELECT count(*) FROM genq.fair_keys k WHERE k.queue = q.name AND k.waiting) AS keys_waiting,
       (SELECT count(*) FROM genq.fair_slots s WHERE s.queue = q.name) AS slots
  FROM genq.queues q
 ORDER BY q.name
 LIMIT $1
"#;
const GROUPS: &str = r#"
SELECT g.name, g.max_active,
       (SELECT count(*) FROM genq.fair_slots s WHERE s.grp = g.name) AS active
  FROM genq.limit_groups g
 ORDER BY g.name
 LIMIT $1
"#;
/// Candidates: per fair queue the first `$1` waiting keys by virtual time
/// (`fair_keys_waiting_idx`) and the keys holding slots (`fair_slots_key_idx`, at most
/// 10,000 slots read per queue); then each one's slots and due backlog (`jobs_fair_idx`,
/// counted up to 10,000).
const KEYS: &str = r#"
WITH fq AS (
  SELECT name, key_max_active FROM genq.queues WHERE fair ORDER BY name LIMIT 100
), cand AS (
  SELECT fq.name AS queue, w.key FROM fq CROSS JOIN LATERAL (
    SELECT k.key FROM genq.fair_keys k
     WHERE k.queue = fq.name AND k.waiting ORDER BY k.vtime, k.key LIMIT $1) w
  UNION
  SELECT fq.name, h.key FROM fq CROSS JOIN LATERAL (
    SELECT a.key FROM (SELECT s.key FROM genq.fair_slots s
                        WHERE s.queue = fq.name AND s.key <> '' LIMIT 10000) a
     GROUP BY a.key LIMIT $1) h
)
SELECT c.queue, c.key, k.weight, k.max_active,
       coalesce(k.max_active, fq.key_max_active) AS key_limit,
       k.vtime, k.waiting, sl.n AS slots, bl.n AS backlog,
       coalesce(sl.n >= coalesce(k.max_active, fq.key_max_active), false) AS at_limit
  FROM cand c
  JOIN fq ON fq.name = c.queue
  JOIN genq.fair_keys k ON k.queue = c.queue AND k.key = c.key
  CROSS JOIN LATERAL (
    SELECT count(*) AS n FROM genq.fair_slots s WHERE s.queue = c.queue AND s.key = c.key) sl
  CROSS JOIN LATERAL (
    SELECT count(*) AS n FROM (
      SELECT 1 FROM genq.jobs j
       WHERE j.queue = c.queue AND j.fairness_key = c.key
         AND j.state IN ('available', 'retryable') AND j.run_at <= now()
       LIMIT 10000) x) bl
 WHERE k.waiting OR bl.n > 0
 ORDER BY c.queue, k.vtime, c.key
 LIMIT $1
"#;

/// One queue's fairness settings and use.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct QueueLine {
    /// Queue.
    pub name: String,
    /// Claimed fairly across keys.
    pub fair: bool,
    /// Default per-key limit (`None`: none).
    pub key_max_active: Option<i32>,
    /// Keys in the claim's walk.
    pub keys_waiting: i64,
    /// Slots in use (running and kept).
    pub slots: i64,
}

/// One limit group and its use.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct GroupLine {
    /// Group.
    pub name: String,
    /// Its limit (`None`: none).
    pub max_active: Option<i32>,
    /// Slots in use.
    pub active: i64,
}

/// One key with waiting work.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeyLine {
    /// Queue.
    pub queue: String,
    /// Fairness key.
    pub key: String,
    /// Share relative to other keys.
    pub weight: f32,
    /// The key's own limit (`None`: the queue's default).
    pub max_active: Option<i32>,
    /// The limit that applies (`None`: none).
    pub key_limit: Option<i32>,
    /// Virtual time (least served first).
    pub vtime: f64,
    /// In the claim's walk.
    pub waiting: bool,
    /// Slots in use.
    pub slots: i64,
    /// Due jobs (counted up to 10,000).
    pub backlog: i64,
    /// Holds as many slots as its limit allows: held back.
    pub at_limit: bool,
}

/// Queues by name (at most `limit`).
pub async fn queues(pool: &PgPool, limit: i64) -> Result<Vec<QueueLine>, sqlx::Error> {
    crate::db::query_as(QUEUES)
        .bind(limit)
        .fetch_all(pool)
        .await
}

/// Limit groups by name (at most `limit`).
pub async fn groups(pool: &PgPool, limit: i64) -> Result<Vec<GroupLine>, sqlx::Error> {
    crate::db::query_as(GROUPS)
        .bind(limit)
        .fetch_all(pool)
        .await
}

/// Keys with waiting work, by queue then virtual time (at most `limit`).
pub async fn keys(pool: &PgPool, limit: i64) -> Result<Vec<KeyLine>, sqlx::Error> {
    crate::db::query_as(KEYS).bind(limit).fetch_all(pool).await
}
