//! Every statement the pipeline runs on `genq.generations`, each guarded by the state it
//! expects, so two paths racing (a poll and a webhook, a crash and its rescue) cannot both
//! move a generation.

use sqlx::PgConnection;
use uuid::Uuid;

use crate::credits::GenerationState;
use crate::daemon::JobError;
use crate::providers::ProviderKind;

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
   SET state = $2, error = $3, finished_at = now(), updated_at = now()
 WHERE id = $1 AND state IN ('queued', 'submitting', 'submitted')
RETURNING extract(epoch FROM now() - created_at)::float8
"#;

const ENQUEUE_FOLLOW_UP: &str =
    "SELECT genq.enqueue($1, $2, queue => 'generation', run_at => now() + make_interval(secs => $3), max_attempts => 25, unique_key => $4)";

/// A generation as the pipeline sees it (the row of `genq.generations`).
pub type GenerationRow = crate::credits::Generation;

/// Loads a generation with its provider; `None` if it no longer exists (e.g. erased).
pub async fn load(
    pool: &sqlx::PgPool,
    id: Uuid,
) -> Result<Option<(GenerationRow, ProviderKind)>, JobError> {
    let mut conn = pool.acquire().await?;
    let Some(generation) = crate::credits::load(&mut conn, id).await? else {
        return Ok(None);
    };
    let kind = generation
        .provider
        .parse()
        .map_err(|_| JobError::permanent(format!("unknown provider {:?}", generation.provider)))?;
    Ok(Some((generation, kind)))
}

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

/// Marks failure or cancellation with a reason. Returns the end-to-end seconds, or `None`
/// if the generation had already ended.
pub async fn mark_ended(
    conn: &mut PgConnection,
    id: Uuid,
    state: GenerationState,
    reason: &str,
) -> Result<Option<f64>, sqlx::Error> {
    crate::db::query_scalar(MARK_ENDED)
        .bind(id)
        .bind(state)
        .bind(reason)
        .fetch_optional(conn)
        .await
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
