//! Daemon configuration: `config/genq.toml`, overridden by `GENQ_*` environment variables.
//!
//! Every field has a default in code, so a daemon starts with no file at all; the shipped
//! `config/genq.toml` documents each default. Environment overrides are applied generically
//! (`GENQ_<SECTION>_<KEY>`, matched against the keys that exist), so a new field never needs
//! a hand-written override.
//!
//! This module is the composition root's: it aggregates sections that live beside the code
//! they configure (the engine's in `daemon::config` and `db::config`, the product's in
//! `providers`, `storage`, `retention`, `http`, `payments`, `jobs::generation`) and hands
//! the engine only its own part ([`EngineConfig`]). The engine never imports this module.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::daemon::config::duration_map;
pub use crate::daemon::config::{
    BackoffConfig, EngineConfig, MetricsConfig, PeriodicConfig, PruneConfig, QueueConfig,
    WorkerConfig,
};
pub use crate::db::config::{redact_url, DatabaseConfig, DEFAULT_DATABASE_URL};
pub use crate::http::config::{AdminConfig, HttpConfig, WebhooksConfig};
pub use crate::jobs::generation::config::SweepConfig;
pub use crate::payments::config::PaymentsConfig;

/// Errors while loading configuration. They name the file or variable at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file or an override is not valid.
    #[error("invalid configuration ({origin}): {message}")]
    Invalid {
        /// Where the bad value came from.
        origin: String,
        /// What was wrong.
        message: String,
    },
}

/// The whole configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Database connection.
    pub database: DatabaseConfig,
    /// Claiming, leases and shutdown.
    pub worker: WorkerConfig,
    /// Retry delays after failed attempts.
    pub backoff: BackoffConfig,
    /// Deletion of finished jobs.
    pub prune: PruneConfig,
    /// HTTP server.
    pub http: HttpConfig,
    /// Admin API.
    pub admin: AdminConfig,
    /// Metrics sampling.
    pub metrics: MetricsConfig,
    /// AI providers: endpoints, keys, fleet-wide limits.
    pub providers: crate::providers::ProvidersConfig,
    /// Where outputs are stored.
    pub storage: crate::storage::StorageConfig,
    /// Inbound provider callbacks (`/webhooks/...`).
    pub webhooks: WebhooksConfig,
    /// The generation sweeper (`generation.sweep`).
    pub sweep: SweepConfig,
    /// Plisio payments: the polling fallback (`payments.poll`).
    pub payments: PaymentsConfig,
    /// Retention and privacy: how long each kind of data is kept.
    pub retention: crate::retention::RetentionConfig,
    /// What downloads of provider-named URLs may reach.
    pub outbound: crate::outbound::OutboundConfig,
    /// Live event streams for browsers (`/v1/.../events`).
    pub events: crate::events::EventsConfig,
    /// Default limits of users without a plan (`genq.set_user_limits`).
    pub users: crate::plans::UsersConfig,
    /// Per-kind attempt time limits; they override a handler's own timeout. Defaults to
    /// none (a kind uses its handler's timeout, else `worker.job_timeout`).
    #[serde(with = "duration_map")]
    pub timeouts: BTreeMap<String, Duration>,
    /// Queues this daemon works. Defaults to `default` (50), `generation` (16) and
    /// `maintenance` (2).
    pub queues: BTreeMap<String, QueueConfig>,
    /// Periodic jobs. Defaults to none besides the built-in prune job.
    pub periodic: Vec<PeriodicConfig>,
}

impl Default for Config {
    fn default() -> Self {
        // The engine's queues (`default`, `maintenance`) and the product's.
        let mut queues = EngineConfig::default().queues;
        queues.insert(
            crate::jobs::generation::QUEUE.to_string(),
            QueueConfig {
                fair: Some(true),
                ..QueueConfig::with_concurrency(16)
            },
        );
        queues.insert(
            crate::jobs::privacy::QUEUE.to_string(),
            QueueConfig::with_concurrency(4),
        );
        Self {
            database: DatabaseConfig::default(),
            worker: WorkerConfig::default(),
            backoff: BackoffConfig::default(),
            prune: PruneConfig::default(),
            http: HttpConfig::default(),
            admin: AdminConfig::default(),
            metrics: MetricsConfig::default(),
            providers: Default::default(),
            storage: Default::default(),
            webhooks: WebhooksConfig::default(),
            sweep: SweepConfig::default(),
            payments: PaymentsConfig::default(),
            retention: Default::default(),
            outbound: Default::default(),
            events: Default::default(),
            users: Default::default(),
            timeouts: BTreeMap::new(),
            queues,
            periodic: Vec::new(),
        }
    }
}

