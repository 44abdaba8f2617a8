//! The generation pipeline: a user's request goes to an AI provider, is followed to its end
//! without holding a worker slot while the provider renders, its output is copied to our
//! storage, and the user's credits are captured in the same transaction that records
//! success (or released on failure).
//!
//! Five job kinds:
//! - `generation.submit` records its intent, calls the provider, saves the request id and
//!   schedules the poll, then finishes (an ambiguous submit is reconciled, never repeated);
//! - `generation.poll` asks the provider for the authoritative status, snoozing (no attempt
//!   spent) while it renders, and settles the generation when it ends;
//! - `generation.reconcile` does the same for a verified webhook, which is only a hint;
//! - `generation.cancel` cancels at the provider and releases the hold;
//! - `generation.sweep` (periodic, queue `maintenance`) re-polls generations that lost their
//!   poll job and fails those whose submit ended or that outlived the providers' retention.
//!
//! The first four run in queue `generation`.
//!
//! Every provider call passes the fleet-wide gate ([`crate::providers::gate`]).

pub mod cancel;
pub mod config;
pub mod poll;
pub mod reconcile;
pub mod settle;
pub mod submit;
pub mod sweep;

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::daemon::{JobError, Registry};
use crate::generation::Generation;
use crate::providers::gate::{self, Admission, CallOutcome};
use crate::providers::{ProviderError, ProviderKind, Providers, ProvidersConfig};
use crate::storage::BlobStore;

/// Queue of the generation jobs.
pub const QUEUE: &str = "generation";

/// Payload of every generation job.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GenerationArgs {
    /// The generation.
    pub generation_id: Uuid,
}

/// What the generation jobs need: provider adapters, the output store, an HTTP client
/// for copying outputs, and the configuration.
pub struct Pipeline {
    /// Adapters.
    pub providers: Providers,
    /// Where outputs go.
    pub store: Arc<dyn BlobStore>,
    /// For downloading outputs: the guarded client (`[outbound]`).
    pub http: crate::outbound::Guarded,
    /// `[providers]`.
    pub config: ProvidersConfig,
    /// Largest output copied.
    pub max_object_bytes: u64,
    /// Key of the BytePlus callback tokens (`[webhooks] byteplus_secret`); without it
    /// BytePlus callback URLs carry no token and are not received.
    pub callback_secret: Option<Vec<u8>>,
    /// `[sweep]`.
    pub sweep: crate::config::SweepConfig,
    /// `[payments]`: the Plisio polling fallback.
    pub payments: crate::config::PaymentsConfig,
    /// Plisio's secret key (its API key); `None` registers no `payments.poll`.
    pub plisio_api_key: Option<crate::outbound::Secret>,
}

impl Pipeline {
    /// Builds the pipeline from the daemon configuration.
    pub fn from_config(config: &crate::Config) -> anyhow::Result<Self> {
        Ok(Self {
            providers: Providers::from_config(&config.providers)?,
            store: crate::storage::from_config(&config.storage)?,
            http: crate::outbound::Guarded::from_config(
                &config.outbound,
                Duration::from_secs(600),
            )?,
            config: config.providers.clone(),
            max_object_bytes: config.storage.max_object_bytes,
            callback_secret: config.webhooks.byteplus_secret().map(String::into_bytes),
            sweep: config.sweep.clone(),
            payments: config.payments.clone(),
            plisio_api_key: config
                .webhooks
                .plisio_secret()
                .map(crate::outbound::Secret::new),
        })
    }

    /// Registers the generation job kinds and their periodic jobs (the sweep; the payments
    /// poll when Plisio's key is set).
    pub fn register(self: Arc<Self>, registry: &mut Registry) {
        let limits = self.config.clone();
        registry.on_start("generation.render_limits", move |pool| {
            let limits = limits.clone();
            async move { apply_render_limits(&pool, &limits).await }
        });
        registry.register(submit::Submit(self.clone()));
        registry.register(poll::Poll(self.clone()));
        registry.register(reconcile::Reconcile(self.clone()));
        registry.register(sweep::Sweep(self.clone()));
        registry.periodic(sweep::periodic(&self.sweep));
        if let Some(key) = &self.plisio_api_key {
            match crate::jobs::payments_poll::PaymentsPoll::new(&self.payments, key.clone()) {
                Ok(poll) => {
                    registry.register(poll);
                    registry.periodic(crate::jobs::payments_poll::periodic(&self.payments));
                }
                Err(err) => tracing::error!(error = %err, "payments.poll not set up"),
            }
        }
        registry.register(cancel::Cancel(self));
    }

    /// The webhook URL a provider should call back for this generation, if callbacks are
    /// configured. It always carries the generation id (reconciliation matches on it).
    /// BytePlus signs nothing, so its URL is `/webhooks/byteplus/{id}/{token}` with
    /// `token` = HMAC-SHA256 of the id under `callback_secret`.
    pub fn webhook_url(&self, kind: ProviderKind, id: Uuid) -> Option<String> {
        let base = self.config.webhook_base_url.trim_end_matches('/');
        if base.is_empty() {
            return None;
        }
        Some(match (kind, &self.callback_secret) {
            (ProviderKind::BytePlus, Some(secret)) => {
                let token = crate::providers::signing::callback_token(secret, &id.to_string());
                format!("{base}/webhooks/byteplus/{id}/{token}")
            }
            _ => format!("{base}/webhooks/{}?generation_id={id}", kind.as_str()),
        })
    }

