//! The engine's own configuration: claiming, leases, backoff, pruning, statistics, queues and
//! periodic jobs. The daemon takes an [`EngineConfig`] and nothing else, so the engine never
//! sees a product section; the top-level configuration (file and environment, owned by the
//! composition root) carries these same sections and converts into it.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::db::DatabaseConfig;

/// Queue of the engine's maintenance jobs (`genq.prune`, and the product's periodic
/// housekeeping); every daemon works it unless configured otherwise.
pub const MAINTENANCE_QUEUE: &str = "maintenance";

/// What the daemon needs: the engine sections of the configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    /// Database connection.
    pub database: DatabaseConfig,
    /// Claiming, leases and shutdown.
    pub worker: WorkerConfig,
    /// Retry delays after failed attempts.
    pub backoff: BackoffConfig,
    /// Deletion of finished jobs.
    pub prune: PruneConfig,
    /// Metrics sampling.
    pub metrics: MetricsConfig,
    /// Per-kind attempt time limits; they override a handler's own timeout.
    pub timeouts: BTreeMap<String, Duration>,
    /// Queues this daemon works.
    pub queues: BTreeMap<String, QueueConfig>,
    /// Periodic jobs from the configuration (the registry adds its own).
    pub periodic: Vec<PeriodicConfig>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        let mut queues = BTreeMap::new();
        queues.insert("default".to_string(), QueueConfig::default());
        queues.insert(
            MAINTENANCE_QUEUE.to_string(),
            QueueConfig::with_concurrency(2),
        );
        Self {
            database: DatabaseConfig::default(),
            worker: WorkerConfig::default(),
            backoff: BackoffConfig::default(),
            prune: PruneConfig::default(),
            metrics: MetricsConfig::default(),
            timeouts: BTreeMap::new(),
            queues,
            periodic: Vec::new(),
        }
    }
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
    /// Most jobs of one queue a daemon holds claimed but not yet started, beyond its
    /// `concurrency` (decision 51). The buffer is sized from the queue's recent start rate
    /// (about 100 ms of starts, at most this), so it only fills while jobs move fast.
    /// 0 turns buffering off. Never used for fair queues or queues with `max_running`.
    /// Defaults to 1000.
    pub claim_ahead: u32,
    /// Longest a buffered job waits for a free slot before it is handed back (available
    /// at once, no attempt spent). Defaults to 1 s.
    #[serde(with = "humantime_serde")]
    pub claim_ahead_wait: Duration,
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
    /// How often the prune job runs; a run deletes for at most this long. Defaults to 1 min.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Rows per delete statement. Defaults to 1000.
    pub batch: u32,
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
    /// Claim fairly across the jobs' fairness keys (docs/fairness.md), written to
    /// `genq.queues` at start together with `key_max_active`. Defaults to none (the setting
    /// in the database is left as it is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fair: Option<bool>,
    /// Fair queues: jobs one key may run (or keep in flight) at once, fleet-wide, unless the
    /// key has its own limit. Defaults to none (no per-key limit). Written with `fair`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_max_active: Option<i32>,
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
            claim_ahead: 1000,
            claim_ahead_wait: Duration::from_secs(1),
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
impl QueueConfig {
    /// A queue run `concurrency` at a time, without a fleet-wide cap.
    pub fn with_concurrency(concurrency: u32) -> Self {
        Self {
            concurrency,
            max_running: None,
            fair: None,
            key_max_active: None,
        }
    }
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            concurrency: 50,
            max_running: None,
            fair: None,
            key_max_active: None,
        }
    }
}

pub(crate) mod duration_map {
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
