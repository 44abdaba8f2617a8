//! The Supabase project's public keys (ES256/RS256), fetched from its JWKS URL through the
//! guarded outbound client, kept for `jwks_ttl`, and fetched again early when a token names
//! a `kid` we do not know (a key rotation) — at most once per `jwks_refetch_after`, so a
//! stream of forged tokens with random `kid`s cannot make us hammer the JWKS host.

use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm};
use jsonwebtoken::{Algorithm, DecodingKey};
use tokio::sync::Mutex;

use crate::outbound::{self, Guarded};

/// One usable public key.
pub(crate) struct PublicKey {
    pub kid: Option<String>,
    pub alg: Algorithm,
    pub key: DecodingKey,
}

pub(crate) type Keys = Arc<Vec<PublicKey>>;

/// The cached key set.
pub(crate) struct JwksKeys {
    url: url::Url,
    ttl: Duration,
    refetch_after: Duration,
    http: Guarded,
    cached: Mutex<Option<(Instant, Keys)>>,
}

impl JwksKeys {
    pub(crate) fn new(
        url: &str,
        ttl: Duration,
        refetch_after: Duration,
        http: Guarded,
    ) -> anyhow::Result<Self> {
        let url = url::Url::parse(url)
            .map_err(|e| anyhow::anyhow!("events.supabase_jwks_url is not a URL: {e}"))?;
        Ok(Self {
            url,
            ttl,
            refetch_after,
            http,
            cached: Mutex::new(None),
        })
    }

    /// Keys for a token with `alg` and `kid`: from the cache, or fetched when the cache is
    /// stale or (rate-limited) knows no such `kid`. A failed fetch keeps the old keys.
    pub(crate) async fn find(&self, alg: Algorithm, kid: Option<&str>) -> Result<Keys, String> {
        let keys = self.keys(false).await?;
        if matching(&keys, alg, kid).next().is_some() {
            return Ok(keys);
        }
        self.keys(true).await
    }

    async fn keys(&self, force: bool) -> Result<Keys, String> {
        let mut guard = self.cached.lock().await;
        if let Some((at, keys)) = guard.as_ref() {
            let limit = if force { self.refetch_after } else { self.ttl };
            if at.elapsed() < limit {
                return Ok(keys.clone());
            }
        }
        match self.fetch().await {
            Ok(keys) => {
                let keys = Arc::new(keys);
                *guard = Some((Instant::now(), keys.clone()));
                Ok(keys)
            }
            Err(err) => match guard.as_mut() {
                Some((at, keys)) => {
                    tracing::warn!(error = %err, "Supabase JWKS fetch failed; using the cached keys");
                    // Wait `refetch_after` before trying again, whatever the TTL says.
                    *at = Instant::now() - self.ttl.saturating_sub(self.refetch_after);
                    Ok(keys.clone())
                }
                None => Err(err),
            },
        }
    }

    async fn fetch(&self) -> Result<Vec<PublicKey>, String> {
        let what = "Supabase JWKS (events.supabase_jwks_url)";
        let reply = self
            .http
            .get(&self.url)
            .await
            .map_err(|e| format!("{what}: {e}"))?;
        if !reply.status().is_success() {
            return Err(format!("{what}: HTTP {}", reply.status()));
        }
        let body = outbound::read_capped(reply, outbound::body::SMALL_BODY_LIMIT)
            .await
            .map_err(|e| format!("{what}: {e}"))?;
        let body: serde_json::Value =
            serde_json::from_slice(&body).map_err(|e| format!("{what}: not JSON: {e}"))?;
        let keys: Vec<PublicKey> = body["keys"]
            .as_array()
            .map(|keys| keys.iter().filter_map(usable).collect())
            .unwrap_or_default();
        if keys.is_empty() {
            return Err(format!("{what}: no ES256 or RS256 key"));
        }
        Ok(keys)
    }
}

/// The keys of `keys` that may verify a token with `alg` (and `kid`, when it names one).
pub(crate) fn matching<'a>(
    keys: &'a [PublicKey],
    alg: Algorithm,
    kid: Option<&'a str>,
) -> impl Iterator<Item = &'a PublicKey> + 'a {
    keys.iter()
        .filter(move |k| k.alg == alg && (kid.is_none() || k.kid.as_deref() == kid))
}

/// A JWK we accept: an EC P-256 key (ES256) or an RSA key (RS256); anything else (an HMAC
/// secret published by mistake, other curves, other algorithms) is skipped.
fn usable(value: &serde_json::Value) -> Option<PublicKey> {
    let jwk: Jwk = serde_json::from_value(value.clone()).ok()?;
    let alg = match (&jwk.algorithm, jwk.common.key_algorithm) {
        (AlgorithmParameters::EllipticCurve(ec), None | Some(KeyAlgorithm::ES256))
            if ec.curve == EllipticCurve::P256 =>
        {
            Algorithm::ES256
        }
        (AlgorithmParameters::RSA(_), None | Some(KeyAlgorithm::RS256)) => Algorithm::RS256,
        _ => return None,
    };
    let key = DecodingKey::from_jwk(&jwk).ok()?;
    Some(PublicKey {
        kid: jwk.common.key_id.clone(),
        alg,
        key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_es256_and_rs256_keys_are_usable() {
        let ec = serde_json::json!({"kty": "EC", "crv": "P-256", "kid": "a",
            "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU",
            "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"});
        let k = usable(&ec).expect("EC P-256 key");
        assert_eq!(k.alg, Algorithm::ES256);
        assert_eq!(k.kid.as_deref(), Some("a"));
        let hmac = serde_json::json!({"kty": "oct", "k": "c2VjcmV0", "kid": "h"});
        assert!(usable(&hmac).is_none());
        let mut es384 = ec.clone();
        es384["alg"] = "ES384".into();
        assert!(usable(&es384).is_none());
        assert!(usable(&serde_json::json!({"kty": "nonsense"})).is_none());
    }
}
