//! Every statement the pipeline runs on `genq.generations`, each guarded by the state it
//! expects, so two paths racing (a poll and a webhook, a crash and its rescue) cannot both
//! move a generation; and the sweep's queries for generations nothing follows any more.

use sqlx::PgConnection;
use uuid::Uuid;

use super::{ErrorCode, GenerationState};

// Intent is committed before the provider is called: a crash or timeout after this point
// leaves `submitting`, which the next attempt reconciles instead of submitting again.
const MARK_SUBMITTING: &str = r#"
UPDATE genq.generations
   SET state = 'submitting', submitting_since = now(), submit_attempts = submit_attempts + 1,
       updated_at = now()
 WHERE id = $1 AND state IN ('queued', 'submitting') AND cancel_requested_at IS NULL
"#;

// The provider answered with a definitive error: nothing was created, back to queued.
const BACK_TO_QUEUED: &str = r#"
UPDATE genq.generations SET state = 'queued', updated_at = now()
 WHERE id = $1 AND state = 'submitting'
"#;

const MARK_SUBMITTED: &str = r#"
UPDATE genq.generations
   SET state = 'submitted', provider_request_id = $2, provider_meta = $3, submitted_at = now(),
       updated_at = now()
 WHERE id = $1 AND state IN ('queued', 'submitting')
RETURNING cancel_requested_at IS NOT NULL
"#;

const MARK_SUCCEEDED: &str = r#"
UPDATE genq.generations
   SET state = 'succeeded', output = $2, error = NULL, finished_at = now(), updated_at = now()
 WHERE id = $1 AND state IN ('submitting', 'submitted')
RETURNING extract(epoch FROM now() - created_at)::float8
"#;

const MARK_ENDED: &str = r#"
UPDATE genq.generations
   SET state = $2, error = $3, error_code = $4, finished_at = now(), updated_at = now()
 WHERE id = $1 AND state IN ('queued', 'submitting', 'submitted')
RETURNING extract(epoch FROM now() - created_at)::float8
"#;

// What the provider says while it renders, only when it changed (`updated_at` aside), so
// an unchanged poll neither bumps the version nor notifies anyone.
const RECORD_PROGRESS: &str = r#"
UPDATE genq.generations
   SET progress = $2::jsonb || jsonb_build_object('updated_at', now())
 WHERE id = $1 AND state = 'submitted'
   AND (progress - 'updated_at') IS DISTINCT FROM $2::jsonb
"#;

// The render slot the submit job kept: freed when the generation becomes final (a trigger
// on genq.generations, migration 0013), in the transaction that makes it final.
const SET_FAIR_SLOT: &str = r#"
UPDATE genq.generations SET fair_slot_id = $2
 WHERE id = $1 AND state IN ('submitting', 'submitted')
"#;

// Kept render slots no in-flight generation owns (the keeper's transaction always records
// the owner, so only a bypassed trigger or a deleted row leaves one): freed by the sweeper.
const FREE_UNOWNED_SLOTS: &str = r#"
DELETE FROM genq.fair_slots s
 WHERE s.queue = 'generation' AND s.job_id IS NULL
   AND NOT EXISTS (SELECT 1 FROM genq.generations g
                    WHERE g.fair_slot_id = s.id AND g.state IN ('submitting', 'submitted'))
"#;

const ENQUEUE_FOLLOW_UP: &str =
    "SELECT genq.enqueue($1, $2, queue => 'generation', run_at => now() + make_interval(secs => $3), max_attempts => 25, unique_key => $4)";

// Submitted longer ago than the providers keep a request: nothing will ever finish it.
const EXPIRED: &str = r#"
SELECT id FROM genq.generations
 WHERE state = 'submitted' AND submitted_at < now() - make_interval(secs => $1)
 ORDER BY submitted_at LIMIT $2
"#;

// Submitted, unchanged for a while, and no live poll job follows it.
const STRANDED: &str = r#"
SELECT g.id FROM genq.generations g
 WHERE g.state = 'submitted' AND g.submitted_at < now() - make_interval(secs => $1)
   AND NOT EXISTS (SELECT 1 FROM genq.jobs j
                    WHERE j.unique_key = 'generation.poll:' || g.id::text
                      AND j.state IN ('available', 'running', 'retryable'))
 ORDER BY g.submitted_at LIMIT $2
"#;

// Not yet submitted, unchanged for a while, and its submit job is final or gone.
const UNSUBMITTED: &str = r#"
SELECT g.id FROM genq.generations g
 WHERE g.state IN ('queued', 'submitting') AND g.updated_at < now() - make_interval(secs => $1)
   AND NOT EXISTS (SELECT 1 FROM genq.jobs j
                    WHERE j.unique_key = 'generation.submit:' || g.id::text
                      AND j.state IN ('available', 'running', 'retryable'))
 ORDER BY g.updated_at LIMIT $2
"#;

/// Records the intent to submit. False if the generation is no longer submittable (ended,
/// submitted, or its cancellation was requested since it was loaded).
pub async fn mark_submitting(conn: &mut PgConnection, id: Uuid) -> Result<bool, sqlx::Error> {
    Ok(crate::db::query(MARK_SUBMITTING)
        .bind(id)
        .execute(conn)
        .await?
        .rows_affected()
        == 1)
}

