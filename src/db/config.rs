//! `[database]`: how the engine reaches Postgres. Engine configuration, so it lives with the
//! database layer; the top-level configuration (the composition root's) embeds it.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Default database URL when neither the config file nor `DATABASE_URL` sets one.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// `[database]`. Its `Debug` shows the URL with the password replaced by `***`.
#[derive(Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// Connection URL. Defaults to `postgres://postgres@127.0.0.1:5432/postgres`;
    /// `DATABASE_URL` overrides it.
    pub url: String,
    /// Pool size. Defaults to 10.
    pub max_connections: u32,
    /// Wait for a pooled connection. Defaults to 10 s.
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
    /// `idle_in_transaction_session_timeout` of the daemon's sessions. Defaults to 60 s.
    /// Behind a transaction-mode pooler it cannot be sent: set it on the role instead.
    #[serde(with = "humantime_serde")]
    pub idle_in_transaction_timeout: Duration,
    /// Prefix of this database's roles (`<prefix>_owner`, `_backend`, `_worker`). Empty
    /// (the default) keeps the prefix the database already uses, `genq` on a first
    /// migration. Roles are cluster-wide and serve one database each, so a second genq
    /// database in the same cluster needs its own prefix (docs/credits.md).
    pub role_prefix: String,
    /// What `url` points at: `none` (Postgres itself), `session` or `transaction` (a
    /// PgBouncer/Supavisor pool mode). Defaults to `none`.
    pub pooler: crate::db::Pooler,
}

impl std::fmt::Debug for DatabaseConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseConfig")
            .field("url", &redact_url(&self.url))
            .field("max_connections", &self.max_connections)
            .field("acquire_timeout", &self.acquire_timeout)
            .field(
                "idle_in_transaction_timeout",
                &self.idle_in_transaction_timeout,
            )
            .finish()
    }
}

/// A connection URL with its password (and a `password=` query parameter) replaced by
/// `***`; text that is not a URL is hidden whole, since it may be a key=value string
/// holding a password.
pub fn redact_url(raw: &str) -> String {
    let Ok(mut url) = url::Url::parse(raw) else {
        return "***".into();
    };
    if url.password().is_some() {
        let _ = url.set_password(Some("***"));
    }
    if url.query_pairs().any(|(k, _)| k == "password") {
        let pairs: Vec<(String, String)> = url
            .query_pairs()
            .map(|(k, v)| {
                let v = if k == "password" {
                    "***".into()
                } else {
                    v.into_owned()
                };
                (k.into_owned(), v)
            })
            .collect();
        url.query_pairs_mut().clear().extend_pairs(pairs);
    }
    url.to_string()
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            url: DEFAULT_DATABASE_URL.into(),
            max_connections: 10,
            acquire_timeout: Duration::from_secs(10),
            idle_in_transaction_timeout: Duration::from_secs(60),
            role_prefix: String::new(),
            pooler: crate::db::Pooler::None,
        }
    }
}
