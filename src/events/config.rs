//! `[events]`: live progress to browsers (Server-Sent Events on the public listener). Off
//! unless a way to verify tokens is configured: a shared HS256 secret, a Supabase project's
//! JWKS, or its legacy HS256 secret. Secrets never go in the file: environment variables or
//! files (mounted secrets) named here hold them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[events]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct EventsConfig {
    /// Environment variable holding the HS256 secret the backend mints tokens with.
    /// Defaults to `GENQ_EVENTS_JWT_SECRET`; it wins over `jwt_secret_file`.
    pub jwt_secret_env: String,
    /// File holding that secret (e.g. a mounted secret). Defaults to none.
    pub jwt_secret_file: String,
    /// Audience backend tokens must carry in `aud`. Defaults to empty: `aud` not checked.
    pub jwt_audience: String,
    /// The Supabase project's JWKS (`https://<ref>.supabase.co/auth/v1/.well-known/jwks.json`),
    /// fetched through the guarded outbound client. Defaults to none.
    pub supabase_jwks_url: String,
    /// Environment variable holding the project's legacy HS256 JWT secret. Defaults to
    /// `SUPABASE_JWT_SECRET`; it wins over `supabase_jwt_secret_file`.
    pub supabase_jwt_secret_env: String,
    /// File holding that legacy secret. Defaults to none.
    pub supabase_jwt_secret_file: String,
    /// How long fetched JWKS keys are trusted. Defaults to 10 min.
    #[serde(with = "humantime_serde")]
    pub jwks_ttl: Duration,
    /// Least time between two fetches forced by a token with an unknown `kid`. Defaults to
    /// 30 s (forged tokens cannot make us hammer the JWKS host).
    #[serde(with = "humantime_serde")]
    pub jwks_refetch_after: Duration,
    /// Browser origins allowed to open streams (exact match, e.g. `https://studio.example.com`).
    /// Defaults to none: no CORS headers, so only same-origin pages can read the streams.
    pub allowed_origins: Vec<String>,
    /// Interval of keep-alive comments on idle streams. Defaults to 15 s.
    #[serde(with = "humantime_serde")]
    pub keepalive: Duration,
    /// Open streams one user may hold on this daemon; more get 429. Defaults to 16.
    pub max_streams_per_user: usize,
    /// Open streams on this daemon; more get 503. Defaults to 20000.
    pub max_streams: usize,
    /// Events buffered for one stream; a stream that falls further behind is closed (the
    /// browser reconnects and resumes). Defaults to 32.
    pub stream_buffer: usize,
    /// Generations replayed on connect to a user stream (those not final, and those changed
    /// since `Last-Event-ID`), newest first. Defaults to 100.
    pub replay_limit: i64,
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            jwt_secret_env: "GENQ_EVENTS_JWT_SECRET".into(),
            jwt_secret_file: String::new(),
            jwt_audience: String::new(),
            supabase_jwks_url: String::new(),
            supabase_jwt_secret_env: "SUPABASE_JWT_SECRET".into(),
            supabase_jwt_secret_file: String::new(),
            jwks_ttl: Duration::from_secs(600),
            jwks_refetch_after: Duration::from_secs(30),
            allowed_origins: Vec::new(),
            keepalive: Duration::from_secs(15),
            max_streams_per_user: 16,
            max_streams: 20_000,
            stream_buffer: 32,
            replay_limit: 100,
        }
    }
}

impl EventsConfig {
    /// The backend's HS256 secret: the environment variable, else the file.
    pub fn jwt_secret(&self) -> anyhow::Result<Option<Vec<u8>>> {
        secret(
            &self.jwt_secret_env,
            &self.jwt_secret_file,
            "events.jwt_secret_file",
        )
    }

    /// The Supabase legacy HS256 secret: the environment variable, else the file.
    pub fn supabase_jwt_secret(&self) -> anyhow::Result<Option<Vec<u8>>> {
        secret(
            &self.supabase_jwt_secret_env,
            &self.supabase_jwt_secret_file,
            "events.supabase_jwt_secret_file",
        )
    }

    /// Checks what serde cannot: origins are exact (`scheme://host[:port]`, no wildcard, no
    /// path) and the limits are positive.
    pub fn validate(&self) -> Result<(), String> {
        for origin in &self.allowed_origins {
            let parsed = url::Url::parse(origin)
                .map_err(|e| format!("events.allowed_origins: {origin:?} is not a URL: {e}"))?;
            let exact = parsed.origin().ascii_serialization();
            if origin.contains('*') || exact != *origin {
                return Err(format!(
                    "events.allowed_origins: {origin:?} must be an exact origin such as {exact:?} (no wildcard, path or trailing slash)"
                ));
            }
        }
        if self.max_streams_per_user == 0 || self.max_streams == 0 || self.stream_buffer == 0 {
            return Err(
                "events.max_streams_per_user, events.max_streams and events.stream_buffer must be at least 1"
                    .into(),
            );
        }
        if self.replay_limit < 1 {
            return Err("events.replay_limit must be at least 1".into());
        }
        Ok(())
    }
}

fn secret(env: &str, file: &str, key: &str) -> anyhow::Result<Option<Vec<u8>>> {
    if !env.is_empty() {
        if let Some(value) = std::env::var(env).ok().filter(|s| !s.trim().is_empty()) {
            return Ok(Some(value.trim().as_bytes().to_vec()));
        }
    }
    if file.is_empty() {
        return Ok(None);
    }
    // The error names the file, never its content.
    let text = std::fs::read_to_string(file)
        .map_err(|e| anyhow::anyhow!("cannot read {key} {file}: {e}"))?;
    let text = text.trim();
    Ok((!text.is_empty()).then(|| text.as_bytes().to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_must_be_exact() {
        let mut c = EventsConfig::default();
        for good in ["https://studio.example.com", "http://localhost:3000"] {
            c.allowed_origins = vec![good.into()];
            assert_eq!(c.validate(), Ok(()), "{good}");
        }
        for bad in [
            "*",
            "https://*.example.com",
            "https://studio.example.com/",
            "https://studio.example.com/app",
            "studio.example.com",
        ] {
            c.allowed_origins = vec![bad.into()];
            assert!(c.validate().is_err(), "{bad}");
        }
    }

    #[test]
    fn limits_must_be_positive() {
        let c = EventsConfig {
            stream_buffer: 0,
            ..EventsConfig::default()
        };
        assert!(c.validate().is_err());
        let c = EventsConfig {
            replay_limit: 0,
            ..EventsConfig::default()
        };
        assert!(c.validate().is_err());
    }
}
