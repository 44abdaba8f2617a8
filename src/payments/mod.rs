//! Payments through Plisio: the state changes its callbacks and polls cause on
//! `genq.payments` (`migrations/0006_payments.sql`), every statement on that table, and a
//! typed [`PaymentStatus`]. [`plisio`] verifies callbacks and asks Plisio's API; [`poll`]
//! holds the `payments.poll` job's bookkeeping (which payments are due, what a poll leaves).
//!
//! - `completed` grants the invoice's credits once (ledger idempotency key
//!   `plisio:<txn_id>`, in the transaction that records the status);
//! - `mismatch` (paid another amount) moves the payment to `review` and counts it;
//! - `new`/`pending` are recorded as `pending`; `expired`, `cancelled`, `cancelled
//!   duplicate` (as `cancelled`) and `error` are recorded; a completed payment is never
//!   moved back.

pub mod config;
pub mod plisio;
pub mod poll;

pub use plisio::{plisio_hash, plisio_signed_bytes, plisio_verify};

use serde_json::Value;
use sqlx::PgConnection;

use crate::credits::CreditError;

const LOCK: &str =
    "SELECT user_id, credits, status FROM genq.payments WHERE txn_id = $1 FOR UPDATE";

// The status, its history entry (Plisio's own status) and the amounts Plisio reported.
const SET_STATUS: &str = "
UPDATE genq.payments
   SET status = $2, history = history || jsonb_build_array(jsonb_build_object(
           'status', $3::text, 'at', now())),
       amount = coalesce($4, amount), currency = coalesce($5, currency),
       source_amount = coalesce($6, source_amount),
       source_currency = coalesce($7, source_currency), updated_at = now()
 WHERE txn_id = $1";

const MARK_GRANTED: &str = "UPDATE genq.payments SET granted_at = now() WHERE txn_id = $1";

const EXISTS: &str = "SELECT EXISTS (SELECT 1 FROM genq.payments WHERE txn_id = $1)";

/// Whether a payment with this `txn_id` was recorded (`genq.record_invoice`).
pub async fn exists(conn: &mut PgConnection, txn_id: &str) -> Result<bool, sqlx::Error> {
    crate::db::query_scalar(EXISTS)
        .bind(txn_id)
        .fetch_one(conn)
        .await
}

/// What a callback did to its payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The payment does not exist (no `genq.record_invoice`).
    Unknown,
    /// Status recorded (`status` is the payment's new status); `granted` credits if any.
    Recorded {
        /// The payment's status now.
        status: PaymentStatus,
        /// Credits granted by this callback (only the first `completed`).
        granted: i64,
    },
}

/// A payment's status in `genq.payments.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentStatus {
    /// Recorded by `genq.record_invoice`, no callback yet.
    New,
    /// Plisio `new`/`pending` (and any status we do not know): waiting for the payer.
    Pending,
    /// Paid: the invoice's credits are granted (once).
    Completed,
    /// Plisio `mismatch` (another amount was paid): for a human to look at.
    Review,
    /// Plisio `expired`.
    Expired,
    /// Plisio `cancelled` or `cancelled duplicate`.
    Cancelled,
    /// Plisio `error`.
    Error,
}

impl PaymentStatus {
    /// Our status for a Plisio status.
    pub fn from_plisio(plisio: &str) -> Self {
        match plisio {
            "completed" => Self::Completed,
            "mismatch" => Self::Review,
            "expired" => Self::Expired,
            "cancelled" | "cancelled duplicate" => Self::Cancelled,
            "error" => Self::Error,
            _ => Self::Pending,
        }
    }

    /// The database spelling (also the `status` label of `genq_payments_total`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::New => "new",
            Self::Pending => "pending",
            Self::Completed => "completed",
            Self::Review => "review",
            Self::Expired => "expired",
            Self::Cancelled => "cancelled",
            Self::Error => "error",
        }
    }
}

/// Applies a verified callback in the caller's transaction. Fails with the credit API's
/// error: a refused grant (e.g. its key reused for another amount) is not a database fault.
pub async fn apply(
    conn: &mut PgConnection,
    txn_id: &str,
    plisio_status: &str,
    body: &Value,
) -> Result<Applied, CreditError> {
    let row: Option<(String, i64, String)> = crate::db::query_as(LOCK)
        .bind(txn_id)
        .fetch_optional(&mut *conn)
        .await?;
    let Some((user_id, credits, current)) = row else {
        return Ok(Applied::Unknown);
    };
    let completed = current == PaymentStatus::Completed.as_str();
    // A completed payment stays completed (a late `pending` or `expired` changes nothing).
    let new_status = if completed {
        PaymentStatus::Completed
    } else {
        PaymentStatus::from_plisio(plisio_status)
    };
    let text = |k: &str| {
        body.get(k)
            .map(|v| v.as_str().map_or(v.to_string(), str::to_string))
    };
    crate::db::query(SET_STATUS)
        .bind(txn_id)
        .bind(new_status.as_str())
        .bind(plisio_status)
        .bind(text("amount"))
        .bind(text("currency"))
        .bind(text("source_amount"))
        .bind(text("source_currency"))
        .execute(&mut *conn)
        .await?;
    let mut granted = 0;
    if new_status == PaymentStatus::Completed && !completed {
        crate::credits::grant(&mut *conn, &user_id, credits, &format!("plisio:{txn_id}")).await?;
        crate::db::query(MARK_GRANTED)
            .bind(txn_id)
            .execute(&mut *conn)
            .await?;
        granted = credits;
    }
    Ok(Applied::Recorded {
        status: new_status,
        granted,
    })
}

/// Applies a Plisio status (from a verified callback or a poll) in the caller's
/// transaction, with its metrics and log: the one path both take. Returns `accepted` or
/// `orphan` (no such payment).
pub async fn record(
    conn: &mut PgConnection,
    txn_id: &str,
    plisio_status: &str,
    body: &Value,
) -> Result<&'static str, CreditError> {
    Ok(match apply(conn, txn_id, plisio_status, body).await? {
        Applied::Unknown => "orphan",
        Applied::Recorded { status, granted } => {
            metrics::counter!(crate::metrics::PAYMENTS, "status" => status.as_str()).increment(1);
            if granted > 0 {
                metrics::counter!(crate::metrics::CREDITS_GRANTED).increment(granted as u64);
            }
            if status == PaymentStatus::Review {
                tracing::warn!(%txn_id, "Plisio payment mismatch: moved to review");
            }
            "accepted"
        }
    })
}
