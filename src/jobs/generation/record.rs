//! Every statement the pipeline runs on `genq.generations`, each guarded by the state it
//! expects, so two paths racing (a poll and a webhook, a crash and its rescue) cannot both
//! move a generation.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::credits::GenerationState;

const LOAD: &str = r#"
SELECT id, user_id, provider, model, input, cost, state, provider_request_id, provider_meta,
       submit_attempts, submitting_since, submitted_at, cancel_requested_at, created_at
  FROM genq.generations WHERE id = $1
"#;

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

/// The columns the pipeline reads.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct GenerationRow {
    /// Id.
    pub id: Uuid,
    /// Owner (never sent to providers).
    pub user_id: String,
    /// Provider dialect.
    pub provider: String,
    /// Model id.
    pub model: String,
    /// Model input.
    pub input: serde_json::Value,
    /// Credits held.
    pub cost: i64,
    /// State.
    pub state: GenerationState,
    /// The provider's request id, once submitted.
    pub provider_request_id: Option<String>,
    /// Provider-specific URLs and ids.
    pub provider_meta: serde_json::Value,
    /// Submit calls started.
    pub submit_attempts: i32,
    /// When the last submit call started.
    pub submitting_since: Option<DateTime<Utc>>,
    /// When the provider accepted it.
    pub submitted_at: Option<DateTime<Utc>>,
    /// Set when the user asked to cancel.
    pub cancel_requested_at: Option<DateTime<Utc>>,
    /// Enqueue time.
    pub created_at: DateTime<Utc>,
}

/// Loads a generation; `None` if it does not exist (e.g. erased).
pub async fn load(conn: &mut PgConnection, id: Uuid) -> Result<Option<GenerationRow>, sqlx::Error> {
    sqlx::query_as(LOAD).bind(id).fetch_optional(conn).await
}

/// Records the intent to submit. False if the generation is no longer submittable (ended,
/// submitted, or its cancellation was requested since it was loaded).
pub async fn mark_submitting(conn: &mut PgConnection, id: Uuid) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query(MARK_SUBMITTING)
        .bind(id)
        .execute(conn)
        .await?
        .rows_affected()
        == 1)
}

/// The provider refused definitively: nothing exists there; submit afresh next time.
pub async fn back_to_queued(conn: &mut PgConnection, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query(BACK_TO_QUEUED).bind(id).execute(conn).await?;
    Ok(())
}

/// Saves the provider's request id. False if someone else already moved the generation.
pub async fn mark_submitted(
    conn: &mut PgConnection,
    id: Uuid,
    request_id: &str,
    meta: &serde_json::Value,
) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query(MARK_SUBMITTED)
        .bind(id)
        .bind(request_id)
        .bind(meta)
        .execute(conn)
        .await?
        .rows_affected()
        == 1)
}

/// Marks success with the stored outputs. Returns the end-to-end seconds, or `None` if the
/// generation had already ended (another path settled it).
pub async fn mark_succeeded(
    conn: &mut PgConnection,
    id: Uuid,
    output: &serde_json::Value,
) -> Result<Option<f64>, sqlx::Error> {
    sqlx::query_scalar(MARK_SUCCEEDED)
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
    sqlx::query_scalar(MARK_ENDED)
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
    sqlx::query_scalar(ENQUEUE_FOLLOW_UP)
        .bind(kind)
        .bind(serde_json::json!({ "generation_id": id }))
        .bind(delay_secs)
        .bind(format!("{kind}:{id}"))
        .fetch_one(conn)
        .await
}
