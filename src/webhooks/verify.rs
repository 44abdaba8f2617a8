//! Verification of inbound callbacks on their raw bytes, before anything touches the
//! database: the secrets and keys each scheme needs ([`Webhooks`], built once per daemon),
//! fal's JWKS cache (Ed25519 keys fetched through `src/outbound`, kept for a TTL, fetched
//! again on a signature no cached key verifies) and the timestamp tolerance. The signature
//! primitives themselves (fal's message, Standard Webhooks HMAC, BytePlus's callback
//! token) are in [`crate::providers::signing`], which the fake provider signs with too;
//! Plisio's `verify_hash` is in [`crate::payments`].

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::Mutex;

use crate::config::WebhooksConfig;
use crate::outbound;
use crate::providers::signing;

/// Verification material, built once per daemon.
pub struct Webhooks {
    pub(crate) config: WebhooksConfig,
    pub(crate) replicate_secret: Option<String>,
    pub(crate) byteplus_secret: Option<Vec<u8>>,
    pub(crate) plisio_secret: Option<Vec<u8>>,
    pub(crate) jwks: JwksCache,
}

impl Webhooks {
    /// Largest accepted callback body (`webhooks.max_body_bytes`).
    pub fn max_body_bytes(&self) -> usize {
        self.config.max_body_bytes
    }

    /// From `[webhooks]`, secrets read from the environment variables it names.
    pub fn from_config(config: &WebhooksConfig) -> anyhow::Result<Self> {
        Self::with_secrets(
            config,
            config.replicate_secret(),
            config.byteplus_secret().map(String::into_bytes),
        )
        .map(|w| w.with_plisio_secret(config.plisio_secret().map(String::into_bytes)))
    }

    /// Sets Plisio's secret key (`None`: Plisio callbacks are refused).
    pub fn with_plisio_secret(mut self, secret: Option<Vec<u8>>) -> Self {
        self.plisio_secret = secret;
        self
    }

    /// From `[webhooks]` with the secrets given (tests, embedding).
    pub fn with_secrets(
        config: &WebhooksConfig,
        replicate_secret: Option<String>,
        byteplus_secret: Option<Vec<u8>>,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            config: config.clone(),
            replicate_secret,
            byteplus_secret,
            plisio_secret: None,
            jwks: JwksCache::new(config)?,
        })
    }
}

/// fal's public keys, fetched from the JWKS URL and kept for the TTL.
pub(crate) struct JwksCache {
    url: String,
    ttl: Duration,
    refetch_after: Duration,
    http: reqwest::Client,
    keys: Mutex<Option<(Instant, Arc<Vec<String>>)>>,
}

impl JwksCache {
    fn new(config: &WebhooksConfig) -> anyhow::Result<Self> {
        Ok(Self {
            url: config.fal_jwks_url.clone(),
            ttl: config.fal_jwks_ttl,
            refetch_after: config.fal_jwks_refetch_after,
            http: crate::outbound::client::api(Some(Duration::from_secs(10)))?,
            keys: Mutex::new(None),
        })
    }

    /// The cached keys, fetched when missing or older than the TTL (or, with `force`, when
    /// older than `refetch_after`). A failed fetch keeps serving the previous keys.
    async fn keys(&self, force: bool) -> Result<Arc<Vec<String>>, String> {
        let mut guard = self.keys.lock().await;
        if let Some((at, keys)) = guard.as_ref() {
            let age = at.elapsed();
            let fresh = if force {
                age < self.refetch_after
            } else {
                age < self.ttl
            };
            if fresh {
                return Ok(keys.clone());
            }
        }
        match self.fetch().await {
            Ok(keys) => {
                let keys = Arc::new(keys);
                *guard = Some((Instant::now(), keys.clone()));
                Ok(keys)
            }
            Err(err) => match guard.as_ref() {
                Some((_, keys)) => {
                    tracing::warn!(error = %err, "fal JWKS fetch failed; using the cached keys");
                    Ok(keys.clone())
                }
                None => Err(err),
            },
        }
    }

    async fn fetch(&self) -> Result<Vec<String>, String> {
        // The body is read under a cap: the JWKS host must not be able to fill our memory.
        let reply = self
            .http
            .get(&self.url)
            .send()
            .await
            .map_err(|e| format!("fal JWKS {}: {}", self.url, outbound::errors::describe(e)))?;
        if !reply.status().is_success() {
            return Err(format!("fal JWKS {}: HTTP {}", self.url, reply.status()));
        }
        let body = outbound::read_capped(reply, outbound::body::SMALL_BODY_LIMIT)
            .await
            .map_err(|e| format!("fal JWKS {}: {e}", self.url))?;
        let body: Value = serde_json::from_slice(&body)
            .map_err(|e| format!("fal JWKS {}: not JSON: {e}", self.url))?;
        Ok(body["keys"]
            .as_array()
            .map(|keys| {
                keys.iter()
                    .filter_map(|k| k["x"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Whether any key verifies `signature`; on none, fetches once more (a rotation).
    pub(crate) async fn verify(&self, message: &[u8], signature: &str) -> Result<bool, String> {
        let keys = self.keys(false).await?;
        if keys
            .iter()
            .any(|x| signing::fal_verify(x, message, signature))
        {
            return Ok(true);
        }
        let again = self.keys(true).await?;
        if Arc::ptr_eq(&keys, &again) {
            return Ok(false);
        }
        Ok(again
            .iter()
            .any(|x| signing::fal_verify(x, message, signature)))
    }
}

/// Whether a signed Unix timestamp is within the tolerance of now.
pub(crate) fn timely(timestamp: &str, tolerance: Duration) -> bool {
    let Ok(ts) = timestamp.trim().parse::<i64>() else {
        return false;
    };
    let now = chrono::Utc::now().timestamp();
    (now - ts).unsigned_abs() <= tolerance.as_secs()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_within_tolerance() {
        let now = chrono::Utc::now().timestamp();
        let t = Duration::from_secs(300);
        assert!(timely(&now.to_string(), t));
        assert!(timely(&(now - 299).to_string(), t));
        assert!(timely(&(now + 299).to_string(), t));
        assert!(!timely(&(now - 301).to_string(), t));
        assert!(!timely(&(now + 301).to_string(), t));
        assert!(!timely("soon", t));
    }
}
