//! Daemon configuration: `config/genq.toml`, overridden by `GENQ_*` environment variables.
//!
//! Every field has a default in code, so a daemon starts with no file at all; the shipped
//! `config/genq.toml` documents each default. Environment overrides are applied generically
//! (`GENQ_<SECTION>_<KEY>`, matched against the keys that exist), so a new field never needs
//! a hand-written override.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Default database URL when neither the config file nor `DATABASE_URL` sets one.
pub const DEFAULT_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

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

/// `[worker]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct WorkerConfig {
    /// Worker identity. Defaults to empty, meaning `<hostname>-<pid>-<4 random hex digits>`.
    pub id: String,
    /// Lease length. Defaults to 30 s.
    #[serde(with = "humantime_serde")]
    pub lease: Duration,
    /// Heartbeat interval. Defaults to 5 s.
    #[serde(with = "humantime_serde")]
    pub heartbeat: Duration,
    /// Expired-lease scan interval. Defaults to 5 s.
    #[serde(with = "humantime_serde")]
    pub rescue_interval: Duration,
    /// Fallback poll interval. Defaults to 1 s.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// Most jobs per claim statement. Defaults to 500.
    pub claim_batch: u32,
    /// Most outcomes per completion statement. Defaults to 5000.
    pub complete_batch: u32,
    /// Shutdown grace period. Defaults to 30 s.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// Default attempt time limit. Defaults to 10 min.
    #[serde(with = "humantime_serde")]
    pub job_timeout: Duration,
    /// Use LISTEN/NOTIFY wake-ups (never behind a transaction-mode pooler). Defaults to true.
    pub listen: bool,
}

/// `[backoff]`: delay = min(max, base · 2^(failures-1)) · (1 ± jitter), where `failures`
/// counts the job's failed attempts (snoozes, hand-backs and interruptions excluded).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct BackoffConfig {
    /// First retry delay. Defaults to 1 s.
    #[serde(with = "humantime_serde")]
    pub base: Duration,
    /// Largest retry delay. Defaults to 1 h.
    #[serde(with = "humantime_serde")]
    pub max: Duration,
    /// Relative random spread. Defaults to 0.1.
    pub jitter: f64,
}

/// `[prune]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PruneConfig {
    /// Age after which completed and cancelled jobs are deleted. Defaults to 24 h.
    #[serde(with = "humantime_serde")]
    pub completed_after: Duration,
    /// Age after which discarded jobs are deleted. Defaults to 7 days.
    #[serde(with = "humantime_serde")]
    pub discarded_after: Duration,
    /// How often the prune job runs. Defaults to 1 min.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Rows per delete statement. Defaults to 1000.
    pub batch: u32,
}

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

/// `[sweep]`: the periodic `generation.sweep` job.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SweepConfig {
    /// How often it runs (one daemon per interval). Defaults to 5 min.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// A submitted generation older than this with no live poll job gets one. Defaults to 15 min.
    #[serde(with = "humantime_serde")]
    pub stale_after: Duration,
    /// Past this age (the providers' retention) a submitted generation fails and its hold
    /// is released. Defaults to 7 days.
    #[serde(with = "humantime_serde")]
    pub retention: Duration,
}

impl Default for SweepConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(300),
            stale_after: Duration::from_secs(900),
            retention: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// `[payments]`: the periodic `payments.poll` job, the fallback for Plisio callbacks that
/// never come. Its API key is Plisio's secret key (`[webhooks] plisio_secret_env`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct PaymentsConfig {
    /// Plisio's API base. Defaults to `https://api.plisio.net/api/v1`.
    pub plisio_base_url: String,
    /// How often pending invoices are polled (one daemon per interval). Defaults to 5 min.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// A `new`/`pending` payment older than this (since its last change) is polled.
    /// Defaults to 10 min.
    #[serde(with = "humantime_serde")]
    pub poll_after: Duration,
}

impl Default for PaymentsConfig {
    fn default() -> Self {
        Self {
            plisio_base_url: "https://api.plisio.net/api/v1".into(),
            poll_interval: Duration::from_secs(300),
            poll_after: Duration::from_secs(600),
        }
    }
}

/// `[admin]`. The token itself comes from `GENQ_ADMIN_TOKEN`, or from this file.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// File holding the admin API bearer token (e.g. a mounted secret). Defaults to none;
    /// with neither the file nor `GENQ_ADMIN_TOKEN`, the admin API is off.
    pub token_file: String,
}

