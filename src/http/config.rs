//! `[http]`, `[admin]` and `[webhooks]`: the HTTP edge's listeners, the admin token and the
//! verification of inbound callbacks.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[http]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// Bind address of the internal listener (everything). Defaults to `127.0.0.1:9800`.
    pub bind: String,
    /// Bind address of the public listener, which serves only `/webhooks/*`. Defaults to
    /// empty: no public listener (webhooks are served on `bind`).
    pub public_bind: String,
}

/// `[webhooks]`: verification of inbound provider callbacks. Secrets never go in the file:
/// they come from the environment variables named here.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    /// fal's JWKS. Defaults to `https://rest.alpha.fal.ai/.well-known/jwks.json`.
    pub fal_jwks_url: String,
    /// How long fetched fal keys are trusted. Defaults to 24 h.
    #[serde(with = "humantime_serde")]
    pub fal_jwks_ttl: Duration,
    /// Least time between two fetches forced by a signature no cached key verifies.
    /// Defaults to 30 s (a forged request cannot make us hammer fal).
    #[serde(with = "humantime_serde")]
    pub fal_jwks_refetch_after: Duration,
    /// The fal user id callbacks must carry (`X-Fal-Webhook-User-Id`). Empty: fal
    /// callbacks are refused (503).
    pub fal_user_id: String,
    /// Environment variable holding Replicate's Standard Webhooks secret (`whsec_...`).
    /// Defaults to `REPLICATE_WEBHOOK_SECRET`.
    pub replicate_secret_env: String,
    /// Environment variable holding the key of the per-generation BytePlus callback tokens.
    /// Defaults to `GENQ_BYTEPLUS_WEBHOOK_SECRET`.
    pub byteplus_secret_env: String,
    /// Environment variable holding Plisio's secret key (`verify_hash`). Defaults to
    /// `PLISIO_SECRET_KEY`.
    pub plisio_secret_env: String,
    /// Largest accepted clock difference of signed timestamps. Defaults to 300 s.
    #[serde(with = "humantime_serde")]
    pub tolerance: Duration,
    /// Largest accepted body; larger ones get 413. Defaults to 1 MiB.
    pub max_body_bytes: usize,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            fal_jwks_url: "https://rest.alpha.fal.ai/.well-known/jwks.json".into(),
            fal_jwks_ttl: Duration::from_secs(24 * 3600),
            fal_jwks_refetch_after: Duration::from_secs(30),
            fal_user_id: String::new(),
            replicate_secret_env: "REPLICATE_WEBHOOK_SECRET".into(),
            byteplus_secret_env: "GENQ_BYTEPLUS_WEBHOOK_SECRET".into(),
            plisio_secret_env: "PLISIO_SECRET_KEY".into(),
            tolerance: Duration::from_secs(300),
            max_body_bytes: 1024 * 1024,
        }
    }
}

impl WebhooksConfig {
    /// Replicate's secret, from its environment variable (unset or empty: none).
    pub fn replicate_secret(&self) -> Option<String> {
        secret(&self.replicate_secret_env)
    }

    /// Plisio's secret key, from its environment variable (unset or empty: none).
    pub fn plisio_secret(&self) -> Option<String> {
        secret(&self.plisio_secret_env)
    }

    /// The BytePlus token key, from its environment variable (unset or empty: none).
    pub fn byteplus_secret(&self) -> Option<String> {
        secret(&self.byteplus_secret_env)
    }
}

fn secret(env: &str) -> Option<String> {
    if env.is_empty() {
        return None;
    }
    std::env::var(env).ok().filter(|s| !s.is_empty())
}

/// `[admin]`: the admin API and the operator console. The tokens themselves come from
/// `GENQ_ADMIN_TOKEN` and `GENQ_ADMIN_READONLY_TOKEN`, or from the files named here.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// File holding the admin API bearer token (e.g. a mounted secret). Defaults to none;
    /// with neither the file nor `GENQ_ADMIN_TOKEN`, the admin API is off.
    pub token_file: String,
    /// File holding the console's read-only token (sees every page, may not act). Defaults
    /// to none; `GENQ_ADMIN_READONLY_TOKEN` also sets it.
    pub readonly_token_file: String,
    /// Marks the console's session cookie `Secure` even when the request did not say it
    /// came over TLS (`X-Forwarded-Proto: https`). Defaults to false.
    pub console_secure_cookie: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:9800".into(),
            public_bind: String::new(),
        }
    }
}
