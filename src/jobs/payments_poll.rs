//! `payments.poll`: the fallback for Plisio callbacks that never come. A periodic job
//! (maintenance queue, `[payments] poll_interval`, one run per slot for the fleet) that
//! asks Plisio's operations API (`GET {plisio_base_url}/operations/{txn_id}?api_key=...`)
//! about each payment still `new`/`pending` and unchanged for `[payments] poll_after`, and
//! applies the status it reports through the callback's own code path
//! ([`crate::payments::record`]): `completed` grants once, `mismatch` goes to review, and
//! so on. A status that is still new/pending changes nothing.
//! The HTTP client is [`PlisioClient`], which keeps the key out of errors and logs.

use serde::Deserialize;

use crate::config::{PaymentsConfig, PeriodicConfig};
use crate::daemon::{JobContext, JobError, Worker};
use crate::outbound::Secret;
use crate::payments::plisio::PlisioClient;
use crate::payments::PaymentStatus;

/// The kind.
pub const KIND: &str = "payments.poll";

/// Payments polled per run; a larger backlog is finished by later runs.
const BATCH: i64 = 200;

/// The poll worker.
pub struct PaymentsPoll {
    config: PaymentsConfig,
    plisio: PlisioClient,
}

impl PaymentsPoll {
    /// With Plisio's secret key as the API key.
    pub fn new(config: &PaymentsConfig, api_key: Secret) -> anyhow::Result<Self> {
        Ok(Self {
            config: config.clone(),
            plisio: PlisioClient::new(&config.plisio_base_url, api_key)?,
        })
    }
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
        let due = crate::payments::due_for_poll(
            &mut *ctx.pool.acquire().await?,
            self.config.poll_after.as_secs_f64(),
            BATCH,
        )
        .await?;
        for txn_id in &due {
            let (status, data) = match self.plisio.fetch(txn_id).await {
                Ok(Some(found)) => found,
                Ok(None) => continue,
                Err(err) => {
                    tracing::warn!(%txn_id, error = %err, "Plisio poll failed; next run tries again");
                    continue;
                }
            };
            metrics::counter!(crate::metrics::SWEEPER_ACTIONS, "action" => "payment_polled")
                .increment(1);
            if PaymentStatus::from_plisio(&status) == PaymentStatus::Pending {
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
