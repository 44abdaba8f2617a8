//! Payments through Plisio: verification of its callbacks (`verify_hash`) and the state
//! changes they cause on `genq.payments` (`migrations/0006_payments.sql`).
//!
//! - `completed` grants the invoice's credits once (ledger idempotency key
//!   `plisio:<txn_id>`, in the transaction that records the status);
//! - `mismatch` (paid another amount) moves the payment to `review` and counts it;
//! - `new`/`pending` are recorded as `pending`; `expired`, `cancelled`, `cancelled
//!   duplicate` (as `cancelled`) and `error` are recorded; a completed payment is never
//!   moved back.

pub mod config;

use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha1::Sha1;
use sqlx::PgConnection;

/// Whether `body` (a `json=true` callback) carries a valid `verify_hash`: HMAC-SHA1 (hex)
/// under `secret` of the body without `verify_hash`, serialised compactly with its keys in
/// the received order (serde_json `preserve_order`) and its numbers as received
/// (`arbitrary_precision`). Compared in constant time.
pub fn plisio_verify(secret: &[u8], body: &[u8]) -> bool {
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(body) else {
        return false;
    };
    let Some(hash) = map.get("verify_hash").and_then(Value::as_str) else {
        return false;
    };
    let Ok(hash) = hex::decode(hash) else {
        return false;
    };
    let mut mac = Hmac::<Sha1>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(&plisio_signed_bytes(&map));
    mac.verify_slice(&hash).is_ok()
}

/// The bytes Plisio signs: the object without `verify_hash`, compact, keys in order.
pub fn plisio_signed_bytes(map: &Map<String, Value>) -> Vec<u8> {
    let rest: Map<String, Value> = map
        .iter()
        .filter(|(k, _)| k.as_str() != "verify_hash")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    serde_json::to_vec(&Value::Object(rest)).expect("a JSON value serialises")
}

/// The hex `verify_hash` of `map` under `secret` (tests, the fake).
pub fn plisio_hash(secret: &[u8], map: &Map<String, Value>) -> String {
    let mut mac = Hmac::<Sha1>::new_from_slice(secret).expect("HMAC takes keys of any length");
    mac.update(&plisio_signed_bytes(map));
    hex::encode(mac.finalize().into_bytes())
}

/// What a callback did to its payment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The payment does not exist (no `genq.record_invoice`).
    Unknown,
    /// Status recorded (`status` is the payment's new status); `granted` credits if any.
    Recorded {
        /// The payment's status now.
        status: &'static str,
        /// Credits granted by this callback (only the first `completed`).
        granted: i64,
    },
}

/// Our status for a Plisio status.
pub fn map_status(plisio: &str) -> &'static str {
    match plisio {
        "completed" => "completed",
        "mismatch" => "review",
        "expired" => "expired",
        "cancelled" | "cancelled duplicate" => "cancelled",
        "error" => "error",
        _ => "pending",
    }
}

/// Applies a verified callback in the caller's transaction.
pub async fn apply(
    conn: &mut PgConnection,
    txn_id: &str,
    plisio_status: &str,
    body: &Value,
) -> Result<Applied, sqlx::Error> {
    let row: Option<(String, i64, String)> = crate::db::query_as(
        "SELECT user_id, credits, status FROM genq.payments WHERE txn_id = $1 FOR UPDATE",
    )
    .bind(txn_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((user_id, credits, current)) = row else {
        return Ok(Applied::Unknown);
    };
    let status = map_status(plisio_status);
    // A completed payment stays completed (a late `pending` or `expired` changes nothing).
    let new_status = if current == "completed" {
        "completed"
    } else {
        status
    };
    let text = |k: &str| {
        body.get(k)
            .map(|v| v.as_str().map_or(v.to_string(), str::to_string))
    };
    crate::db::query(
        "UPDATE genq.payments
            SET status = $2, history = history || jsonb_build_array(jsonb_build_object(
                    'status', $3::text, 'at', now())),
                amount = coalesce($4, amount), currency = coalesce($5, currency),
                source_amount = coalesce($6, source_amount),
                source_currency = coalesce($7, source_currency), updated_at = now()
          WHERE txn_id = $1",
    )
    .bind(txn_id)
    .bind(new_status)
    .bind(plisio_status)
    .bind(text("amount"))
    .bind(text("currency"))
    .bind(text("source_amount"))
    .bind(text("source_currency"))
    .execute(&mut *conn)
    .await?;
    let mut granted = 0;
    if new_status == "completed" && current != "completed" {
        crate::credits::grant(&mut *conn, &user_id, credits, &format!("plisio:{txn_id}"))
            .await
            .map_err(|e| match e {
                crate::credits::CreditError::Database(e) => e,
                other => sqlx::Error::Protocol(other.to_string()),
            })?;
        crate::db::query("UPDATE genq.payments SET granted_at = now() WHERE txn_id = $1")
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
) -> Result<&'static str, sqlx::Error> {
    Ok(match apply(conn, txn_id, plisio_status, body).await? {
        Applied::Unknown => "orphan",
        Applied::Recorded { status, granted } => {
            metrics::counter!(crate::metrics::PAYMENTS, "status" => status).increment(1);
            if granted > 0 {
                metrics::counter!(crate::metrics::CREDITS_GRANTED).increment(granted as u64);
            }
            if status == "review" {
                tracing::warn!(%txn_id, "Plisio payment mismatch: moved to review");
            }
            "accepted"
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verify_hash_uses_received_key_order_and_raw_numbers() {
        let signed = r#"{"txn_id":"t1","status":"completed","amount":"0.00120","source_amount":10.50,"order_number":"o1"}"#;
        let mut mac = Hmac::<Sha1>::new_from_slice(b"secret").unwrap();
        mac.update(signed.as_bytes());
        let hash = hex::encode(mac.finalize().into_bytes());
        // Pretty-printed, verify_hash in the middle: the same bytes are signed.
        let body = format!(
            "{{\n  \"txn_id\": \"t1\",\n  \"status\": \"completed\",\n  \"verify_hash\": \"{hash}\",\n  \"amount\": \"0.00120\",\n  \"source_amount\": 10.50,\n  \"order_number\": \"o1\"\n}}"
        );
        assert!(plisio_verify(b"secret", body.as_bytes()));
        assert!(!plisio_verify(b"other", body.as_bytes()));
        let tampered = body.replace("10.50", "10.51");
        assert!(!plisio_verify(b"secret", tampered.as_bytes()));
        assert!(!plisio_verify(b"secret", b"not json"));
        assert!(!plisio_verify(b"secret", br#"{"txn_id":"t1"}"#));
    }
}
