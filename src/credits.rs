//! Credits: holds, captures and releases recorded in an append-only ledger.
//!
//! A generation costs credits, but what it costs is only owed if it succeeds. So
//! [`enqueue_generation`] *holds* the cost (available → held) in the same transaction that
//! creates the generation and its `generation.submit` job; the pipeline later either
//! *captures* the hold (held → spent) in the transaction that records success, or
//! *releases* it (held → available) on failure or cancellation. Every movement is one row of
//! `genq.ledger`, which is never edited, and a generation has at most one hold, one capture
//! and one release (a unique index), so a retried job or a duplicate webhook can never debit
//! twice. `genq.accounts` holds the balance the ledger implies and is locked by every
//! operation, so concurrent calls for one user serialise and can never overdraw.
//!
//! The rules live in SQL functions (`migrations/0003_credits.sql`), so the product's
//! backend (TypeScript, plain SQL) and genq share one implementation; this module wraps
//! them for Rust, with each statement in a named constant. Every function takes a
//! `&mut PgConnection`: a pooled connection, or a transaction (`&mut tx`) to join it.
//! `docs/credits.md` describes the SQL API, the roles, and the invariants
//! [`check_ledger`] audits.

use serde::{Deserialize, Serialize};
use sqlx::postgres::PgDatabaseError;
use sqlx::PgConnection;
use uuid::Uuid;

pub use crate::generation::{load, Generation, GenerationState};

/// SQLSTATE of genq's "insufficient credits" error, raised by `genq.enqueue_generation`.
pub const INSUFFICIENT_CREDITS: &str = "GQ402";
/// SQLSTATE of invalid arguments to the credit functions (`invalid_parameter_value`).
const INVALID_PARAMETER: &str = "22023";
/// SQLSTATE of an unknown generation (`no_data_found`).
const NOT_FOUND: &str = "P0002";

/// `genq.grant_credits`: adds credits once per idempotency key; returns the new balance.
const GRANT: &str = "SELECT genq.grant_credits($1, $2, $3)";
/// `genq.credit_balance`: always one row (zeros for an unknown user).
const BALANCE: &str = "SELECT available, held FROM genq.credit_balance($1)";
/// `genq.enqueue_generation`: hold + generation row + submit job, in the caller's transaction.
const ENQUEUE_GENERATION: &str = "SELECT genq.enqueue_generation($1, $2, $3, $4, $5, $6)";
/// `genq.capture_hold`: spends a generation's hold; false if already captured.
const CAPTURE: &str = "SELECT genq.capture_hold($1)";
/// `genq.release_hold`: returns a generation's hold; false if already released.
const RELEASE: &str = "SELECT genq.release_hold($1, $2)";
/// `genq.cancel_generation`: cancels as far as the database can; returns the resulting state.
const CANCEL: &str = "SELECT genq.cancel_generation($1)";
/// `genq.check_ledger`: one row per violated invariant.
const CHECK_LEDGER: &str = "SELECT invariant, detail FROM genq.check_ledger()";

/// A user's balance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Balance {
    /// Credits the user can spend now.
    pub available: i64,
    /// Credits held by generations that have not finished.
    pub held: i64,
}

/// A generation to enqueue with [`enqueue_generation`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewGeneration {
    /// The product's user id, opaque text (e.g. a Supabase auth uuid).
    pub user_id: String,
    /// `fal`, `byteplus` or `replicate`.
    pub provider: String,
    /// The provider's model (or endpoint) id.
    pub model: String,
    /// The model input, sent to the provider as is.
    pub input: serde_json::Value,
    /// Credits held now and captured on success (zero allowed).
    pub cost: i64,
    /// The caller's key for this request, unique per user: a repeated call with it returns
    /// the first call's generation and holds nothing more.
    pub idempotency_key: String,
}

/// A violated ledger invariant, as reported by [`check_ledger`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
pub struct Violation {
    /// Which invariant, e.g. `balance_mismatch` or `capture_and_release`.
    pub invariant: String,
    /// What was found, naming the generation or account.
    pub detail: String,
}

