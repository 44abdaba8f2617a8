//! AI providers (fal.ai, BytePlus ModelArk, Replicate) behind one trait (the fake provider
//! that serves their dialects on loopback is a dev tool: `crate::dev::fake_provider`).
//!
//! The trait is shaped by what the generation pipeline must decide, not by any one vendor:
//! every failure says whether to retry ([`ProviderError`]), a submit whose outcome is unknown
//! is [`ProviderError::Ambiguous`] (no provider documents idempotency keys, so resubmitting
//! could create a second paid job), and [`Provider::find_submitted`] looks the request up
//! afterwards where the vendor can list requests. For that lookup every adapter makes sure
//! the generation id is part of the webhook/callback URL it sends (see [`tag_webhook_url`]).
//!
//! Requests carry only the model input: never a user id, e-mail or anything else that
//! identifies the person (privacy promise "data sent to providers only to produce the
//! output"). Facts about each vendor and the decisions taken on top of them are in
//! `docs/providers.md`.

pub mod byteplus;
pub mod config;
pub mod fal;
pub mod gate;
pub mod http;
mod outputs;
pub mod progress;
pub mod replicate;
pub mod signing;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use config::{Endpoint, ProviderLimits, ProvidersConfig};
pub use progress::Progress;

/// Which dialect. Database spelling: `"fal"`, `"byteplus"`, `"replicate"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// fal.ai queue API.
    Fal,
    /// BytePlus ModelArk (Seedance) tasks; Volcengine Ark speaks the same API.
    BytePlus,
    /// Replicate predictions.
    Replicate,
}

impl ProviderKind {
    /// Every kind, in a fixed order.
    pub const ALL: [ProviderKind; 3] = [Self::Fal, Self::BytePlus, Self::Replicate];

    /// The database and configuration spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Fal => "fal",
            Self::BytePlus => "byteplus",
            Self::Replicate => "replicate",
        }
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A provider name that is not one of `fal`, `byteplus`, `replicate`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown provider {0:?} (expected fal, byteplus or replicate)")]
pub struct UnknownProvider(pub String);

impl FromStr for ProviderKind {
    type Err = UnknownProvider;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "fal" => Ok(Self::Fal),
            "byteplus" => Ok(Self::BytePlus),
            "replicate" => Ok(Self::Replicate),
            other => Err(UnknownProvider(other.to_string())),
        }
    }
}

/// One generation to send to a provider.
#[derive(Debug, Clone, PartialEq)]
pub struct SubmitRequest {
    /// Our generation id. It travels only inside the webhook URL, never in the input.
    pub generation_id: uuid::Uuid,
    /// The provider's model id (fal `owner/app[/path]`, BytePlus model or endpoint id,
    /// Replicate `owner/name`, `owner/name:version` or a 64-hex version id).
    pub model: String,
    /// The model input, sent as it is (BytePlus: see [`byteplus`] for how `content` is built).
    pub input: serde_json::Value,
    /// Where the provider should call back. Adapters add `generation_id=<uuid>` to it when
    /// it does not already contain the id. `None`: no callback (polling only), and then
    /// BytePlus and Replicate cannot reconcile an ambiguous submit either.
    pub webhook_url: Option<String>,
}

/// A request the provider accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct Submitted {
    /// The provider's id for it.
    pub request_id: String,
    /// What later calls need besides the id (fal: `status_url`, `response_url`,
    /// `cancel_url`); stored in `genq.generations.provider_meta` and passed back verbatim.
    pub meta: serde_json::Value,
}

/// Where a request stands at the provider.
#[derive(Debug, Clone, PartialEq)]
pub enum RemoteStatus {
    /// Accepted, waiting for capacity (or booting), with what the provider said about it.
    Queued(Progress),
    /// Rendering, with what the provider said about it.
    Running(Progress),
    /// Done, with at least one output URL (the first is the primary output). The URLs
    /// expire soon (Replicate 1 h, fal about 1 h, BytePlus 24 h): copy them at once.
    Succeeded {
        /// The outputs, primary first.
        outputs: Vec<RemoteOutput>,
    },
    /// Ended without an output (model error, moderation of the output, ...). Final.
    Failed {
        /// The provider's reason, short and without the input.
        reason: String,
    },
    /// Cancelled before it produced anything. Final.
    Cancelled,
    /// The provider gave up on it or no longer has its result (BytePlus `expired`,
    /// Replicate `aborted` or `data_removed`, fal result 404/410). Final.
    Expired {
        /// What expired.
        reason: String,
    },
}

impl RemoteStatus {
    /// Whether the request can still change.
    pub fn is_final(&self) -> bool {
        !matches!(self, Self::Queued(_) | Self::Running(_))
    }
}

