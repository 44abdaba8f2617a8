//! Account erasure: the SQL behind `genq.request_erasure` and the `privacy.erase` job.
//!
//! Money records outlive the account (payment records are kept 5–7 years), so they are
//! not deleted but de-identified: the user id is replaced by a keyed hash (HMAC-SHA256
//! under `[retention] hash_key_env`). The daemon holds the key, the database never sees
//! it: someone with the key and a user id can find that user's records (an auditor's
//! question), nobody with only the database can reverse them.

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use sqlx::{PgConnection, PgPool};

/// The pseudonym that replaces `user_id` after erasure: `erased:` and the hex HMAC-SHA256
/// of the user id under `key`.
pub fn subject(key: &[u8], user_id: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(user_id.as_bytes());
    format!("erased:{}", hex::encode(mac.finalize().into_bytes()))
}

/// Requests the erasure of `user_id` (`genq.request_erasure`); returns the request id.
pub async fn request(conn: &mut PgConnection, user_id: &str) -> sqlx::Result<i64> {
    crate::db::query_scalar("SELECT genq.request_erasure($1)")
        .bind(user_id)
        .fetch_one(conn)
        .await
}

/// An erasure request.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct ErasureRequest {
    /// Its id.
    pub id: i64,
    /// The user, until the erasure completes (then `None`).
    pub user_id: Option<String>,
    /// The pseudonym the user's records carry after completion.
    pub subject: Option<String>,
    /// When it was requested.
    pub requested_at: DateTime<Utc>,
    /// When it must be complete.
    pub due_at: DateTime<Utc>,
    /// When it completed.
    pub completed_at: Option<DateTime<Utc>>,
    /// What it did (rows per table).
    pub summary: Option<serde_json::Value>,
}

/// Reads request `id`.
pub async fn get(pool: &PgPool, id: i64) -> sqlx::Result<Option<ErasureRequest>> {
    crate::db::query_as(
        "SELECT id, user_id, subject, requested_at, due_at, completed_at, summary
           FROM genq.erasure_requests WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// The user's generations that have not reached a final state.
const UNFINISHED: &str = "SELECT id FROM genq.generations
  WHERE user_id = $1 AND state NOT IN ('succeeded', 'failed', 'cancelled')";

/// Asks every unfinished generation of `user` to cancel (`genq.cancel_generation`): those
/// not yet submitted end at once with their holds released; those at a provider get a
/// `generation.cancel` job. Returns how many are still unfinished.
pub async fn cancel_generations(conn: &mut PgConnection, user: &str) -> sqlx::Result<usize> {
    let ids: Vec<uuid::Uuid> = crate::db::query_scalar(UNFINISHED)
        .bind(user)
        .fetch_all(&mut *conn)
        .await?;
    for id in &ids {
        crate::db::query("SELECT genq.cancel_generation($1)")
            .bind(id)
            .execute(&mut *conn)
            .await?;
    }
    let left: Vec<uuid::Uuid> = crate::db::query_scalar(UNFINISHED)
        .bind(user)
        .fetch_all(&mut *conn)
        .await?;
    Ok(left.len())
}

/// Replaces `user` by `subject` in every kept row (`genq.deidentify_user`) and completes
/// request `id` with what was done. Returns the seconds from request to completion, or
/// `None` if the request was already complete.
pub async fn complete(
    conn: &mut PgConnection,
    id: i64,
    user: &str,
    subject: &str,
    mut summary: serde_json::Value,
) -> sqlx::Result<Option<f64>> {
    let changed: serde_json::Value = crate::db::query_scalar("SELECT genq.deidentify_user($1, $2)")
        .bind(user)
        .bind(subject)
        .fetch_one(&mut *conn)
        .await?;
    summary["deidentified"] = changed;
    crate::db::query_scalar(
        "UPDATE genq.erasure_requests
            SET completed_at = now(), user_id = NULL, subject = $2, summary = $3
          WHERE id = $1 AND completed_at IS NULL
         RETURNING extract(epoch FROM completed_at - requested_at)::float8",
    )
    .bind(id)
    .bind(subject)
    .bind(summary)
    .fetch_optional(conn)
    .await
}

#[cfg(test)]
mod tests {
    #[test]
    fn subject_is_keyed_stable_and_not_the_id() {
        let a = super::subject(b"k1", "user-1");
        assert_eq!(a, super::subject(b"k1", "user-1"));
        assert_ne!(a, super::subject(b"k2", "user-1"));
        assert_ne!(a, super::subject(b"k1", "user-2"));
        assert!(a.starts_with("erased:") && a.len() == 7 + 64, "{a}");
        assert!(!a.contains("user-1"));
    }
}
