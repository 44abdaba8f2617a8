//! `[providers]` configuration: where each provider is, where its key comes from, and the
//! fleet-wide limits the provider gate enforces in Postgres.
//!
//! Keys themselves never appear in the file: it names an environment variable or a file
//! (a mounted secret) to read them from, so the file can be committed and printed.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::ProviderKind;

/// `[providers]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(from = "RawProvidersConfig")]
pub struct ProvidersConfig {
    /// Time limit of one provider HTTP call, connection included. A submit that runs out of
    /// it after sending is ambiguous. Defaults to 30 s.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// Public base URL of this daemon's HTTP server, for provider callbacks
    /// (`{base}/webhooks/{provider}?generation_id=...`). Defaults to empty: no webhooks,
    /// polling only (and no reconciliation of ambiguous submits).
    pub webhook_base_url: String,
    /// How long a submit whose outcome is unknown waits for the provider's webhook when the
    /// provider cannot be asked (fal has no list API), before the generation fails and its
    /// hold is released. fal retries a webhook for about 2 h (10 tries), so a shorter grace
    /// may fail a generation whose callback still comes: that late callback is stored and
    /// counted (`genq_generation_late_callbacks_total`), and fal bills the render. Defaults
    /// to 10 min.
    #[serde(with = "humantime_serde")]
    pub ambiguous_submit_grace: Duration,
    /// fal.ai queue API. Defaults to `https://queue.fal.run`, key from `FAL_KEY`.
    pub fal: Endpoint,
    /// BytePlus ModelArk. Defaults to `https://ark.ap-southeast.bytepluses.com/api/v3`, key
    /// from `ARK_API_KEY`.
    pub byteplus: Endpoint,
    /// Replicate. Defaults to `https://api.replicate.com/v1`, key from `REPLICATE_API_TOKEN`.
    pub replicate: Endpoint,
    /// Fleet-wide limits per provider name (`fal`, `byteplus`, `replicate`). Defaults to
    /// [`ProviderLimits::default`] for every provider without an entry.
    pub limits: BTreeMap<String, ProviderLimits>,
}

/// `[providers.fal]`, `[providers.byteplus]`, `[providers.replicate]`. A section that sets
/// some fields keeps that provider's defaults for the others.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Endpoint {
    /// API base URL, without a trailing slash. Defaults to the provider's public API.
    pub base_url: String,
    /// Environment variable holding the API key. Defaults to the provider's usual name
    /// (`FAL_KEY`, `ARK_API_KEY`, `REPLICATE_API_TOKEN`).
    pub api_key_env: String,
    /// File holding the API key (e.g. a mounted secret); wins over `api_key_env` when set.
    /// Read once at start. Defaults to empty (not used).
    pub api_key_file: String,
}

/// `[providers.limits.NAME]`: enforced across all daemons by the provider gate.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ProviderLimits {
    /// Most calls to this provider in flight at once, fleet-wide. Defaults to 50.
    pub max_in_flight: u32,
    /// Sustained calls per second, fleet-wide (token bucket refill). Defaults to 10.0.
    pub rate_per_sec: f64,
    /// Calls allowed in a burst above the sustained rate (bucket size). Defaults to 20.
    pub burst: u32,
    /// Consecutive failed calls (5xx, timeouts, ambiguous) that open the circuit breaker.
    /// Defaults to 5.
    pub failure_threshold: u32,
    /// How long an open circuit refuses calls; afterwards calls are admitted again and the
    /// first success closes it. Defaults to 30 s.
    #[serde(with = "humantime_serde")]
    pub cooldown: Duration,
    /// Generations submitted to this provider account and not yet final, fleet-wide: set it
    /// to the account's concurrency so the backlog waits in genq (ordered fairly) instead of
    /// the provider's queue. Written at start as the limit of group `render:NAME`
    /// (docs/fairness.md). Defaults to none (no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rendering: Option<u32>,
}