/// One output file of a finished request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteOutput {
    /// Where to download it (short-lived).
    pub url: String,
    /// MIME type when the provider said it, else guessed from the URL's extension.
    pub content_type: Option<String>,
}

/// What a cancel call achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The request is cancelled and will not be billed.
    Cancelled,
    /// Too late: it had already finished (it may have succeeded).
    AlreadyFinished,
    /// The provider does not know the request (never created, or long gone).
    NotFound,
    /// A cancellation signal was sent to a running request (fal); it may still finish.
    Requested,
}

/// A failed provider call, saying what to do next. Messages name the provider and the
/// operation, carry the provider's error code and message (truncated, never the input),
/// and never contain an API key.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ProviderError {
    /// Try again later: 429, 5xx, connection refused, timeouts of reads, BytePlus
    /// `InvalidEndpoint.ClosedEndpoint`, malformed answers to reads, unknown statuses.
    #[error("{message}")]
    Retryable {
        /// What happened.
        message: String,
        /// The provider's own wait (`Retry-After`, Replicate's "Expected available in N
        /// seconds"); `None` means use the normal backoff.
        retry_after: Option<Duration>,
    },
    /// Retrying cannot help: validation (400/422), moderation, auth (401/403), not found,
    /// unknown model, or an operation the provider does not support.
    #[error("{message}")]
    Permanent {
        /// What happened.
        message: String,
    },
    /// The provider refused a submit because the account is at capacity (BytePlus past its
    /// queued-task cap): nothing was created and nothing is wrong with the request, so it
    /// waits and is sent again later without counting as a failed attempt.
    #[error("{message}")]
    Busy {
        /// What happened.
        message: String,
        /// How long to wait before sending it again.
        retry_after: Duration,
    },
    /// A submit was sent and may have been accepted (timeout or dropped connection after
    /// sending, unreadable success answer). Never resubmit blindly: reconcile with
    /// [`Provider::find_submitted`] first.
    #[error("{message}")]
    Ambiguous {
        /// What happened.
        message: String,
    },
}

impl ProviderError {
    /// A retryable error without a provider-given delay.
    pub fn retryable(message: impl Into<String>) -> Self {
        Self::Retryable {
            message: message.into(),
            retry_after: None,
        }
    }

    /// A permanent error.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self::Permanent {
            message: message.into(),
        }
    }

    /// An ambiguous submit.
    pub fn ambiguous(message: impl Into<String>) -> Self {
        Self::Ambiguous {
            message: message.into(),
        }
    }

    /// Whether a later identical call may succeed. Ambiguous is not retryable: a submit must
    /// be reconciled first.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Retryable { .. } | Self::Busy { .. })
    }

    /// Whether this is an ambiguous submit.
    pub fn is_ambiguous(&self) -> bool {
        matches!(self, Self::Ambiguous { .. })
    }

    /// The provider's requested wait before the next call, if it gave one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Retryable { retry_after, .. } => *retry_after,
            Self::Busy { retry_after, .. } => Some(*retry_after),
            _ => None,
        }
    }

    /// The message.
    pub fn message(&self) -> &str {
        match self {
            Self::Retryable { message, .. }
            | Self::Busy { message, .. }
            | Self::Permanent { message }
            | Self::Ambiguous { message } => message,
        }
    }
}

/// One provider's API.
#[async_trait::async_trait]
pub trait Provider: Send + Sync {
    /// Which dialect this is.
    fn kind(&self) -> ProviderKind;

    /// Sends a generation. `Ambiguous` when it may have been accepted without us knowing.
    async fn submit(&self, req: &SubmitRequest) -> Result<Submitted, ProviderError>;

    /// Where the request stands. For fal, `COMPLETED` is followed by a result fetch: an
    /// error result is [`RemoteStatus::Failed`], a missing one [`RemoteStatus::Expired`].
    /// Never `Ambiguous` (reads are idempotent).
    async fn status(
        &self,
        request_id: &str,
        meta: &serde_json::Value,
    ) -> Result<RemoteStatus, ProviderError>;

    /// Asks the provider to stop the request. A refusal (BytePlus: running tasks) is a
    /// `Permanent` error; the request then runs to its end.
    async fn cancel(
        &self,
        request_id: &str,
        meta: &serde_json::Value,
    ) -> Result<CancelOutcome, ProviderError>;

