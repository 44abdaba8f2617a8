//! `[retention]` configuration: how long each kind of data is kept, and how the sweep runs.
//!
//! The durations are written into `genq.retention_policies` when a daemon starts, so the
//! SQL that dates a blob (`genq.register_blob`, the trigger that schedules sources when a
//! generation ends) and the daemon agree on one set of numbers.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[retention]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RetentionConfig {
    /// Source uploads are deleted this long after their generation reaches a final state
    /// (a grace for troubleshooting). Defaults to 24 h.
    #[serde(with = "keep")]
    pub source_after: Option<Duration>,
    /// Reference uploads are deleted this long after upload. Defaults to 7 days.
    #[serde(with = "keep")]
    pub reference_after: Option<Duration>,
    /// Generated outputs are deleted this long after they were stored; `"never"` keeps them
    /// until the user deletes them. Defaults to 30 days.
    #[serde(with = "keep")]
    pub output_after: Option<Duration>,
    /// Data export archives are deleted this long after they were written. Defaults to 7 days.
    #[serde(with = "keep")]
    pub export_after: Option<Duration>,
    /// Generation inputs (prompts) and output metadata are scrubbed this long after the
    /// generation ended. Defaults to 30 days.
    #[serde(with = "keep")]
    pub inputs_after: Option<Duration>,
    /// Raw webhook bodies (provider and payment callbacks) are scrubbed this long after
    /// they were received. Defaults to 7 days.
    #[serde(with = "keep")]
    pub webhook_bodies_after: Option<Duration>,
    /// An account erasure is due this long after it was requested. Defaults to 30 days.
    #[serde(with = "humantime_serde")]
    pub erasure_due: Duration,
    /// How often the retention sweep runs (one daemon per interval). Defaults to 1 min.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Blobs per `retention.delete` job (one store per job). Defaults to 100.
    pub batch: u32,
    /// An item due longer than this and still not deleted counts as overdue
    /// (`genq_retention_overdue`; the promise holds while it is 0). Defaults to 1 h.
    #[serde(with = "humantime_serde")]
    pub overdue_after: Duration,
    /// Environment variable holding the key of the hash that replaces an erased user's id
    /// in the records kept (ledger, payments). Defaults to `GENQ_ERASURE_HASH_KEY`.
    pub hash_key_env: String,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        const DAY: u64 = 24 * 3600;
        Self {
            source_after: Some(Duration::from_secs(DAY)),
            reference_after: Some(Duration::from_secs(7 * DAY)),
            output_after: Some(Duration::from_secs(30 * DAY)),
            export_after: Some(Duration::from_secs(7 * DAY)),
            inputs_after: Some(Duration::from_secs(30 * DAY)),
            webhook_bodies_after: Some(Duration::from_secs(7 * DAY)),
            erasure_due: Duration::from_secs(30 * DAY),
            interval: Duration::from_secs(60),
            batch: 100,
            overdue_after: Duration::from_secs(3600),
            hash_key_env: "GENQ_ERASURE_HASH_KEY".into(),
        }
    }
}

impl RetentionConfig {
    /// The policies as written to `genq.retention_policies`: (name, keep; `None` = forever).
    pub fn policies(&self) -> [(&'static str, Option<Duration>); 7] {
        [
            ("source", self.source_after),
            ("reference", self.reference_after),
            ("output", self.output_after),
            ("export", self.export_after),
            ("inputs", self.inputs_after),
            ("webhook_bodies", self.webhook_bodies_after),
            ("erasure", Some(self.erasure_due)),
        ]
    }

    /// The erasure hash key from the environment (`hash_key_env`), if set and non-empty.
    pub fn hash_key(&self) -> Option<Vec<u8>> {
        std::env::var(&self.hash_key_env)
            .ok()
            .filter(|k| !k.is_empty())
            .map(String::into_bytes)
    }
}

/// A retention period: a humantime duration (`"30d"`, `"24h"`) or `"never"`.
mod keep {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            None => s.serialize_str("never"),
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(d)?;
        if text.trim().eq_ignore_ascii_case("never") {
            return Ok(None);
        }
        humantime::parse_duration(text.trim())
            .map(Some)
            .map_err(|e| serde::de::Error::custom(format!("{text:?}: {e} (or \"never\")")))
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    #[test]
    fn output_can_be_kept_forever_and_durations_parse() {
        let c = Config::from_toml_and_env(
            "[retention]\noutput_after = \"never\"\nsource_after = \"2h\"\n",
            "t",
            &[("GENQ_RETENTION_REFERENCE_AFTER".into(), "3d".into())],
        )
        .unwrap();
        assert_eq!(c.retention.output_after, None);
        assert_eq!(
            c.retention.source_after,
            Some(std::time::Duration::from_secs(7200))
        );
        assert_eq!(
            c.retention.reference_after,
            Some(std::time::Duration::from_secs(3 * 86400))
        );
    }

    #[test]
    fn a_bad_period_is_refused_with_its_value() {
        let err = Config::from_toml_and_env("[retention]\noutput_after = \"soon\"\n", "t", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("soon"), "{err}");
    }
}