/// The provider refused definitively: nothing exists there; submit afresh next time.
pub async fn back_to_queued(conn: &mut PgConnection, id: Uuid) -> Result<(), sqlx::Error> {
    crate::db::query(BACK_TO_QUEUED)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Saves the provider's request id. `None` if someone else already moved the generation,
/// else whether a cancellation was requested meanwhile (read in the same statement, so a
/// cancel that arrived during the submit call is never lost).
pub async fn mark_submitted(
    conn: &mut PgConnection,
    id: Uuid,
    request_id: &str,
    meta: &serde_json::Value,
) -> Result<Option<bool>, sqlx::Error> {
    crate::db::query_scalar(MARK_SUBMITTED)
        .bind(id)
        .bind(request_id)
        .bind(meta)
        .fetch_optional(conn)
        .await
}

/// Records the render slot the generation holds while in flight. False if the generation
/// is no longer in flight (the caller must not keep the slot then).
pub async fn set_fair_slot(
    conn: &mut PgConnection,
    id: Uuid,
    slot: i64,
) -> Result<bool, sqlx::Error> {
    Ok(crate::db::query(SET_FAIR_SLOT)
        .bind(id)
        .bind(slot)
        .execute(conn)
        .await?
        .rows_affected()
        == 1)
}

/// Frees kept render slots that no in-flight generation owns; returns how many.
pub async fn free_unowned_slots(conn: &mut PgConnection) -> Result<u64, sqlx::Error> {
    Ok(crate::db::query(FREE_UNOWNED_SLOTS)
        .execute(conn)
        .await?
        .rows_affected())
}

/// Marks success with the stored outputs. Returns the end-to-end seconds, or `None` if the
/// generation had already ended (another path settled it).
pub async fn mark_succeeded(
    conn: &mut PgConnection,
    id: Uuid,
    output: &serde_json::Value,
) -> Result<Option<f64>, sqlx::Error> {
    crate::db::query_scalar(MARK_SUCCEEDED)
        .bind(id)
        .bind(output)
        .fetch_optional(conn)
        .await
}

/// Marks failure or cancellation with its machine code and the internal reason. Returns the
/// end-to-end seconds, or `None` if the generation had already ended.
pub async fn mark_ended(
    conn: &mut PgConnection,
    id: Uuid,
    state: GenerationState,
    code: ErrorCode,
    reason: &str,
) -> Result<Option<f64>, sqlx::Error> {
    crate::db::query_scalar(MARK_ENDED)
        .bind(id)
        .bind(state)
        .bind(reason)
        .bind(code.as_str())
        .fetch_optional(conn)
        .await
}

/// Records a submitted generation's progress if it differs from the stored one (its
/// `updated_at` aside). True when it was written (a new version, a notification).
pub async fn record_progress(
    conn: &mut PgConnection,
    id: Uuid,
    progress: &crate::providers::Progress,
) -> Result<bool, sqlx::Error> {
    Ok(crate::db::query(RECORD_PROGRESS)
        .bind(id)
        .bind(progress.to_json())
        .execute(conn)
        .await?
        .rows_affected()
        == 1)
}

/// Enqueues a follow-up job (`generation.poll`, `generation.cancel`) for `id` after `delay_secs`,
/// unique per generation and kind while pending.
pub async fn enqueue_follow_up(
    conn: &mut PgConnection,
    kind: &str,
    id: Uuid,
    delay_secs: f64,
) -> Result<i64, sqlx::Error> {
    crate::db::query_scalar(ENQUEUE_FOLLOW_UP)
        .bind(kind)
        .bind(serde_json::json!({ "generation_id": id }))
        .bind(delay_secs)
        .bind(format!("{kind}:{id}"))
        .fetch_one(conn)
        .await
}

/// Submitted generations older than `older_than_secs` since submission, oldest first, at
/// most `limit` (the sweep fails them: past the providers' retention).
pub async fn expired(
    conn: &mut PgConnection,
    older_than_secs: f64,
    limit: i64,
) -> Result<Vec<Uuid>, sqlx::Error> {
    crate::db::query_scalar(EXPIRED)
        .bind(older_than_secs)
        .bind(limit)
        .fetch_all(conn)
        .await
}

/// Queued or submitting generations unchanged for `stale_secs` whose submit job is final
/// or gone, oldest first, at most `limit` (the sweep fails them).
pub async fn unsubmitted(
    conn: &mut PgConnection,
    stale_secs: f64,
    limit: i64,
) -> Result<Vec<Uuid>, sqlx::Error> {
    crate::db::query_scalar(UNSUBMITTED)
        .bind(stale_secs)
        .bind(limit)
        .fetch_all(conn)
        .await
}

/// Submitted generations older than `stale_secs` with no live poll job, oldest first, at
/// most `limit` (the sweep polls them again).
pub async fn stranded(
    conn: &mut PgConnection,
    stale_secs: f64,
    limit: i64,
) -> Result<Vec<Uuid>, sqlx::Error> {
    crate::db::query_scalar(STRANDED)
        .bind(stale_secs)
        .bind(limit)
        .fetch_all(conn)
        .await
}

/// The user's generations that have not reached a final state.
const UNFINISHED_OF_USER: &str = "SELECT id FROM genq.generations
  WHERE user_id = $1 AND state NOT IN ('succeeded', 'failed', 'cancelled')";

/// The ids of `user`'s generations not yet final (an erasure cancels them first).
pub async fn unfinished_of_user(
    conn: &mut PgConnection,
    user: &str,
) -> Result<Vec<Uuid>, sqlx::Error> {
    crate::db::query_scalar(UNFINISHED_OF_USER)
        .bind(user)
        .fetch_all(conn)
        .await
}
