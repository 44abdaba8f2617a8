//! The Generations page's queries: generations by user, state, provider and model, newest
//! first (keyset on `(created_at, id)` through `generations_created_idx`, or the user index
//! when a user is given), and for one generation the ledger rows and webhook events that
//! touched it. The row itself is loaded by [`crate::generation::load`]; cancelling goes
//! through [`crate::credits::cancel_generation`], the backend's own path.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::generation::GenerationState;

const PAGE: &str = r#"
SELECT id, user_id, provider, model, state, cost, provider_request_id, created_at, finished_at,
       scrubbed_at IS NOT NULL AS scrubbed
  FROM genq.generations
 WHERE (created_at, id) < ($1, $2)
   AND ($3::text IS NULL OR user_id = $3)
   AND ($4::genq.generation_state IS NULL OR state = $4)
   AND ($5::text IS NULL OR provider = $5)
   AND ($6::text IS NULL OR model = $6)
 ORDER BY created_at DESC, id DESC
 LIMIT $7
"#;

const LEDGER: &str = r#"
SELECT id, kind::text AS kind, amount, note, created_at
  FROM genq.ledger WHERE generation_id = $1 ORDER BY id
"#;

const WEBHOOKS: &str = r#"
SELECT id, provider, dedupe_key, received_at, request_id, orphan, job_id, processed_at,
       octet_length(body) AS body_bytes
  FROM genq.webhook_events WHERE generation_id = $1 ORDER BY id
"#;

/// What the operator filters on.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GenerationFilter {
    /// Exact user id.
    pub user: Option<String>,
    /// Exact state.
    pub state: Option<GenerationState>,
    /// Exact provider.
    pub provider: Option<String>,
    /// Exact model.
    pub model: Option<String>,
}

/// One line of the list (no prompt: user data stays on the detail page).
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct GenerationLine {
    /// Id.
    pub id: Uuid,
    /// User.
    pub user_id: String,
    /// Provider.
    pub provider: String,
    /// Model.
    pub model: String,
    /// State.
    pub state: GenerationState,
    /// Credits held.
    pub cost: i64,
    /// The provider's request id.
    pub provider_request_id: Option<String>,
    /// Enqueue time.
    pub created_at: DateTime<Utc>,
    /// Final time.
    pub finished_at: Option<DateTime<Utc>>,
    /// Whether its input and output were scrubbed by retention.
    pub scrubbed: bool,
}

/// A ledger row of one generation.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct LedgerLine {
    /// Id.
    pub id: i64,
    /// hold, capture or release.
    pub kind: String,
    /// Credits.
    pub amount: i64,
    /// Why.
    pub note: Option<String>,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// A webhook event that named one generation.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
pub struct WebhookLine {
    /// Id.
    pub id: i64,
    /// Provider.
    pub provider: String,
    /// Dedupe key.
    pub dedupe_key: String,
    /// When received.
    pub received_at: DateTime<Utc>,
    /// The provider's request id it named.
    pub request_id: Option<String>,
    /// Whether no generation matched.
    pub orphan: bool,
    /// Its reconciliation job.
    pub job_id: Option<i64>,
    /// When the job acted on it.
    pub processed_at: Option<DateTime<Utc>>,
    /// Size of the kept body (0 once scrubbed).
    pub body_bytes: Option<i32>,
}

/// Where a page starts: below this `(created_at, id)`.
pub type Cursor = (DateTime<Utc>, Uuid);

/// A page of generations matching `filter`, newest first, below `before`.
pub async fn page(
    pool: &PgPool,
    filter: &GenerationFilter,
    before: Option<Cursor>,
    limit: i64,
) -> Result<Vec<GenerationLine>, sqlx::Error> {
    // Far enough ahead for any row, well inside what Postgres and chrono both encode.
    let end = DateTime::parse_from_rfc3339("9999-12-31T00:00:00Z")
        .expect("a valid constant")
        .with_timezone(&Utc);
    let (at, id) = before.unwrap_or((end, Uuid::max()));
    crate::db::query_as(PAGE)
        .bind(at)
        .bind(id)
        .bind(filter.user.as_deref())
        .bind(filter.state)
        .bind(filter.provider.as_deref())
        .bind(filter.model.as_deref())
        .bind(limit)
        .fetch_all(pool)
        .await
}

/// The ledger rows of one generation.
pub async fn ledger(pool: &PgPool, id: Uuid) -> Result<Vec<LedgerLine>, sqlx::Error> {
    crate::db::query_as(LEDGER).bind(id).fetch_all(pool).await
}

/// The webhook events that named one generation.
pub async fn webhooks(pool: &PgPool, id: Uuid) -> Result<Vec<WebhookLine>, sqlx::Error> {
    crate::db::query_as(WEBHOOKS).bind(id).fetch_all(pool).await
}

const SCRUBBED: &str = "SELECT scrubbed_at IS NOT NULL FROM genq.generations WHERE id = $1";

/// Whether retention scrubbed the generation's input and output.
pub async fn is_scrubbed(pool: &PgPool, id: Uuid) -> Result<bool, sqlx::Error> {
    Ok(crate::db::query_scalar(SCRUBBED)
        .bind(id)
        .fetch_optional(pool)
        .await?
        .unwrap_or(false))
}
