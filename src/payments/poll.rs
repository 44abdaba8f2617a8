//! The `payments.poll` job's statements on `genq.payments` (columns from
//! `migrations/0022_payment_poll_backoff.sql`): which open payments are due, and what a
//! poll leaves behind.
//!
//! Every poll is recorded on its payment whatever Plisio answered, because a poll that
//! changes nothing also leaves `updated_at` alone: ordered by `updated_at` alone, the
//! oldest open payments that never resolve filled every batch and newer ones (a lost
//! callback of a paid invoice among them) were never polled. A recorded poll moves the
//! payment's `next_poll_at` into the future (exponential backoff, capped), so the batch
//! reaches every open payment. These statements write only the poll columns, never
//! `status` or `updated_at`, so a callback applied meanwhile keeps its status.

use std::time::Duration;

use sqlx::PgConnection;

// Open payments unchanged for $1 seconds whose next poll is due within $3 seconds, due
// first, at most $2. `coalesce(next_poll_at, updated_at)` is the key of
// `payments_poll_due_idx`; the bound lets the index scan stop there.
const DUE: &str = r#"
SELECT txn_id FROM genq.payments
 WHERE status IN ('new', 'pending') AND poll_given_up_at IS NULL
   AND coalesce(next_poll_at, updated_at) <= now() + make_interval(secs => $3)
   AND updated_at < now() - make_interval(secs => $1)
 ORDER BY coalesce(next_poll_at, updated_at) LIMIT $2
"#;

// A poll of $1: counted, and the next one after $3 × 2^(polls before this one) seconds,
// at most $4; $2: Plisio knew the operation (its first time is kept).
const RECORD: &str = r#"
UPDATE genq.payments
   SET polls = polls + 1, last_polled_at = now(),
       next_poll_at = now() + make_interval(secs => least($4, $3 * power(2, least(polls, 40)))),
       plisio_seen_at = CASE WHEN $2 THEN coalesce(plisio_seen_at, now()) ELSE plisio_seen_at END
 WHERE txn_id = $1
"#;

// A poll of $1 that Plisio answered "no such operation", for a payment still open that
// Plisio has never known (no poll found it, no callback came: history is empty) and that
// was created more than $2 seconds ago: recorded, and no more polls. Once: only the poll
// that gives up returns a row.
const GIVE_UP_UNKNOWN: &str = r#"
UPDATE genq.payments
   SET polls = polls + 1, last_polled_at = now(), next_poll_at = NULL,
       poll_given_up_at = now()
 WHERE txn_id = $1 AND status IN ('new', 'pending') AND poll_given_up_at IS NULL
   AND plisio_seen_at IS NULL AND history = '[]'::jsonb
   AND created_at < now() - make_interval(secs => $2)
RETURNING true
"#;

/// When a payment is polled again: after `base` (`[payments] poll_interval`) doubled per
/// earlier poll, never later than `max` (`[payments] poll_max_backoff`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Backoff {
    /// The wait after a payment's first poll.
    pub base: Duration,
    /// The longest wait.
    pub max: Duration,
}

/// What a poll found out about the operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Plisio answered with the operation's status.
    Known,
    /// Plisio did not answer with it: no such operation, or the request failed.
    Unknown,
}

/// Open payments unchanged for `unchanged_secs` whose next poll is due, due first (never
/// polled ones from their last change, the others from their next poll time), at most
/// `limit`. A next poll up to `early` ahead counts as due: runs are `poll_interval` apart
/// and a poll is recorded a little after its run began, so a payment due one interval
/// later would otherwise just miss the next run and wait for the one after (with half an
/// interval, each payment is polled at the run nearest its time).
pub async fn due(
    conn: &mut PgConnection,
    unchanged_secs: f64,
    limit: i64,
    early: Duration,
) -> Result<Vec<String>, sqlx::Error> {
    crate::db::query_scalar(DUE)
        .bind(unchanged_secs)
        .bind(limit)
        .bind(early.as_secs_f64())
        .fetch_all(conn)
        .await
}

/// Records a poll of `txn_id` and schedules its next one by `backoff`.
pub async fn record(
    conn: &mut PgConnection,
    txn_id: &str,
    answer: Answer,
    backoff: Backoff,
) -> Result<(), sqlx::Error> {
    crate::db::query(RECORD)
        .bind(txn_id)
        .bind(answer == Answer::Known)
        .bind(backoff.base.as_secs_f64())
        .bind(backoff.max.as_secs_f64())
        .execute(conn)
        .await?;
    Ok(())
}

/// Records a poll that Plisio answered with "no such operation" and stops polling the
/// payment if Plisio never knew it and it was created longer than `after` ago. True when
/// this poll gave up (once per payment); false: still polled, and the caller records the
/// poll with [`record`].
pub async fn give_up_unknown(
    conn: &mut PgConnection,
    txn_id: &str,
    after: Duration,
) -> Result<bool, sqlx::Error> {
    let gave_up: Option<bool> = crate::db::query_scalar(GIVE_UP_UNKNOWN)
        .bind(txn_id)
        .bind(after.as_secs_f64())
        .fetch_optional(conn)
        .await?;
    Ok(gave_up.is_some())
}
