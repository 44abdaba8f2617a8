//! The inbox of verified callbacks, `genq.webhook_events`: every statement on it. A callback
//! is stored once per `(provider, dedupe_key)`; a generation callback enqueues its
//! `generation.reconcile` job in the same transaction (a callback is only a hint: the job
//! asks the provider), a Plisio callback is applied to its payment in that transaction.
//! Callbacks for unknown generations or invoices are kept as orphans. The reconcile job
//! reads the newest request id a callback named and marks callbacks processed.

use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::credits::CreditError;
use crate::generation::record;
use crate::jobs::generation::reconcile;

/// A verified callback.
pub struct Event<'a> {
    /// `fal`, `replicate` or `byteplus`.
    pub provider: &'static str,
    /// What makes a redelivery a duplicate (per provider).
    pub dedupe_key: String,
    /// The generation it is about, if the callback names one.
    pub generation_id: Option<Uuid>,
    /// The provider's request id, if the callback names one.
    pub request_id: Option<String>,
    /// The raw body, as verified.
    pub body: &'a [u8],
}

// A generation callback, an orphan when no such generation exists.
const INSERT_EVENT: &str = r#"
INSERT INTO genq.webhook_events (provider, dedupe_key, generation_id, request_id, orphan, body)
SELECT $1, $2, $3, $4, NOT EXISTS (SELECT 1 FROM genq.generations WHERE id = $3), $5
ON CONFLICT (provider, dedupe_key) DO NOTHING
RETURNING id, orphan
"#;

const SET_JOB: &str = "UPDATE genq.webhook_events SET job_id = $2 WHERE id = $1";

// A Plisio callback; `$4` is `orphan:` for an unknown invoice.
const INSERT_PAYMENT_EVENT: &str = "
INSERT INTO genq.webhook_events (provider, dedupe_key, request_id, orphan, body)
VALUES ('plisio', $4 || $1 || ':' || $2, $1, NOT $5, $3)
ON CONFLICT (provider, dedupe_key) DO NOTHING RETURNING id";

const MARK_EVENT_PROCESSED: &str =
    "UPDATE genq.webhook_events SET processed_at = now() WHERE id = $1";

const LATEST_REQUEST_ID: &str = "
SELECT request_id FROM genq.webhook_events
 WHERE generation_id = $1 AND request_id IS NOT NULL AND NOT orphan
 ORDER BY id DESC LIMIT 1";

const MARK_GENERATION_PROCESSED: &str = "
UPDATE genq.webhook_events SET processed_at = now()
 WHERE generation_id = $1 AND processed_at IS NULL
RETURNING provider, extract(epoch FROM now() - received_at)::float8";

/// Stores a verified generation callback once and, unless it is a duplicate or an orphan
/// (no such generation), enqueues its `generation.reconcile` job, in one transaction.
/// Returns `accepted`, `duplicate` or `orphan`.
pub async fn store_generation_event(
    pool: &PgPool,
    event: &Event<'_>,
) -> Result<&'static str, sqlx::Error> {
    let mut tx = crate::db::begin(pool).await?;
    let inserted: Option<(i64, bool)> = crate::db::query_as(INSERT_EVENT)
        .bind(event.provider)
        .bind(&event.dedupe_key)
        .bind(event.generation_id)
        .bind(&event.request_id)
        .bind(event.body)
        .fetch_optional(&mut *tx)
        .await?;
    let result = match (inserted, event.generation_id) {
        (None, _) => "duplicate",
        (Some((event_id, false)), Some(id)) => {
            let job_id = record::enqueue_follow_up(&mut tx, reconcile::KIND, id, 0.0).await?;
            crate::db::query(SET_JOB)
                .bind(event_id)
                .bind(job_id)
                .execute(&mut *tx)
                .await?;
            "accepted"
        }
        // Stored without a generation of ours to reconcile.
        (Some(_), _) => "orphan",
    };
    tx.commit().await?;
    Ok(result)
}