/// `[metrics]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// How often fleet-wide queue statistics are sampled (by one daemon per interval).
    /// Defaults to 5 s.
    #[serde(with = "humantime_serde")]
    pub sample_interval: Duration,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            sample_interval: Duration::from_secs(5),
        }
    }
}

/// `[queues.NAME]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    /// Jobs of this queue this daemon runs at once. Defaults to 50.
    pub concurrency: u32,
    /// Fleet-wide cap on running jobs of this queue, written to `genq.queues` at start.
    /// Defaults to none (the cap in the database, if any, is left as it is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_running: Option<i32>,
}

/// `[[periodic]]`: one job per time slot, fleet-wide.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PeriodicConfig {
    /// Unique name; the slot record is keyed by it.
    pub name: String,
    /// Job kind to enqueue.
    pub kind: String,
    /// Standard 5-field cron expression (UTC). Exactly one of `cron` and `every`.
    #[serde(default)]
    pub cron: Option<String>,
    /// Fixed interval, aligned to the Unix epoch. Exactly one of `cron` and `every`.
    #[serde(default, with = "humantime_serde")]
    pub every: Option<Duration>,
    /// Queue. Defaults to `default`.
    #[serde(default = "default_queue")]
    pub queue: String,
    /// Payload. Defaults to `{}`.
    #[serde(default = "empty_object")]
    pub payload: serde_json::Value,
}

fn default_queue() -> String {
    "default".into()
}

fn empty_object() -> serde_json::Value {
    serde_json::json!({})
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

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            id: String::new(),
            lease: Duration::from_secs(30),
            heartbeat: Duration::from_secs(5),
            rescue_interval: Duration::from_secs(5),
            poll_interval: Duration::from_secs(1),
            claim_batch: 500,
            complete_batch: 5000,
            shutdown_grace: Duration::from_secs(30),
            job_timeout: Duration::from_secs(600),
            listen: true,
        }
    }
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            base: Duration::from_secs(1),
            max: Duration::from_secs(3600),
            jitter: 0.1,
        }
    }
}

impl Default for PruneConfig {
    fn default() -> Self {
        Self {
            completed_after: Duration::from_secs(24 * 3600),
            discarded_after: Duration::from_secs(7 * 24 * 3600),
            interval: Duration::from_secs(60),
            batch: 1000,
        }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:9800".into(),
            public_bind: String::new(),
        }
    }
}

impl QueueConfig {
    /// A queue run `concurrency` at a time, without a fleet-wide cap.
    pub fn with_concurrency(concurrency: u32) -> Self {
        Self {
            concurrency,
            max_running: None,
        }
    }
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            concurrency: 50,
            max_running: None,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        let mut queues = BTreeMap::new();
        queues.insert("default".to_string(), QueueConfig::default());
        queues.insert(
            crate::jobs::generation::QUEUE.to_string(),
            QueueConfig::with_concurrency(16),
        );
        queues.insert(
            crate::jobs::MAINTENANCE_QUEUE.to_string(),
            QueueConfig::with_concurrency(2),
        );
        queues.insert(
            crate::jobs::retention::QUEUE.to_string(),
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
            timeouts: BTreeMap::new(),
            queues,
            periodic: Vec::new(),
        }
    }
}

impl Config {
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

mod duration_map {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(
        map: &BTreeMap<String, Duration>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        map.iter()
            .map(|(k, v)| (k.clone(), humantime::format_duration(*v).to_string()))
            .collect::<BTreeMap<_, _>>()
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<String, Duration>, D::Error> {
        BTreeMap::<String, String>::deserialize(d)?
            .into_iter()
            .map(|(k, v)| {
                humantime::parse_duration(&v)
                    .map(|d| (k.clone(), d))
                    .map_err(|e| serde::de::Error::custom(format!("timeouts.{k}: {e}")))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {

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

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
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
    fn periodic_needs_one_schedule() {
        let text = "[[periodic]]\nname='a'\nkind='k'\n";
        assert!(Config::from_toml_and_env(text, "t", &[]).is_err());
        let text = "[[periodic]]\nname='a'\nkind='k'\nevery='1m'\n";
        let c = Config::from_toml_and_env(text, "t", &[]).unwrap();
        assert_eq!(c.periodic[0].every, Some(Duration::from_secs(60)));
    }
}