impl Default for ProviderLimits {
    fn default() -> Self {
        Self {
            max_in_flight: 50,
            rate_per_sec: 10.0,
            burst: 20,
            failure_threshold: 5,
            cooldown: Duration::from_secs(30),
            max_rendering: None,
        }
    }
}

impl Endpoint {
    /// An endpoint at `base_url` with its key in the environment variable `api_key_env`.
    pub fn new(base_url: impl Into<String>, api_key_env: impl Into<String>) -> Self {
        Self {
            base_url: base_url.into(),
            api_key_env: api_key_env.into(),
            api_key_file: String::new(),
        }
    }

    /// The public endpoint of `kind`, key from its usual environment variable.
    pub fn default_for(kind: ProviderKind) -> Self {
        match kind {
            ProviderKind::Fal => Self::new("https://queue.fal.run", "FAL_KEY"),
            ProviderKind::BytePlus => Self::new(
                "https://ark.ap-southeast.bytepluses.com/api/v3",
                "ARK_API_KEY",
            ),
            ProviderKind::Replicate => {
                Self::new("https://api.replicate.com/v1", "REPLICATE_API_TOKEN")
            }
        }
    }
}

impl Default for ProvidersConfig {
    fn default() -> Self {
        Self {
            request_timeout: Duration::from_secs(30),
            webhook_base_url: String::new(),
            ambiguous_submit_grace: Duration::from_secs(600),
            fal: Endpoint::default_for(ProviderKind::Fal),
            byteplus: Endpoint::default_for(ProviderKind::BytePlus),
            replicate: Endpoint::default_for(ProviderKind::Replicate),
            limits: ProviderKind::ALL
                .iter()
                .map(|k| (k.as_str().to_string(), ProviderLimits::default()))
                .collect(),
        }
    }
}

impl ProvidersConfig {
    /// The endpoint of `kind`.
    pub fn endpoint(&self, kind: ProviderKind) -> &Endpoint {
        match kind {
            ProviderKind::Fal => &self.fal,
            ProviderKind::BytePlus => &self.byteplus,
            ProviderKind::Replicate => &self.replicate,
        }
    }

    /// The endpoint of `kind`, to change.
    pub fn endpoint_mut(&mut self, kind: ProviderKind) -> &mut Endpoint {
        match kind {
            ProviderKind::Fal => &mut self.fal,
            ProviderKind::BytePlus => &mut self.byteplus,
            ProviderKind::Replicate => &mut self.replicate,
        }
    }

    /// The limits of `kind`: its `[providers.limits.NAME]` entry, else the defaults.
    pub fn limits_for(&self, kind: ProviderKind) -> ProviderLimits {
        self.limits.get(kind.as_str()).cloned().unwrap_or_default()
    }
}

/// What the file says. serde's field defaults cannot know which provider a section belongs
/// to, so absent endpoint fields are filled in here: `[providers.fal]` with only `base_url`
/// (a proxy, the fake) keeps reading `FAL_KEY`.
#[derive(Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawProvidersConfig {
    #[serde(with = "humantime_serde")]
    request_timeout: Duration,
    webhook_base_url: String,
    #[serde(with = "humantime_serde")]
    ambiguous_submit_grace: Duration,
    fal: RawEndpoint,
    byteplus: RawEndpoint,
    replicate: RawEndpoint,
    limits: BTreeMap<String, ProviderLimits>,
}

#[derive(Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RawEndpoint {
    base_url: Option<String>,
    api_key_env: Option<String>,
    api_key_file: Option<String>,
}

impl Default for RawProvidersConfig {
    fn default() -> Self {
        let d = ProvidersConfig::default();
        Self {
            request_timeout: d.request_timeout,
            webhook_base_url: d.webhook_base_url,
            ambiguous_submit_grace: d.ambiguous_submit_grace,
            fal: RawEndpoint::default(),
            byteplus: RawEndpoint::default(),
            replicate: RawEndpoint::default(),
            limits: d.limits,
        }
    }
}