/// Stores a verified Plisio callback once per `(txn_id, status)` and applies it to its
/// payment in the same transaction (no job: nothing needs fetching). An unknown invoice is
/// kept as an orphan under its own key, so a redelivery after `genq.record_invoice` is
/// applied, not taken for a duplicate. Returns `accepted`, `duplicate` or `orphan`.
pub async fn store_payment_event(
    pool: &PgPool,
    txn_id: &str,
    status: &str,
    body: &Value,
    raw: &[u8],
) -> Result<&'static str, CreditError> {
    let mut tx = crate::db::begin(pool).await?;
    let known: bool = crate::payments::exists(&mut tx, txn_id).await?;
    let prefix = if known { "" } else { "orphan:" };
    let inserted: Option<i64> = crate::db::query_scalar(INSERT_PAYMENT_EVENT)
        .bind(txn_id)
        .bind(status)
        .bind(raw)
        .bind(prefix)
        .bind(known)
        .fetch_optional(&mut *tx)
        .await?;
    if !known {
        tx.commit().await?;
        return Ok("orphan");
    }
    let Some(event_id) = inserted else {
        return Ok("duplicate");
    };
    let result = crate::payments::record(&mut tx, txn_id, status, body).await?;
    crate::db::query(MARK_EVENT_PROCESSED)
        .bind(event_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(result)
}

/// The request id of the newest verified callback for `id` that names one.
pub async fn latest_request_id(pool: &PgPool, id: Uuid) -> Result<Option<String>, sqlx::Error> {
    crate::db::query_scalar(LATEST_REQUEST_ID)
        .bind(id)
        .fetch_optional(pool)
        .await
}

/// Marks the generation's callbacks received so far as acted upon.
pub async fn mark_processed(pool: &PgPool, id: Uuid) -> Result<(), sqlx::Error> {
    let mut conn = pool.acquire().await?;
    mark_processed_in(&mut conn, id).await
}

/// [`mark_processed`] in the caller's transaction, recording each callback's lag.
pub async fn mark_processed_in(conn: &mut PgConnection, id: Uuid) -> Result<(), sqlx::Error> {
    let lags: Vec<(String, f64)> = crate::db::query_as(MARK_GENERATION_PROCESSED)
        .bind(id)
        .fetch_all(conn)
        .await?;
    for (provider, secs) in lags {
        metrics::histogram!(crate::metrics::WEBHOOK_RECONCILE_LAG, "provider" => provider)
            .record(secs);
    }
    Ok(())
}

// Redrive: the event, and whether its generation exists now (an orphan may have arrived
// before its generation was committed).
const REDRIVE_EVENT: &str = r#"
SELECT e.provider, e.generation_id,
       EXISTS (SELECT 1 FROM genq.generations g WHERE g.id = e.generation_id) AS known
  FROM genq.webhook_events e WHERE e.id = $1 FOR UPDATE
"#;

const REDRIVE_SET: &str = r#"
UPDATE genq.webhook_events SET job_id = $2, orphan = false, processed_at = NULL WHERE id = $1
"#;

/// Why a callback cannot be redriven.
#[derive(Debug, thiserror::Error)]
pub enum RedriveError {
    /// No such event.
    #[error("webhook event {0} not found")]
    NotFound(i64),
    /// A Plisio callback, or one naming no existing generation.
    #[error("webhook event {0} cannot be redriven: {1}")]
    NotRedrivable(i64, &'static str),
    /// The database failed.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// Runs a stored generation callback again: enqueues its `generation.reconcile` job (the
/// unique key keeps it to one pending job per generation), points the event at it and marks
/// it unprocessed (and no longer an orphan, if its generation exists now). Returns the job.
pub async fn redrive(pool: &PgPool, event_id: i64) -> Result<i64, RedriveError> {
    let mut tx = crate::db::begin(pool).await?;
    let row: Option<(String, Option<Uuid>, bool)> = crate::db::query_as(REDRIVE_EVENT)
        .bind(event_id)
        .fetch_optional(&mut *tx)
        .await?;
    let (provider, generation, known) = row.ok_or(RedriveError::NotFound(event_id))?;
    if provider == "plisio" {
        return Err(RedriveError::NotRedrivable(
            event_id,
            "payment callbacks are applied when stored; the payments.poll job re-reads open invoices",
        ));
    }
    let Some(id) = generation.filter(|_| known) else {
        return Err(RedriveError::NotRedrivable(
            event_id,
            "it names no existing generation",
        ));
    };
    let job_id = record::enqueue_follow_up(&mut tx, reconcile::KIND, id, 0.0).await?;
    crate::db::query(REDRIVE_SET)
        .bind(event_id)
        .bind(job_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(job_id)
}