/// Errors of the credit API that a caller can act on.
#[derive(Debug, thiserror::Error)]
pub enum CreditError {
    /// The user's available balance does not cover the cost (SQLSTATE `GQ402`). Nothing
    /// was written, but the transaction is aborted: roll it back (or use a savepoint).
    #[error("insufficient credits: needed {needed}, available {available}")]
    InsufficientCredits {
        /// The generation's cost.
        needed: i64,
        /// What the user had available.
        available: i64,
    },
    /// The user is over a quota of their plan (SQLSTATE `GQ429`, see [`crate::plans`]):
    /// nothing was written; the transaction is aborted as for `InsufficientCredits`.
    #[error("over the {limit} quota: {current} of at most {max}")]
    QuotaExceeded {
        /// Which limit: `max_queued` or `per_minute`.
        limit: String,
        /// The limit.
        max: i64,
        /// The user's count when refused.
        current: i64,
    },
    /// An argument was refused (SQLSTATE 22023): the message says which and why.
    #[error("{0}")]
    InvalidInput(String),
    /// No generation with this id.
    #[error("generation {0} not found")]
    NotFound(Uuid),
    /// Anything else from the database.
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

impl CreditError {
    /// Maps the SQLSTATEs the credit functions raise to variants; `id` names the
    /// generation for `NotFound`.
    pub(crate) fn from_sqlx(err: sqlx::Error, id: Option<Uuid>) -> Self {
        let sqlx::Error::Database(db) = &err else {
            return Self::Database(err);
        };
        match (db.code().as_deref(), id) {
            (Some(INSUFFICIENT_CREDITS), _) => {
                let detail = db
                    .try_downcast_ref::<PgDatabaseError>()
                    .and_then(PgDatabaseError::detail);
                match parse_insufficient(detail, db.message()) {
                    Some((needed, available)) => Self::InsufficientCredits { needed, available },
                    None => Self::Database(err),
                }
            }
            (Some(crate::plans::QUOTA_EXCEEDED), _) => {
                #[derive(Deserialize)]
                struct Detail {
                    limit: String,
                    max: i64,
                    current: i64,
                }
                match db
                    .try_downcast_ref::<PgDatabaseError>()
                    .and_then(PgDatabaseError::detail)
                    .and_then(|d| serde_json::from_str::<Detail>(d).ok())
                {
                    Some(d) => Self::QuotaExceeded {
                        limit: d.limit,
                        max: d.max,
                        current: d.current,
                    },
                    None => Self::Database(err),
                }
            }
            (Some(INVALID_PARAMETER), _) => Self::InvalidInput(db.message().to_owned()),
            (Some(NOT_FOUND), Some(id)) => Self::NotFound(id),
            _ => Self::Database(err),
        }
    }
}

/// Reads (needed, available) from the GQ402 error: from its DETAIL (JSON), else its message.
fn parse_insufficient(detail: Option<&str>, message: &str) -> Option<(i64, i64)> {
    #[derive(Deserialize)]
    struct Detail {
        needed: i64,
        available: i64,
    }
    if let Some(d) = detail.and_then(|d| serde_json::from_str::<Detail>(d).ok()) {
        return Some((d.needed, d.available));
    }
    // "insufficient credits: needed 30, available 10"
    let rest = message.split_once("needed ")?.1;
    let (needed, rest) = rest.split_once(',')?;
    let available = rest.trim().strip_prefix("available ")?;
    Some((needed.trim().parse().ok()?, available.trim().parse().ok()?))
}

/// Grants `amount` credits to `user_id`, once per `idempotency_key` (use the payment's id).
/// Returns the user's available balance afterwards. Repeating a grant with the same key,
/// user and amount grants nothing and returns the current balance; reusing a key for
/// another user or amount, a non-positive amount or an empty key is
/// [`CreditError::InvalidInput`].
pub async fn grant(
    conn: &mut PgConnection,
    user_id: &str,
    amount: i64,
    idempotency_key: &str,
) -> Result<i64, CreditError> {
    crate::db::query_scalar(GRANT)
        .bind(user_id)
        .bind(amount)
        .bind(idempotency_key)
        .fetch_one(conn)
        .await
        .map_err(|e| CreditError::from_sqlx(e, None))
}

/// A user's balance (zeros for a user genq has never seen).
pub async fn balance(conn: &mut PgConnection, user_id: &str) -> Result<Balance, sqlx::Error> {
    crate::db::query_as(BALANCE)
        .bind(user_id)
        .fetch_one(conn)
        .await
}

/// Holds the generation's cost and creates it with its `generation.submit` job (queue
/// `generation`, unique key `generation.submit:<id>`), on the caller's connection or
/// transaction: if that rolls back, none of it happened. Returns the generation's id; a
/// repeated call with the same user and idempotency key returns the first call's id and
/// holds nothing more. Fails with [`CreditError::InsufficientCredits`] (nothing written,
/// but the transaction is aborted) or [`CreditError::InvalidInput`].
pub async fn enqueue_generation(
    conn: &mut PgConnection,
    generation: &NewGeneration,
) -> Result<Uuid, CreditError> {
    crate::db::query_scalar(ENQUEUE_GENERATION)
        .bind(&generation.user_id)
        .bind(&generation.provider)
        .bind(&generation.model)
        .bind(&generation.input)
        .bind(generation.cost)
        .bind(&generation.idempotency_key)
        .fetch_one(conn)
        .await
        .map_err(|e| CreditError::from_sqlx(e, None))
}

/// Captures (spends) the generation's hold. Call it inside the transaction that marks the
/// generation succeeded and completes its job; it does not change the generation's state.
/// Returns true if this call captured, false if the hold was already captured. Errors
/// (the transaction is then aborted): SQLSTATE 55000 if the hold was released or there is
/// none, P0002 for an unknown generation.
pub async fn capture(conn: &mut PgConnection, generation_id: Uuid) -> Result<bool, sqlx::Error> {
    crate::db::query_scalar(CAPTURE)
        .bind(generation_id)
        .fetch_one(conn)
        .await
}

/// Releases the generation's hold back to the user, recording `reason` in the ledger. Call
/// it inside the transaction that marks the generation failed or cancelled; it does not
/// change the generation's state. Returns true if this call released, false if already
/// released. Errors: SQLSTATE 55000 if the hold was captured or there is none, P0002 for an
/// unknown generation.
pub async fn release(
    conn: &mut PgConnection,
    generation_id: Uuid,
    reason: &str,
) -> Result<bool, sqlx::Error> {
    crate::db::query_scalar(RELEASE)
        .bind(generation_id)
        .bind(reason)
        .fetch_one(conn)
        .await
}

/// Cancels a generation as far as the database can, and returns its resulting state:
/// `Cancelled` if it had not been sent to a provider (hold released, submit job
/// cancelled); its unchanged state if it is in flight (a `generation.cancel` job is
/// enqueued, or, while its submit job runs, `cancel_requested_at` is set for that job to
/// see) or already final.
pub async fn cancel_generation(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<GenerationState, CreditError> {
    crate::db::query_scalar(CANCEL)
        .bind(id)
        .fetch_one(conn)
        .await
        .map_err(|e| CreditError::from_sqlx(e, Some(id)))
}

/// Audits the ledger: one [`Violation`] per broken invariant, none when healthy. Reads
/// every ledger and account row: for monitoring and incidents, not hot paths.
pub async fn check_ledger(conn: &mut PgConnection) -> Result<Vec<Violation>, sqlx::Error> {
    crate::db::query_as(CHECK_LEDGER).fetch_all(conn).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insufficient_credits_are_read_from_detail_or_message() {
        assert_eq!(
            parse_insufficient(Some(r#"{"needed": 30, "available": 10}"#), "x"),
            Some((30, 10))
        );
        assert_eq!(
            parse_insufficient(None, "insufficient credits: needed 30, available 10"),
            Some((30, 10))
        );
        assert_eq!(parse_insufficient(Some("garbage"), "garbage"), None);
    }
}
