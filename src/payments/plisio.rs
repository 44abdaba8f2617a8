//! Plisio: verification of its callbacks (`verify_hash`) and its operations API, which the
//! `payments.poll` job asks about payments whose callback never came.
//!
//! Plisio takes its key only in the query string, so the request URL is a credential: it
//! is never formatted into an error or a log line (errors are built without the URL, see
//! [`crate::outbound::errors`]), and the key is held as a [`Secret`].

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde_json::{Map, Value};
use sha1::Sha1;

use crate::outbound::{self, Secret};

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

/// A client of Plisio's operations API (HTTP through [`crate::outbound`]).
pub struct PlisioClient {
    base_url: String,
    api_key: Secret,
    http: reqwest::Client,
}

impl PlisioClient {
    /// Against `base_url` (e.g. `https://api.plisio.net/api/v1`) with Plisio's secret key.
    pub fn new(base_url: &str, api_key: Secret) -> anyhow::Result<Self> {
        Ok(Self {
            base_url: base_url.trim_end_matches('/').to_string(),
            api_key,
            http: outbound::client::api(Some(Duration::from_secs(30)))?,
        })
    }

    /// Plisio's status of an operation, with its data. `None`: Plisio answered that it
    /// has no such operation (an error answer other than the ones below). An error answer
    /// with HTTP 401, 403, 429 or 5xx says nothing about the operation (a wrong key, a
    /// limit, an outage) and is an `Err`, as is a failed request: the poll gives up on
    /// payments Plisio does not know, and must not give up on all of them because its key
    /// was wrong for a week.
    pub async fn fetch(&self, txn_id: &str) -> Result<Option<(String, Value)>, String> {
        let url = format!("{}/operations/{}", self.base_url, urlencoding(txn_id));
        let reply = self
            .http
            .get(&url)
            .query(&[("api_key", self.api_key.expose())])
            .send()
            .await
            .map_err(|e| {
                format!(
                    "Plisio operations {txn_id}: {}",
                    outbound::errors::describe(e)
                )
            })?;
        let status = reply.status();
        let body = outbound::read_capped(reply, outbound::body::SMALL_BODY_LIMIT)
            .await
            .map_err(|e| format!("Plisio operations {txn_id}: HTTP {status}: {e}"))?;
        let body: Value = serde_json::from_slice(&body).map_err(|e| {
            format!("Plisio operations {txn_id}: HTTP {status}: the answer is not JSON ({e})")
        })?;
        if body["status"] != "success" {
            if status.is_server_error() || matches!(status.as_u16(), 401 | 403 | 429) {
                // Plisio's message is left out: it may echo the request.
                return Err(format!(
                    "Plisio operations {txn_id}: HTTP {status}: error code {}",
                    body["data"]["code"]
                ));
            }
            tracing::warn!(%txn_id, %status, body = %body["data"], "Plisio operations: error");
            return Ok(None);
        }
        let data = body["data"].clone();
        Ok(data["status"]
            .as_str()
            .map(|s| (s.to_string(), data.clone())))
    }
}

fn urlencoding(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
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
