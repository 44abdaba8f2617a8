//! Generations: the record of one requested render (`genq.generations`) and the state it is
//! in. The credit API creates a generation together with its hold
//! ([`crate::credits::enqueue_generation`]); the pipeline (`crate::jobs::generation`) moves
//! it through [`GenerationState`] with the guarded statements of [`record`]. Every
//! statement on `genq.generations` outside the SQL functions and the privacy scrubbing lives
//! here, named, so a reader finds the table's writers in one place.

mod error_code;
pub mod reads;
pub mod record;

pub use error_code::ErrorCode;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

/// One generation row.
const LOAD: &str = r#"
SELECT id, user_id, provider, model, input, cost, idempotency_key, state, provider_request_id,
       provider_meta, submit_attempts, submitting_since, submitted_at, output, error,
       cancel_requested_at, created_at, updated_at, finished_at, progress, version, error_code
  FROM genq.generations WHERE id = $1
"#;

/// Where a generation is in its life (`genq.generation_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[sqlx(type_name = "genq.generation_state", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum GenerationState {
    /// Credits held, waiting for its `generation.submit` job; nothing sent to a provider.
    Queued,
    /// A submit attempt is (or may be) in flight at the provider.
    Submitting,
    /// The provider accepted it (`provider_request_id` is set).
    Submitted,
    /// Final: output stored, hold captured.
    Succeeded,
    /// Final: hold released.
    Failed,
    /// Final: hold released.
    Cancelled,
}

impl GenerationState {
    /// Whether the generation is finished (its hold captured or released).
    pub fn is_final(self) -> bool {
        matches!(self, Self::Succeeded | Self::Failed | Self::Cancelled)
    }

    /// The database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Submitting => "submitting",
            Self::Submitted => "submitted",
            Self::Succeeded => "succeeded",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }
}

impl std::fmt::Display for GenerationState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A row of `genq.generations`.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct Generation {
    /// Id (also in the payload of its jobs).
    pub id: Uuid,
    /// The product's user id.
    pub user_id: String,
    /// `fal`, `byteplus` or `replicate`.
    pub provider: String,
    /// The provider's model id.
    pub model: String,
    /// The model input.
    pub input: serde_json::Value,
    /// Credits held for it.
    pub cost: i64,
    /// The caller's idempotency key.
    pub idempotency_key: String,
    /// Where it is.
    pub state: GenerationState,
    /// The provider's id for the request, once submitted.
    pub provider_request_id: Option<String>,
    /// Provider-specific facts the pipeline keeps (e.g. status and cancel URLs).
    pub provider_meta: serde_json::Value,
    /// Submit attempts started.
    pub submit_attempts: i32,
    /// When the current submit attempt started.
    pub submitting_since: Option<DateTime<Utc>>,
    /// When the provider accepted it.
    pub submitted_at: Option<DateTime<Utc>>,
    /// Where the output was stored, once succeeded.
    pub output: Option<serde_json::Value>,
    /// Why it failed (internal detail: provider codes, our configuration).
    pub error: Option<String>,
    /// When a cancellation was asked for.
    pub cancel_requested_at: Option<DateTime<Utc>>,
    /// Enqueue time.
    pub created_at: DateTime<Utc>,
    /// Last change.
    pub updated_at: DateTime<Utc>,
    /// When it reached a final state.
    pub finished_at: Option<DateTime<Utc>>,
    /// What the provider last said while it renders (`docs/generation.md`).
    pub progress: Option<serde_json::Value>,
    /// Bumped on every change of state or progress (the event id of its streams).
    pub version: i64,
    /// Why it failed or was cancelled, as a machine code ([`ErrorCode`]'s spelling).
    pub error_code: Option<String>,
}

/// Loads one generation, or `None` if there is none with this id.
pub async fn load(conn: &mut PgConnection, id: Uuid) -> Result<Option<Generation>, sqlx::Error> {
    crate::db::query_as(LOAD)
        .bind(id)
        .fetch_optional(conn)
        .await
}