impl From<Config> for EngineConfig {
    fn from(c: Config) -> Self {
        let queues = c.engine_queues();
        Self {
            database: c.database,
            worker: c.worker,
            backoff: c.backoff,
            prune: c.prune,
            metrics: c.metrics,
            timeouts: c.timeouts,
            queues,
            periodic: c.periodic,
        }
    }
}

impl From<&Config> for EngineConfig {
    fn from(c: &Config) -> Self {
        Self {
            database: c.database.clone(),
            worker: c.worker.clone(),
            backoff: c.backoff.clone(),
            prune: c.prune.clone(),
            metrics: c.metrics.clone(),
            timeouts: c.timeouts.clone(),
            queues: c.engine_queues(),
            periodic: c.periodic.clone(),
        }
    }
}

impl Config {
    /// The queues as the engine gets them: `[users] max_in_flight`, the default of users
    /// without a plan, is the generation queue's per-key limit (`key_max_active`), which
    /// the daemon writes at start and the fair claim enforces (one place for the limit).
    fn engine_queues(&self) -> BTreeMap<String, QueueConfig> {
        let mut queues = self.queues.clone();
        if self.users.max_in_flight > 0 {
            if let Some(q) = queues.get_mut(crate::jobs::generation::QUEUE) {
                q.key_max_active
                    .get_or_insert(self.users.max_in_flight as i32);
            }
        }
        queues
    }

    /// The engine's part of this configuration (what [`crate::Daemon`] takes).
    pub fn engine(&self) -> EngineConfig {
        self.into()
    }

    /// Loads configuration: defaults, then the file (the given path, else `GENQ_CONFIG`,
    /// else `config/genq.toml` if it exists), then environment overrides.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let env: Vec<(String, String)> = std::env::vars().collect();
        let path = path
            .map(Path::to_path_buf)
            .or_else(|| std::env::var_os("GENQ_CONFIG").map(PathBuf::from))
            .or_else(|| {
                let p = PathBuf::from("config/genq.toml");
                p.exists().then_some(p)
            });
        let text = match &path {
            Some(p) => std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: p.clone(),
                source,
            })?,
            None => String::new(),
        };
        let origin = path.map_or_else(|| "built-in defaults".into(), |p| p.display().to_string());
        Self::from_toml_and_env(&text, &origin, &env)
    }

    /// Builds configuration from TOML text and a list of environment variables.
    pub fn from_toml_and_env(
        text: &str,
        origin: &str,
        env: &[(String, String)],
    ) -> Result<Self, ConfigError> {
        let invalid = |origin: &str, message: String| ConfigError::Invalid {
            origin: origin.to_string(),
            message,
        };
        let file: Config = toml::from_str(text).map_err(|e| invalid(origin, e.to_string()))?;
        let mut value = toml::Value::try_from(&file).map_err(|e| invalid(origin, e.to_string()))?;
        for (name, raw) in env {
            let Some(rest) = name.strip_prefix("GENQ_") else {
                continue;
            };
            if matches!(rest, "CONFIG" | "LOG_FORMAT" | "LOG" | "ADMIN_TOKEN") {
                continue;
            }
            if !apply_override(&mut value, rest, raw) {
                tracing::debug!(variable = %name, "environment variable matches no config key");
            }
        }
        for (name, raw) in env {
            if name == "DATABASE_URL" && !env.iter().any(|(n, _)| n == "GENQ_DATABASE_URL") {
                apply_override(&mut value, "DATABASE_URL", raw);
            }
        }
        let config: Config = value
            .try_into()
            .map_err(|e: toml::de::Error| invalid("environment overrides", e.to_string()))?;
        config.validate().map_err(|m| invalid(origin, m))?;
        Ok(config)
    }

    /// Checks relations between fields that serde cannot.
    fn validate(&self) -> Result<(), String> {
        let prefix = &self.database.role_prefix;
        if !prefix.is_empty() && !crate::db::valid_role_prefix(prefix) {
            return Err(format!(
                "database.role_prefix {prefix:?} must be a lowercase letter followed by up to 39 lowercase letters, digits or underscores"
            ));
        }
        let w = &self.worker;
        if w.heartbeat * 2 > w.lease {
            return Err(format!(
                "worker.heartbeat ({:?}) must be at most half of worker.lease ({:?})",
                w.heartbeat, w.lease
            ));
        }
        if w.claim_batch == 0 || w.complete_batch == 0 {
            return Err("worker.claim_batch and worker.complete_batch must be at least 1".into());
        }
        if !(0.0..1.0).contains(&self.backoff.jitter) {
            return Err("backoff.jitter must be in [0, 1)".into());
        }
        crate::outbound::AddressPolicy::new(&self.outbound.allow_private)
            .map_err(|e| e.to_string())?;
        self.events.validate()?;
        for (name, q) in &self.queues {
            if q.key_max_active.is_some_and(|n| n < 0) {
                return Err(format!(
                    "queues.{name}.key_max_active must be 0 or more (or unset for no limit)"
                ));
            }
            if q.key_max_active.is_some() && q.fair.is_none() {
                return Err(format!(
                    "queues.{name}.key_max_active applies to fair queues: set queues.{name}.fair too"
                ));
            }
        }
        self.users.validate()?;
        self.payments.validate()?;
        let generation = self.queues.get(crate::jobs::generation::QUEUE);
        if let Some(key_max) = generation.and_then(|q| q.key_max_active) {
            let users = self.users.max_in_flight;
            if users > 0 && key_max != users as i32 {
                return Err(format!(
                    "users.max_in_flight ({users}) and queues.generation.key_max_active ({key_max}) \
                     are the same limit (a user's generations in flight); set one of them"
                ));
            }
        }
        for p in &self.periodic {
            if p.cron.is_some() == p.every.is_some() {
                return Err(format!(
                    "periodic job {:?}: set exactly one of `cron` and `every`",
                    p.name
                ));
            }
        }
        Ok(())
    }
}

