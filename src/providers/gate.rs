//! Fleet-wide provider protection. Every provider call passes this gate, which is one row
//! per provider in Postgres (`genq.provider_acquire` / `genq.provider_release`, migration
//! 0004): an in-flight cap and a token-bucket rate limit that hold across all daemons, and
//! a circuit breaker that opens after repeated failures. A refused call is not an error:
//! the job snoozes for the wait the gate names, spending no attempt.

use std::time::{Duration, Instant};

use sqlx::PgPool;

use super::config::ProviderLimits;
use super::{ProviderError, ProviderKind};

const ACQUIRE: &str =
    "SELECT granted, slot, wait_secs, reason FROM genq.provider_acquire($1, $2, $3, $4, $5)";
const RELEASE: &str = "SELECT genq.provider_release($1, $2, $3, $4, $5)";

/// The gate's answer to a request for a call.
#[derive(Debug, Clone, PartialEq)]
pub enum Admission {
    /// Go ahead; release the slot afterwards.
    Granted(Slot),
    /// Not now: wait this long (circuit open, in-flight cap or rate limit).
    Wait {
        /// How long.
        after: Duration,
        /// Why, for logs.
        reason: String,
    },
}

/// A granted call, to be released with its outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Slot {
    provider: ProviderKind,
    id: i64,
    started: Instant,
}

/// How a call ended, for the circuit breaker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CallOutcome {
    /// The provider answered properly (including a definitive permanent error).
    Success,
    /// The provider failed (5xx, timeout, connection error, ambiguous submit).
    Failure,
    /// Neither (rate limited): leaves the breaker as it is.
    Neutral,
}

impl CallOutcome {
    /// Classifies a call's result.
    pub fn of<T>(result: &Result<T, ProviderError>) -> Self {
        match result {
            Ok(_) | Err(ProviderError::Permanent { .. }) => Self::Success,
            Err(
                ProviderError::Retryable {
                    retry_after: Some(_),
                    ..
                }
                | ProviderError::Busy { .. },
            ) => Self::Neutral,
            Err(ProviderError::Retryable { .. } | ProviderError::Ambiguous { .. }) => Self::Failure,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Self::Success => "success",
            Self::Failure => "failure",
            Self::Neutral => "neutral",
        }
    }
}

/// Asks for one call to `provider`. `lease` bounds how long a slot may stay taken if this
/// daemon dies mid-call (use the request timeout plus a margin).
pub async fn acquire(
    pool: &PgPool,
    provider: ProviderKind,
    limits: &ProviderLimits,
    lease: Duration,
) -> Result<Admission, sqlx::Error> {
    let (granted, slot, wait_secs, reason): (bool, Option<i64>, f64, Option<String>) =
        crate::db::query_as(ACQUIRE)
            .bind(provider.as_str())
            .bind(i32::try_from(limits.max_in_flight).unwrap_or(i32::MAX))
            .bind(limits.rate_per_sec)
            .bind(i32::try_from(limits.burst).unwrap_or(i32::MAX))
            .bind(lease.as_secs_f64())
            .fetch_one(pool)
            .await?;
    Ok(match (granted, slot) {
        (true, Some(id)) => Admission::Granted(Slot {
            provider,
            id,
            started: Instant::now(),
        }),
        _ => Admission::Wait {
            after: Duration::from_secs_f64(wait_secs.clamp(0.05, 3600.0)),
            reason: reason.unwrap_or_else(|| "refused".into()),
        },
    })
}

/// Ends a call and feeds its outcome to the circuit breaker. Returns whether the circuit
/// is open now.
pub async fn release(
    pool: &PgPool,
    slot: Slot,
    outcome: CallOutcome,
    limits: &ProviderLimits,
) -> Result<bool, sqlx::Error> {
    let open: bool = crate::db::query_scalar(RELEASE)
        .bind(slot.provider.as_str())
        .bind(slot.id)
        .bind(outcome.as_str())
        .bind(i32::try_from(limits.failure_threshold).unwrap_or(i32::MAX))
        .bind(limits.cooldown.as_secs_f64())
        .fetch_one(pool)
        .await?;
    metrics::gauge!(crate::metrics::PROVIDER_CIRCUIT_OPEN, "provider" => slot.provider.as_str())
        .set(if open { 1.0 } else { 0.0 });
    metrics::histogram!(crate::metrics::PROVIDER_LATENCY, "provider" => slot.provider.as_str())
        .record(slot.started.elapsed().as_secs_f64());
    Ok(open)
}

// Operators' view and hand control of the gates (the console's Providers page).
const GATES: &str = r#"
SELECT g.provider, g.tokens, g.consecutive_failures, g.open_until,
       g.open_until IS NOT NULL AND g.open_until > now() AS open,
       g.updated_at,
       (SELECT count(*) FROM genq.provider_calls c
         WHERE c.provider = g.provider AND c.expires_at >= now()) AS in_flight
  FROM genq.provider_gates g ORDER BY g.provider
"#;

const OPEN_CIRCUIT: &str = r#"
UPDATE genq.provider_gates SET open_until = now() + make_interval(secs => $2), updated_at = now()
 WHERE provider = $1
"#;

const CLOSE_CIRCUIT: &str = r#"
UPDATE genq.provider_gates SET open_until = NULL, consecutive_failures = 0, updated_at = now()
 WHERE provider = $1
"#;

/// One provider's gate as operators see it.
#[derive(Debug, Clone, serde::Serialize, sqlx::FromRow)]
pub struct GateRow {
    /// Provider.
    pub provider: String,
    /// Rate-limit tokens at the last refill.
    pub tokens: f64,
    /// Failures in a row (the breaker opens past its threshold).
    pub consecutive_failures: i32,
    /// Until when calls are refused, if the circuit opened.
    pub open_until: Option<chrono::DateTime<chrono::Utc>>,
    /// Whether the circuit is open now.
    pub open: bool,
    /// Last change (since when the circuit is in its state, near enough).
    pub updated_at: chrono::DateTime<chrono::Utc>,
    /// Calls holding a slot now.
    pub in_flight: i64,
}

/// Every provider's gate.
pub async fn gates(pool: &PgPool) -> Result<Vec<GateRow>, sqlx::Error> {
    crate::db::query_as(GATES).fetch_all(pool).await
}

/// Opens `provider`'s circuit by hand for `secs` seconds; false if it has no gate yet.
pub async fn open_circuit(pool: &PgPool, provider: &str, secs: f64) -> Result<bool, sqlx::Error> {
    let done = crate::db::query(OPEN_CIRCUIT)
        .bind(provider)
        .bind(secs)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Closes `provider`'s circuit by hand (failures forgotten); false if it has no gate.
pub async fn close_circuit(pool: &PgPool, provider: &str) -> Result<bool, sqlx::Error> {
    let done = crate::db::query(CLOSE_CIRCUIT)
        .bind(provider)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() == 1)
}