    /// Runs one provider call through the fleet-wide gate. `Err(JobError::Snooze)` when the
    /// gate says wait (circuit open, cap, rate limit): no attempt is spent.
    pub async fn call<T, F, Fut>(
        &self,
        pool: &sqlx::PgPool,
        kind: ProviderKind,
        operation: &'static str,
        f: F,
    ) -> Result<Result<T, ProviderError>, JobError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<T, ProviderError>>,
    {
        let admitted = self.admit(pool, kind, operation).await?;
        Ok(self.call_admitted(pool, admitted, f).await)
    }

    /// Takes a slot from the fleet-wide gate for one call, without calling yet. The submit
    /// takes it before it commits `submitting`, so nothing that needs the database stands
    /// between that commit and the request (a database lost there would leave a generation
    /// `submitting` that was never sent, and fal could only wait out the grace).
    pub async fn admit(
        &self,
        pool: &sqlx::PgPool,
        kind: ProviderKind,
        operation: &'static str,
    ) -> Result<Admitted, JobError> {
        let limits = self.config.limits_for(kind);
        let lease = self.config.request_timeout + Duration::from_secs(30);
        match gate::acquire(pool, kind, &limits, lease).await? {
            Admission::Granted(slot) => Ok(Admitted {
                slot,
                kind,
                operation,
                limits,
            }),
            Admission::Wait { after, reason } => {
                metrics::counter!(crate::metrics::PROVIDER_REQUESTS, "provider" => kind.as_str(),
                    "operation" => operation, "result" => "refused")
                .increment(1);
                tracing::debug!(provider = kind.as_str(), operation, %reason, wait = ?after, "provider gate: waiting");
                Err(JobError::snooze(after))
            }
        }
    }

    /// Makes the call a slot was granted for and releases the slot with its outcome.
    pub async fn call_admitted<T, F, Fut>(
        &self,
        pool: &sqlx::PgPool,
        admitted: Admitted,
        f: F,
    ) -> Result<T, ProviderError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<T, ProviderError>>,
    {
        let Admitted {
            slot,
            kind,
            operation,
            limits,
        } = admitted;
        let result = f().await;
        let outcome = CallOutcome::of(&result);
        let label = match &result {
            Ok(_) => "ok",
            Err(ProviderError::Retryable { .. }) => "retryable",
            Err(ProviderError::Busy { .. }) => "busy",
            Err(ProviderError::Permanent { .. }) => "permanent",
            Err(ProviderError::Ambiguous { .. }) => "ambiguous",
        };
        metrics::counter!(crate::metrics::PROVIDER_REQUESTS, "provider" => kind.as_str(),
            "operation" => operation, "result" => label)
        .increment(1);
        if matches!(result, Err(ProviderError::Retryable { .. })) {
            metrics::counter!(crate::metrics::PROVIDER_RETRIES, "provider" => kind.as_str(), "operation" => operation)
                .increment(1);
        }
        // The call happened: its result must reach the caller even if the gate cannot be
        // updated (the slot then expires with its lease), or a sent submit would look unsent.
        match gate::release(pool, slot, outcome, &limits).await {
            Ok(true) => tracing::warn!(
                provider = kind.as_str(),
                "circuit open: calls to this provider pause for the cooldown"
            ),
            Ok(false) => {}
            Err(err) => tracing::warn!(provider = kind.as_str(), error = %err,
                "provider gate not updated after a call; the slot expires with its lease"),
        }
        result
    }

    /// Hands back a slot whose call was not made (the breaker is left as it is); if the
    /// gate cannot be reached, the slot expires with its lease.
    pub async fn give_back(&self, pool: &sqlx::PgPool, admitted: Admitted) {
        if let Err(err) =
            gate::release(pool, admitted.slot, CallOutcome::Neutral, &admitted.limits).await
        {
            tracing::warn!(provider = admitted.kind.as_str(), error = %err,
                "unused provider slot not handed back; it expires with its lease");
        }
    }
}

/// A slot the fleet-wide gate granted for one provider call ([`Pipeline::admit`]).
pub struct Admitted {
    slot: gate::Slot,
    kind: ProviderKind,
    operation: &'static str,
    limits: crate::providers::config::ProviderLimits,
}

/// Loads a generation with its provider; `None` if it no longer exists (e.g. erased).
pub(crate) async fn load_generation(
    pool: &sqlx::PgPool,
    id: Uuid,
) -> Result<Option<(Generation, ProviderKind)>, JobError> {
    let mut conn = pool.acquire().await?;
    let Some(generation) = crate::generation::load(&mut conn, id).await? else {
        return Ok(None);
    };
    let kind = generation
        .provider
        .parse()
        .map_err(|_| JobError::permanent(format!("unknown provider {:?}", generation.provider)))?;
    Ok(Some((generation, kind)))
}

/// The limit group of a provider account's renders (`genq.enqueue_generation` puts each
/// submit job in it).
pub fn render_group(kind: ProviderKind) -> String {
    format!("render:{}", kind.as_str())
}

/// Writes `[providers.limits.NAME] max_rendering` as the limit of each `render:NAME` group.
async fn apply_render_limits(pool: &sqlx::PgPool, config: &ProvidersConfig) -> sqlx::Result<()> {
    for kind in ProviderKind::ALL {
        let max = config
            .limits_for(kind)
            .max_rendering
            .map(|n| i32::try_from(n).unwrap_or(i32::MAX));
        crate::queue::fairness::set_group(pool, &render_group(kind), max).await?;
    }
    Ok(())
}