/// Sets the leaf whose path, joined by `_` and upper-cased, equals `key`. Values are parsed
/// as TOML when they fit the existing leaf's type (a list: comma-separated strings) and kept
/// as strings otherwise.
fn apply_override(value: &mut toml::Value, key: &str, raw: &str) -> bool {
    let toml::Value::Table(table) = value else {
        return false;
    };
    for (name, child) in table.iter_mut() {
        let upper = name.to_uppercase().replace('-', "_");
        if key == upper {
            if child.is_table() {
                return false;
            }
            *child = parse_like(child, raw);
            return true;
        }
        if let Some(rest) = key.strip_prefix(&format!("{upper}_")) {
            if child.is_table() && apply_override(child, rest, raw) {
                return true;
            }
        }
    }
    false
}

fn parse_like(existing: &toml::Value, raw: &str) -> toml::Value {
    let parsed = match existing {
        toml::Value::Integer(_) => raw.parse().ok().map(toml::Value::Integer),
        toml::Value::Float(_) => raw.parse().ok().map(toml::Value::Float),
        toml::Value::Boolean(_) => raw.parse().ok().map(toml::Value::Boolean),
        // A list of strings, comma-separated (`GENQ_OUTBOUND_ALLOW_PRIVATE=10.0.0.0/8,::1`).
        toml::Value::Array(_) => Some(toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_string()))
                .collect(),
        )),
        _ => None,
    };
    parsed.unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

#[cfg(test)]
pub(crate) mod tests {

    // serde_json is built with arbitrary_precision (Plisio's verify_hash): numbers in a
    // periodic payload must still round-trip through the TOML layer as numbers.
    #[test]
    fn periodic_payload_numbers_survive_arbitrary_precision() {
        let text = "[[periodic]]\nname = \"n\"\nkind = \"k\"\nevery = \"1m\"\npayload = { n = 5, x = 1.5, s = \"t\" }\n";
        let c = Config::from_toml_and_env(text, "test", &[]).unwrap();
        assert_eq!(
            c.periodic[0].payload,
            serde_json::json!({"n": 5, "x": 1.5, "s": "t"})
        );
        assert_eq!(c.periodic[0].payload["n"].as_i64(), Some(5));
    }

    use super::*;

    #[test]
    fn outbound_ranges_come_from_the_file_or_the_environment_and_are_checked() {
        let c = Config::from_toml_and_env("", "t", &[]).unwrap();
        assert!(
            c.outbound.allow_private.is_empty(),
            "no private range by default"
        );
        let text = "[outbound]\nallow_private = [\"10.1.0.0/16\"]\n";
        let c = Config::from_toml_and_env(text, "t", &[]).unwrap();
        assert_eq!(c.outbound.allow_private, ["10.1.0.0/16"]);
        let env = [(
            "GENQ_OUTBOUND_ALLOW_PRIVATE".to_string(),
            "127.0.0.0/8, ::1/128".to_string(),
        )];
        let c = Config::from_toml_and_env("", "t", &env).unwrap();
        assert_eq!(c.outbound.allow_private, ["127.0.0.0/8", "::1/128"]);
        let bad = "[outbound]\nallow_private = [\"intranet\"]\n";
        let err = Config::from_toml_and_env(bad, "t", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("outbound.allow_private"), "{err}");
    }

    #[test]
    fn database_passwords_never_show_in_debug() {
        let mut c = Config::default();
        c.database.url = "postgres://genq:hunter2@db.example:5432/app?sslmode=require".into();
        let shown = format!("{c:?} {:?}", c.database);
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(
            shown.contains("postgres://genq:***@db.example:5432/app"),
            "{shown}"
        );
        c.database.url = "postgres://db.example/app?user=genq&password=hunter2".into();
        let shown = format!("{:?}", c.database);
        assert!(!shown.contains("hunter2"), "{shown}");
        assert_eq!(redact_url("host=db password=hunter2"), "***");
        assert_eq!(
            redact_url("postgres://postgres@127.0.0.1:5432/postgres"),
            "postgres://postgres@127.0.0.1:5432/postgres"
        );
    }

