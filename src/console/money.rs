//! The Credits page's queries: one user's latest ledger rows (through `ledger_user_idx`) and
//! payments (through `payments_user_idx`). The balance comes from `credits::balance`, the
//! audit of the whole ledger from `credits::check_ledger`.

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

const LEDGER: &str = r#"
SELECT id, kind::text AS kind, amount, generation_id, note, created_at
  FROM genq.ledger WHERE user_id = $1 ORDER BY id DESC LIMIT $2
"#;

const PAYMENTS: &str = r#"
SELECT txn_id, order_number, credits, status, amount, currency, granted_at, created_at,
       polls, next_poll_at, poll_given_up_at
  FROM genq.payments WHERE user_id = $1 ORDER BY created_at DESC LIMIT $2
"#;

/// A ledger row of a user.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserLedgerLine {
    /// Id.
    pub id: i64,
    /// grant, hold, capture, release, adjust.
    pub kind: String,
    /// Credits.
    pub amount: i64,
    /// Its generation (hold, capture, release).
    pub generation_id: Option<Uuid>,
    /// Why.
    pub note: Option<String>,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// A payment of a user.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PaymentLine {
    /// Plisio's transaction id.
    pub txn_id: String,
    /// Our order number.
    pub order_number: String,
    /// Credits it grants.
    pub credits: i64,
    /// Its status.
    pub status: String,
    /// Amount paid, as Plisio reported it.
    pub amount: Option<String>,
    /// Currency.
    pub currency: Option<String>,
    /// When the credits were granted.
    pub granted_at: Option<DateTime<Utc>>,
    /// When the invoice was recorded.
    pub created_at: DateTime<Utc>,
    /// Times `payments.poll` asked Plisio about it (migration 0022).
    pub polls: i32,
    /// When it is asked next (NULL: once unchanged for `[payments] poll_after`).
    pub next_poll_at: Option<DateTime<Utc>>,
    /// When polling stopped because Plisio never knew it (decision 56).
    pub poll_given_up_at: Option<DateTime<Utc>>,
}

/// A user's latest `limit` ledger rows, newest first.
pub async fn ledger(
    pool: &PgPool,
    user: &str,
    limit: i64,
) -> Result<Vec<UserLedgerLine>, sqlx::Error> {
    crate::db::query_as(LEDGER)
        .bind(user)
        .bind(limit)
        .fetch_all(pool)
        .await
}

/// A user's latest `limit` payments, newest first.
pub async fn payments(
    pool: &PgPool,
    user: &str,
    limit: i64,
) -> Result<Vec<PaymentLine>, sqlx::Error> {
    crate::db::query_as(PAYMENTS)
        .bind(user)
        .bind(limit)
        .fetch_all(pool)
        .await
}