impl RawEndpoint {
    fn resolve(self, kind: ProviderKind) -> Endpoint {
        let d = Endpoint::default_for(kind);
        Endpoint {
            base_url: self.base_url.unwrap_or(d.base_url),
            api_key_env: self.api_key_env.unwrap_or(d.api_key_env),
            api_key_file: self.api_key_file.unwrap_or(d.api_key_file),
        }
    }
}

impl From<RawProvidersConfig> for ProvidersConfig {
    fn from(raw: RawProvidersConfig) -> Self {
        // Every provider keeps an entry, so `GENQ_PROVIDERS_LIMITS_<NAME>_<KEY>` (which only
        // reaches keys that exist) works even when the file lists one provider.
        let mut limits = raw.limits;
        for kind in ProviderKind::ALL {
            limits.entry(kind.as_str().to_string()).or_default();
        }
        Self {
            request_timeout: raw.request_timeout,
            webhook_base_url: raw.webhook_base_url,
            ambiguous_submit_grace: raw.ambiguous_submit_grace,
            fal: raw.fal.resolve(ProviderKind::Fal),
            byteplus: raw.byteplus.resolve(ProviderKind::BytePlus),
            replicate: raw.replicate.resolve(ProviderKind::Replicate),
            limits,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partial_section_keeps_the_other_defaults() {
        let text = r#"
            request_timeout = "5s"
            [fal]
            base_url = "http://127.0.0.1:9900/fal"
            [limits.fal]
            max_in_flight = 3
        "#;
        let c: ProvidersConfig = toml::from_str(text).unwrap();
        assert_eq!(c.request_timeout, Duration::from_secs(5));
        assert_eq!(c.fal.base_url, "http://127.0.0.1:9900/fal");
        assert_eq!(c.fal.api_key_env, "FAL_KEY");
        assert_eq!(c.byteplus, Endpoint::default_for(ProviderKind::BytePlus));
        assert_eq!(c.limits_for(ProviderKind::Fal).max_in_flight, 3);
        assert_eq!(c.limits_for(ProviderKind::Fal).burst, 20);
        assert_eq!(
            c.limits_for(ProviderKind::Replicate),
            ProviderLimits::default()
        );
        assert_eq!(c.limits.len(), 3);
    }

    #[test]
    fn round_trips_through_toml() {
        let c = ProvidersConfig::default();
        let value = toml::Value::try_from(&c).unwrap();
        let back: ProvidersConfig = value.try_into().unwrap();
        assert_eq!(back, c);
        let text = toml::to_string(&c).unwrap();
        assert_eq!(toml::from_str::<ProvidersConfig>(&text).unwrap(), c);
        assert_eq!(toml::from_str::<ProvidersConfig>("").unwrap(), c);
    }

    #[test]
    fn environment_overrides_reach_endpoints_and_limits() {
        let env: Vec<(String, String)> = [
            ("GENQ_PROVIDERS_FAL_BASE_URL", "http://127.0.0.1:9900/fal"),
            ("GENQ_PROVIDERS_LIMITS_BYTEPLUS_BURST", "5"),
            ("GENQ_PROVIDERS_LIMITS_REPLICATE_RATE_PER_SEC", "2.5"),
            ("GENQ_PROVIDERS_REQUEST_TIMEOUT", "10s"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        // A file that lists one provider's limits: the others can still be overridden.
        let text = "[providers.limits.fal]\nmax_in_flight = 3\n";
        let c = crate::config::Config::from_toml_and_env(text, "t", &env)
            .unwrap()
            .providers;
        assert_eq!(c.fal.base_url, "http://127.0.0.1:9900/fal");
        assert_eq!(c.limits_for(ProviderKind::Fal).max_in_flight, 3);
        assert_eq!(c.limits_for(ProviderKind::BytePlus).burst, 5);
        assert_eq!(c.limits_for(ProviderKind::Replicate).rate_per_sec, 2.5);
        assert_eq!(c.request_timeout, Duration::from_secs(10));
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<ProvidersConfig>("[fal]\napi_key = \"x\"\n").is_err());
        assert!(toml::from_str::<ProvidersConfig>("timeout = \"1s\"\n").is_err());
    }
}
