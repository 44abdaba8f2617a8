//! `payments.poll`: the fallback for Plisio callbacks that never come. A periodic job
//! (maintenance queue, `[payments] poll_interval`, one run per slot for the fleet) that
//! asks Plisio's operations API (`GET {plisio_base_url}/operations/{txn_id}?api_key=...`)
//! about each payment still `new`/`pending` and unchanged for `[payments] poll_after`, and
//! applies the status it reports through the callback's own code path
//! ([`crate::payments::record`]): `completed` grants once, `mismatch` goes to review, and
//! so on. A status that is still new/pending changes nothing.
//!
//! Plisio takes its key only in the query string, so the request URL is a credential: it
//! is never formatted into an error or a log line (errors are built without the URL, see
//! [`crate::outbound::errors`]), and the key is held as a [`Secret`].

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::config::{PaymentsConfig, PeriodicConfig};
use crate::daemon::{JobContext, JobError, Worker};
use crate::outbound::{self, Secret};

/// The kind.
pub const KIND: &str = "payments.poll";

/// Payments polled per run; a larger backlog is finished by later runs.
const BATCH: i64 = 200;

const DUE: &str = r#"
SELECT txn_id FROM genq.payments
 WHERE status IN ('new', 'pending') AND updated_at < now() - make_interval(secs => $1)
 ORDER BY updated_at LIMIT $2
"#;

/// The poll worker.
pub struct PaymentsPoll {
    config: PaymentsConfig,
    api_key: Secret,
    http: reqwest::Client,
}

impl PaymentsPoll {
    /// With Plisio's secret key as the API key.
    pub fn new(config: &PaymentsConfig, api_key: Secret) -> anyhow::Result<Self> {
        Ok(Self {
            config: config.clone(),
            api_key,
            http: outbound::client::api(Some(Duration::from_secs(30)))?,
        })
    }

    /// Plisio's status of an operation, with its data (`None`: Plisio answered an error).
    async fn fetch(&self, txn_id: &str) -> Result<Option<(String, Value)>, String> {
        let url = format!(
            "{}/operations/{}",
            self.config.plisio_base_url.trim_end_matches('/'),
            urlencoding(txn_id)
        );
        let reply = self
            .http
            .get(&url)
            .query(&[("api_key", self.api_key.expose())])
            .send()
            .await
            .map_err(|e| {
                format!(
                    "Plisio operations {txn_id}: {}",
                    outbound::errors::describe(e)
                )
            })?;
        let status = reply.status();
        let body = outbound::read_capped(reply, outbound::body::SMALL_BODY_LIMIT)
            .await
            .map_err(|e| format!("Plisio operations {txn_id}: HTTP {status}: {e}"))?;
        let body: Value = serde_json::from_slice(&body).map_err(|e| {
            format!("Plisio operations {txn_id}: HTTP {status}: the answer is not JSON ({e})")
        })?;
        if body["status"] != "success" {
            tracing::warn!(%txn_id, %status, body = %body["data"], "Plisio operations: error");
            return Ok(None);
        }
        let data = body["data"].clone();
        Ok(data["status"]
            .as_str()
            .map(|s| (s.to_string(), data.clone())))
    }
}

fn urlencoding(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

/// Payload (empty).
#[derive(Debug, Deserialize)]
pub struct PaymentsPollArgs {}

impl Worker for PaymentsPoll {
    type Args = PaymentsPollArgs;

    fn kind(&self) -> &str {
        KIND
    }

    async fn work(&self, ctx: JobContext, _args: PaymentsPollArgs) -> Result<(), JobError> {
        let due: Vec<String> = crate::db::query_scalar(DUE)
            .bind(self.config.poll_after.as_secs_f64())
            .bind(BATCH)
            .fetch_all(&ctx.pool)
            .await?;
        for txn_id in &due {
            let (status, data) = match self.fetch(txn_id).await {
                Ok(Some(found)) => found,
                Ok(None) => continue,
                Err(err) => {
                    tracing::warn!(%txn_id, error = %err, "Plisio poll failed; next run tries again");
                    continue;
                }
            };
            metrics::counter!(crate::metrics::SWEEPER_ACTIONS, "action" => "payment_polled")
                .increment(1);
            if crate::payments::map_status(&status) == "pending" {
                continue;
            }
            let mut tx = crate::db::begin(&ctx.pool).await?;
            let result = crate::payments::record(&mut tx, txn_id, &status, &data).await?;
            tx.commit().await?;
            tracing::info!(%txn_id, %status, result, "Plisio payment status applied from a poll");
        }
        Ok(())
    }
}

/// The periodic definition of the poll job.
pub fn periodic(config: &PaymentsConfig) -> PeriodicConfig {
    PeriodicConfig {
        name: KIND.into(),
        kind: KIND.into(),
        cron: None,
        every: Some(config.poll_interval),
        queue: crate::daemon::config::MAINTENANCE_QUEUE.into(),
        payload: serde_json::json!({}),
    }
}