    /// After an ambiguous submit: the request this generation created at or after `since`,
    /// if any. `Ok(None)` is a proof that it never arrived (the whole window was searched),
    /// so submitting again is safe. `Err(Permanent)` when the provider cannot be searched
    /// (fal has no list API; no webhook URL carried the generation id; the window was too
    /// long to search): then the submit must never be repeated.
    async fn find_submitted(
        &self,
        req: &SubmitRequest,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<Submitted>, ProviderError>;
}

/// Makes sure a webhook URL names the generation: appends `generation_id=<uuid>` as a
/// query parameter unless the URL already contains the id. Reconciliation of ambiguous
/// submits matches on it, and the webhook handler learns which generation a call is for.
pub fn tag_webhook_url(url: &str, generation_id: uuid::Uuid) -> String {
    let id = generation_id.to_string();
    if url.contains(&id) {
        return url.to_string();
    }
    match url::Url::parse(url) {
        Ok(mut parsed) => {
            parsed.query_pairs_mut().append_pair("generation_id", &id);
            parsed.into()
        }
        Err(_) => {
            let sep = if url.contains('?') { '&' } else { '?' };
            format!("{url}{sep}generation_id={id}")
        }
    }
}

/// The three adapters, built once from configuration and shared by every job.
#[derive(Clone)]
pub struct Providers {
    fal: Arc<dyn Provider>,
    byteplus: Arc<dyn Provider>,
    replicate: Arc<dyn Provider>,
}

impl fmt::Debug for Providers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The adapters hold API keys; show nothing of them.
        f.debug_struct("Providers").finish_non_exhaustive()
    }
}

impl Providers {
    /// Builds the adapters: base URLs and the request timeout from `cfg`, each API key from
    /// its `api_key_file` if set, else from the environment variable `api_key_env`. A
    /// missing key is not an error (a daemon may use one provider only, and the fake
    /// accepts requests without one): that adapter sends no `Authorization` header and the
    /// real provider answers 401, a permanent error naming the variable to set. An
    /// unreadable key file is an error.
    pub fn from_config(cfg: &ProvidersConfig) -> anyhow::Result<Self> {
        let client = http::client(cfg.request_timeout)?;
        let key = |kind: ProviderKind, endpoint: &Endpoint| {
            http::ApiKey::load(kind, endpoint).map_err(|e| anyhow::anyhow!("providers.{kind}: {e}"))
        };
        Ok(Self {
            fal: Arc::new(fal::Fal::new(
                client.clone(),
                &cfg.fal.base_url,
                key(ProviderKind::Fal, &cfg.fal)?,
            )?),
            byteplus: Arc::new(byteplus::BytePlus::new(
                client.clone(),
                &cfg.byteplus.base_url,
                key(ProviderKind::BytePlus, &cfg.byteplus)?,
            )?),
            replicate: Arc::new(replicate::Replicate::new(
                client,
                &cfg.replicate.base_url,
                key(ProviderKind::Replicate, &cfg.replicate)?,
            )?),
        })
    }

    /// Uses the given adapters (tests, or a wrapper adding behaviour).
    pub fn from_parts(
        fal: Arc<dyn Provider>,
        byteplus: Arc<dyn Provider>,
        replicate: Arc<dyn Provider>,
    ) -> Self {
        Self {
            fal,
            byteplus,
            replicate,
        }
    }

    /// The adapter for `kind`.
    pub fn get(&self, kind: ProviderKind) -> Arc<dyn Provider> {
        match kind {
            ProviderKind::Fal => self.fal.clone(),
            ProviderKind::BytePlus => self.byteplus.clone(),
            ProviderKind::Replicate => self.replicate.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_their_spelling() {
        for kind in ProviderKind::ALL {
            assert_eq!(kind.as_str().parse::<ProviderKind>().unwrap(), kind);
            assert_eq!(kind.to_string(), kind.as_str());
            let json = serde_json::to_string(&kind).unwrap();
            assert_eq!(json, format!("\"{}\"", kind.as_str()));
        }
        assert!("BytePlus".parse::<ProviderKind>().is_err());
    }

    #[test]
    fn webhook_urls_always_carry_the_generation_id() {
        let id = uuid::Uuid::from_u128(7);
        let plain = tag_webhook_url("https://d.example/webhooks/replicate", id);
        assert_eq!(
            plain,
            format!("https://d.example/webhooks/replicate?generation_id={id}")
        );
        let with_query = tag_webhook_url("https://d.example/w?token=abc", id);
        assert_eq!(
            with_query,
            format!("https://d.example/w?token=abc&generation_id={id}")
        );
        let already = format!("https://d.example/w?generation_id={id}");
        assert_eq!(tag_webhook_url(&already, id), already);
    }

    #[test]
    fn errors_say_whether_to_retry() {
        let e = ProviderError::Retryable {
            message: "x".into(),
            retry_after: Some(Duration::from_secs(2)),
        };
        assert!(e.is_retryable());
        assert_eq!(e.retry_after(), Some(Duration::from_secs(2)));
        assert!(!ProviderError::ambiguous("x").is_retryable());
        assert!(ProviderError::ambiguous("x").is_ambiguous());
        assert!(!ProviderError::permanent("x").is_retryable());
        assert_eq!(ProviderError::permanent("boom").to_string(), "boom");
    }
}