    /// Environment pairs as `Config::from_toml_and_env` takes them.
    pub(crate) fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn shipped_file_equals_built_in_defaults() {
        let text = include_str!("../config/genq.toml");
        let parsed = Config::from_toml_and_env(text, "config/genq.toml", &[]).unwrap();
        assert_eq!(parsed, Config::default());
    }

    #[test]
    fn environment_overrides_nested_keys() {
        let c = Config::from_toml_and_env(
            "",
            "test",
            &env(&[
                ("GENQ_WORKER_LEASE", "45s"),
                ("GENQ_HTTP_BIND", "0.0.0.0:1234"),
                ("GENQ_QUEUES_DEFAULT_CONCURRENCY", "7"),
                ("GENQ_WORKER_POLL_INTERVAL", "250ms"),
                ("GENQ_WORKER_LISTEN", "false"),
                ("DATABASE_URL", "postgres://x@y/z"),
                ("GENQ_DATABASE_POOLER", "transaction"),
                ("GENQ_HTTP_PUBLIC_BIND", "0.0.0.0:9801"),
            ]),
        )
        .unwrap();
        assert_eq!(c.database.pooler, crate::db::Pooler::Transaction);
        assert_eq!(c.http.public_bind, "0.0.0.0:9801");
        assert_eq!(c.worker.lease, Duration::from_secs(45));
        assert_eq!(c.http.bind, "0.0.0.0:1234");
        assert_eq!(c.queues["default"].concurrency, 7);
        assert_eq!(c.worker.poll_interval, Duration::from_millis(250));
        assert!(!c.worker.listen);
        assert_eq!(c.database.url, "postgres://x@y/z");
    }

    #[test]
    fn bad_values_are_named() {
        let err = Config::from_toml_and_env("", "t", &env(&[("GENQ_WORKER_LEASE", "soon")]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("lease"), "{err}");
        let err = Config::from_toml_and_env("[worker]\nheartbeat = \"20s\"\n", "t", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("at most half"), "{err}");
        let err =
            Config::from_toml_and_env("", "t", &env(&[("GENQ_DATABASE_POOLER", "pgbouncer")]))
                .unwrap_err()
                .to_string();
        assert!(
            err.contains("pgbouncer") && err.contains("transaction"),
            "{err}"
        );
        let err = Config::from_toml_and_env("[wroker]\n", "t", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("wroker"), "{err}");
    }

    #[test]
    fn fairness_settings_parse_and_bad_ones_are_named() {
        let text = "[queues.generation]\nfair = true\nkey_max_active = 3\n\n[providers.limits.fal]\nmax_rendering = 20\n";
        let c = Config::from_toml_and_env(text, "t", &[]).unwrap();
        assert_eq!(c.queues["generation"].fair, Some(true));
        assert_eq!(c.queues["generation"].key_max_active, Some(3));
        assert_eq!(
            c.providers
                .limits_for(crate::providers::ProviderKind::Fal)
                .max_rendering,
            Some(20)
        );
        let c = Config::from_toml_and_env(
            text,
            "t",
            &env(&[("GENQ_QUEUES_GENERATION_KEY_MAX_ACTIVE", "5")]),
        )
        .unwrap();
        assert_eq!(c.queues["generation"].key_max_active, Some(5));
        assert_eq!(Config::default().queues["generation"].fair, Some(true));
        for (bad, named) in [
            (
                "[queues.q]\nfair = true\nkey_max_active = -1\n",
                "key_max_active",
            ),
            ("[queues.q]\nkey_max_active = 2\n", "set queues.q.fair"),
            ("[queues.q]\nfair = \"yes\"\n", "fair"),
            (
                "[providers.limits.fal]\nmax_rendering = -1\n",
                "max_rendering",
            ),
        ] {
            let err = Config::from_toml_and_env(bad, "t", &[])
                .unwrap_err()
                .to_string();
            assert!(err.contains(named), "{bad}: {err}");
        }
    }

    #[test]
    fn periodic_needs_one_schedule() {
        let text = "[[periodic]]\nname='a'\nkind='k'\n";
        assert!(Config::from_toml_and_env(text, "t", &[]).is_err());
        let text = "[[periodic]]\nname='a'\nkind='k'\nevery='1m'\n";
        let c = Config::from_toml_and_env(text, "t", &[]).unwrap();
        assert_eq!(c.periodic[0].every, Some(Duration::from_secs(60)));
    }
}
