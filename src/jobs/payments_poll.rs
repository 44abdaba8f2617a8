//! `payments.poll`: the fallback for Plisio callbacks that never come. A periodic job
//! (maintenance queue, `[payments] poll_interval`, one run per slot for the fleet) that
//! asks Plisio's operations API (`GET {plisio_base_url}/operations/{txn_id}?api_key=...`)
//! about up to `[payments] poll_batch` payments still `new`/`pending`, unchanged for
//! `[payments] poll_after` and due for a poll, and applies the status it reports through
//! the callback's own code path ([`crate::payments::record`]): `completed` grants once,
//! `mismatch` goes to review, and so on. A status that is still new/pending changes
//! nothing but the poll's bookkeeping.
//!
//! Every poll is recorded on its payment before anything else, whatever the answer
//! ([`crate::payments::poll`]): that moves the payment's next poll away (backoff), so open
//! invoices nobody pays cannot fill every batch and starve a newer one whose callback was
//! lost; and a payment whose status fails to apply does not block the ones after it in
//! later runs. A payment Plisio never knew is given up once older than `[payments]
//! give_up_unknown_after`, status kept (decision 56).
//! The HTTP client is [`PlisioClient`], which keeps the key out of errors and logs.

use serde::Deserialize;

use crate::config::{PaymentsConfig, PeriodicConfig};
use crate::daemon::{JobContext, JobError, Worker};
use crate::outbound::Secret;
use crate::payments::plisio::PlisioClient;
use crate::payments::poll::{self, Answer};
use crate::payments::PaymentStatus;

/// The kind.
pub const KIND: &str = "payments.poll";

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
        let backoff = self.config.backoff();
        let due = poll::due(
            &mut *ctx.pool.acquire().await?,
            self.config.poll_after.as_secs_f64(),
            i64::from(self.config.poll_batch),
            self.config.poll_interval / 2,
        )
        .await?;
        for txn_id in &due {
            // No connection is held while Plisio is asked.
            let fetched = self.plisio.fetch(txn_id).await;
            let mut conn = ctx.pool.acquire().await?;
            let (status, data) = match fetched {
                Ok(Some(found)) => found,
                Ok(None) => {
                    let after = self.config.give_up_unknown_after;
                    if poll::give_up_unknown(&mut conn, txn_id, after).await? {
                        metrics::counter!(crate::metrics::PAYMENTS_POLL_GIVEN_UP).increment(1);
                        tracing::warn!(%txn_id, given_up_after = ?after,
                            "Plisio has never known this payment: no longer polled, status kept");
                    } else {
                        poll::record(&mut conn, txn_id, Answer::Unknown, backoff).await?;
                    }
                    continue;
                }
                Err(err) => {
                    tracing::warn!(%txn_id, error = %err, "Plisio poll failed; polled again later");
                    poll::record(&mut conn, txn_id, Answer::Unknown, backoff).await?;
                    continue;
                }
            };
            poll::record(&mut conn, txn_id, Answer::Known, backoff).await?;
            drop(conn);
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
