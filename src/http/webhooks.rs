//! Inbound provider callbacks: `POST /webhooks/fal`, `POST /webhooks/replicate`,
//! `POST /webhooks/byteplus/{generation_id}/{token}`.
//!
//! Each request is verified on its raw bytes before anything touches the database (a
//! forged request costs no database round trip): fal's Ed25519 signature against the keys
//! of its JWKS (cached, fetched again on a signature no cached key verifies), Replicate's
//! Standard Webhooks HMAC, BytePlus's per-generation token in the URL. Secrets are compared
//! in constant time. A verified callback is stored once in `genq.webhook_events` and its
//! `generation.reconcile` job enqueued in the same transaction; then 200. A duplicate is
//! 200 with nothing new, a callback for an unknown generation is 200 and kept as an orphan,
//! a bad signature (or stale timestamp, wrong fal user) is 401 with nothing stored, a body
//! over `[webhooks] max_body_bytes` is 413.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio::sync::Mutex;
use uuid::Uuid;

use super::HttpState;
use crate::config::WebhooksConfig;
use crate::jobs::generation::{reconcile, record};
use crate::outbound;
use crate::providers::signing;

/// Verification material, built once per daemon.
pub struct Webhooks {
    config: WebhooksConfig,
    replicate_secret: Option<String>,
    byteplus_secret: Option<Vec<u8>>,
    plisio_secret: Option<Vec<u8>>,
    jwks: JwksCache,
}

impl Webhooks {
    /// Largest accepted callback body (`webhooks.max_body_bytes`).
    pub fn max_body_bytes(&self) -> usize {
        self.config.max_body_bytes
    }

    /// From `[webhooks]`, secrets read from the environment variables it names.
    pub fn from_config(config: &WebhooksConfig) -> anyhow::Result<Self> {
        Self::with_secrets(
            config,
            config.replicate_secret(),
            config.byteplus_secret().map(String::into_bytes),
        )
        .map(|w| w.with_plisio_secret(config.plisio_secret().map(String::into_bytes)))
    }

    /// Sets Plisio's secret key (`None`: Plisio callbacks are refused).
    pub fn with_plisio_secret(mut self, secret: Option<Vec<u8>>) -> Self {
        self.plisio_secret = secret;
        self
    }

    /// From `[webhooks]` with the secrets given (tests, embedding).
    pub fn with_secrets(
        config: &WebhooksConfig,
        replicate_secret: Option<String>,
        byteplus_secret: Option<Vec<u8>>,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            config: config.clone(),
            replicate_secret,
            byteplus_secret,
            plisio_secret: None,
            jwks: JwksCache::new(config)?,
        })
    }
}

/// fal's public keys, fetched from the JWKS URL and kept for the TTL.
struct JwksCache {
    url: String,
    ttl: Duration,
    refetch_after: Duration,
    http: reqwest::Client,
    keys: Mutex<Option<(Instant, Arc<Vec<String>>)>>,
}

impl JwksCache {
    fn new(config: &WebhooksConfig) -> anyhow::Result<Self> {
        Ok(Self {
            url: config.fal_jwks_url.clone(),
            ttl: config.fal_jwks_ttl,
            refetch_after: config.fal_jwks_refetch_after,
            http: crate::outbound::client::api(Some(Duration::from_secs(10)))?,
            keys: Mutex::new(None),
        })
    }

    /// The cached keys, fetched when missing or older than the TTL (or, with `force`, when
    /// older than `refetch_after`). A failed fetch keeps serving the previous keys.
    async fn keys(&self, force: bool) -> Result<Arc<Vec<String>>, String> {
        let mut guard = self.keys.lock().await;
        if let Some((at, keys)) = guard.as_ref() {
            let age = at.elapsed();
            let fresh = if force {
                age < self.refetch_after
            } else {
                age < self.ttl
            };
            if fresh {
                return Ok(keys.clone());
            }
        }
        match self.fetch().await {
            Ok(keys) => {
                let keys = Arc::new(keys);
                *guard = Some((Instant::now(), keys.clone()));
                Ok(keys)
            }
            Err(err) => match guard.as_ref() {
                Some((_, keys)) => {
                    tracing::warn!(error = %err, "fal JWKS fetch failed; using the cached keys");
                    Ok(keys.clone())
                }
                None => Err(err),
            },
        }
    }

    async fn fetch(&self) -> Result<Vec<String>, String> {
        // The body is read under a cap: the JWKS host must not be able to fill our memory.
        let reply = self
            .http
            .get(&self.url)
            .send()
            .await
            .map_err(|e| format!("fal JWKS {}: {}", self.url, outbound::errors::describe(e)))?;
        if !reply.status().is_success() {
            return Err(format!("fal JWKS {}: HTTP {}", self.url, reply.status()));
        }
        let body = outbound::read_capped(reply, outbound::body::SMALL_BODY_LIMIT)
            .await
            .map_err(|e| format!("fal JWKS {}: {e}", self.url))?;
        let body: Value = serde_json::from_slice(&body)
            .map_err(|e| format!("fal JWKS {}: not JSON: {e}", self.url))?;
        Ok(body["keys"]
            .as_array()
            .map(|keys| {
                keys.iter()
                    .filter_map(|k| k["x"].as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// Whether any key verifies `signature`; on none, fetches once more (a rotation).
    async fn verify(&self, message: &[u8], signature: &str) -> Result<bool, String> {
        let keys = self.keys(false).await?;
        if keys
            .iter()
            .any(|x| signing::fal_verify(x, message, signature))
        {
            return Ok(true);
        }
        let again = self.keys(true).await?;
        if Arc::ptr_eq(&keys, &again) {
            return Ok(false);
        }
        Ok(again
            .iter()
            .any(|x| signing::fal_verify(x, message, signature)))
    }
}

/// The webhook routes, with their own body limit.
pub(crate) fn routes(max_body_bytes: usize) -> Router<HttpState> {
    Router::new()
        .route("/webhooks/fal", post(fal))
        .route("/webhooks/replicate", post(replicate))
        .route("/webhooks/byteplus/{generation_id}/{token}", post(byteplus))
        .route("/webhooks/plisio", post(plisio))
        .layer(DefaultBodyLimit::max(max_body_bytes))
}

type Reply = (StatusCode, Json<Value>);

fn reply(provider: &'static str, result: &'static str, status: StatusCode) -> Reply {
    metrics::counter!(crate::metrics::WEBHOOKS_RECEIVED, "provider" => provider, "result" => result)
        .increment(1);
    (status, Json(json!({ "result": result })))
}

fn rejected(provider: &'static str, why: &str) -> Reply {
    tracing::warn!(provider, %why, "webhook refused");
    reply(provider, "bad_signature", StatusCode::UNAUTHORIZED)
}

/// Reads the body, or the reply for one that is too large or unreadable.
fn body(provider: &'static str, body: Result<Bytes, BytesRejection>) -> Result<Bytes, Reply> {
    body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            reply(provider, "too_large", StatusCode::PAYLOAD_TOO_LARGE)
        } else {
            reply(provider, "error", e.status())
        }
    })
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Whether a signed Unix timestamp is within the tolerance of now.
fn timely(timestamp: &str, tolerance: Duration) -> bool {
    let Ok(ts) = timestamp.trim().parse::<i64>() else {
        return false;
    };
    let now = chrono::Utc::now().timestamp();
    (now - ts).unsigned_abs() <= tolerance.as_secs()
}

/// What every endpoint does first: read the body within the size limit (413 otherwise),
/// then make sure webhooks are configured (503 otherwise).
fn accept<'a>(
    state: &'a HttpState,
    provider: &'static str,
    raw: Result<Bytes, BytesRejection>,
) -> Result<(Bytes, &'a Webhooks), Reply> {
    let raw = body(provider, raw)?;
    Ok((raw, webhooks(state, provider)?))
}

fn webhooks<'a>(state: &'a HttpState, provider: &'static str) -> Result<&'a Webhooks, Reply> {
    state
        .webhooks
        .as_deref()
        .ok_or_else(|| reply(provider, "disabled", StatusCode::SERVICE_UNAVAILABLE))
}

#[derive(Debug, Deserialize)]
struct GenerationQuery {
    generation_id: Option<String>,
}

async fn fal(
    State(state): State<HttpState>,
    Query(query): Query<GenerationQuery>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Reply {
    const P: &str = "fal";
    let (raw, hooks) = match accept(&state, P, raw) {
        Ok(accepted) => accepted,
        Err(r) => return r,
    };
    if hooks.config.fal_user_id.is_empty() {
        tracing::warn!("fal callback refused: [webhooks] fal_user_id is not configured");
        return reply(P, "disabled", StatusCode::SERVICE_UNAVAILABLE);
    }
    let (Some(request_id), Some(user_id), Some(timestamp), Some(signature)) = (
        header(&headers, "x-fal-webhook-request-id"),
        header(&headers, "x-fal-webhook-user-id"),
        header(&headers, "x-fal-webhook-timestamp"),
        header(&headers, "x-fal-webhook-signature"),
    ) else {
        return rejected(P, "missing X-Fal-Webhook-* headers");
    };
    if user_id != hooks.config.fal_user_id {
        return rejected(P, "X-Fal-Webhook-User-Id is not ours");
    }
    if !timely(timestamp, hooks.config.tolerance) {
        return rejected(P, "timestamp outside the tolerance");
    }
    let message = signing::fal_message(request_id, user_id, timestamp, &raw);
    match hooks.jwks.verify(&message, signature).await {
        Ok(true) => {}
        Ok(false) => return rejected(P, "no fal key verifies the signature"),
        Err(err) => {
            tracing::error!(error = %err, "fal callback cannot be verified: no JWKS");
            return reply(P, "error", StatusCode::SERVICE_UNAVAILABLE);
        }
    }
    let status = serde_json::from_slice::<Value>(&raw)
        .ok()
        .and_then(|v| v["status"].as_str().map(str::to_string))
        .unwrap_or_default();
    let event = Event {
        provider: P,
        dedupe_key: format!("{request_id}:{status}"),
        generation_id: parse_id(query.generation_id.as_deref()),
        request_id: Some(request_id.to_string()),
        body: &raw,
    };
    store(state.daemon.pool(), event).await
}

async fn replicate(
    State(state): State<HttpState>,
    Query(query): Query<GenerationQuery>,
    headers: HeaderMap,
    raw: Result<Bytes, BytesRejection>,
) -> Reply {
    const P: &str = "replicate";
    let (raw, hooks) = match accept(&state, P, raw) {
        Ok(accepted) => accepted,
        Err(r) => return r,
    };
    let Some(secret) = hooks.replicate_secret.as_deref() else {
        tracing::warn!("Replicate callback refused: no secret (REPLICATE_WEBHOOK_SECRET)");
        return reply(P, "disabled", StatusCode::SERVICE_UNAVAILABLE);
    };
    let (Some(id), Some(timestamp), Some(signatures)) = (
        header(&headers, "webhook-id"),
        header(&headers, "webhook-timestamp"),
        header(&headers, "webhook-signature"),
    ) else {
        return rejected(P, "missing webhook-* headers");
    };
    if !timely(timestamp, hooks.config.tolerance) {
        return rejected(P, "timestamp outside the tolerance");
    }
    if !signing::standard_webhooks_verify(secret, id, timestamp, &raw, signatures) {
        return rejected(P, "no signature matches");
    }
    let request_id = serde_json::from_slice::<Value>(&raw)
        .ok()
        .and_then(|v| v["id"].as_str().map(str::to_string));
    let event = Event {
        provider: P,
        dedupe_key: id.to_string(),
        generation_id: parse_id(query.generation_id.as_deref()),
        request_id,
        body: &raw,
    };
    store(state.daemon.pool(), event).await
}

async fn byteplus(
    State(state): State<HttpState>,
    Path((generation_id, token)): Path<(String, String)>,
    raw: Result<Bytes, BytesRejection>,
) -> Reply {
    const P: &str = "byteplus";
    let (raw, hooks) = match accept(&state, P, raw) {
        Ok(accepted) => accepted,
        Err(r) => return r,
    };
    let Some(secret) = hooks.byteplus_secret.as_deref() else {
        tracing::warn!("BytePlus callback refused: no token key (GENQ_BYTEPLUS_WEBHOOK_SECRET)");
        return reply(P, "disabled", StatusCode::SERVICE_UNAVAILABLE);
    };
    if !signing::callback_token_valid(secret, &generation_id, &token) {
        return rejected(P, "bad callback token");
    }
    // The body is only a hint; it names the task and its status for the dedupe key.
    let hint = serde_json::from_slice::<Value>(&raw).unwrap_or(Value::Null);
    let task = hint["id"].as_str().unwrap_or("").to_string();
    let status = hint["status"].as_str().unwrap_or("").to_string();
    let event = Event {
        provider: P,
        dedupe_key: format!("{generation_id}:{task}:{status}"),
        generation_id: parse_id(Some(&generation_id)),
        request_id: (!task.is_empty()).then_some(task),
        body: &raw,
    };
    store(state.daemon.pool(), event).await
}

/// Plisio (`json=true` callbacks): `verify_hash` checked before anything else; the
/// callback is stored once per `(txn_id, status)` and applied to the payment in the same
/// transaction (no job: nothing needs fetching).
async fn plisio(State(state): State<HttpState>, raw: Result<Bytes, BytesRejection>) -> Reply {
    const P: &str = "plisio";
    let (raw, hooks) = match accept(&state, P, raw) {
        Ok(accepted) => accepted,
        Err(r) => return r,
    };
    let Some(secret) = hooks.plisio_secret.as_deref() else {
        tracing::warn!("Plisio callback refused: no secret key (PLISIO_SECRET_KEY)");
        return reply(P, "disabled", StatusCode::SERVICE_UNAVAILABLE);
    };
    if !crate::payments::plisio_verify(secret, &raw) {
        return rejected(P, "verify_hash does not match");
    }
    let body: Value = serde_json::from_slice(&raw).unwrap_or(Value::Null);
    let (Some(txn_id), Some(status)) = (body["txn_id"].as_str(), body["status"].as_str()) else {
        return reply(P, "error", StatusCode::BAD_REQUEST);
    };
    match try_store_payment(state.daemon.pool(), txn_id, status, &body, &raw).await {
        Ok(result) => reply(P, result, StatusCode::OK),
        Err(err) => {
            tracing::error!(error = %err, %txn_id, "Plisio callback not stored");
            reply(P, "error", StatusCode::SERVICE_UNAVAILABLE)
        }
    }
}

async fn try_store_payment(
    pool: &PgPool,
    txn_id: &str,
    status: &str,
    body: &Value,
    raw: &[u8],
) -> Result<&'static str, sqlx::Error> {
    let mut tx = crate::db::begin(pool).await?;
    // An unknown invoice is kept as an orphan under its own key, so a redelivery after
    // genq.record_invoice is applied, not taken for a duplicate.
    let known: bool =
        crate::db::query_scalar("SELECT EXISTS (SELECT 1 FROM genq.payments WHERE txn_id = $1)")
            .bind(txn_id)
            .fetch_one(&mut *tx)
            .await?;
    let prefix = if known { "" } else { "orphan:" };
    let inserted: Option<i64> = crate::db::query_scalar(
        "INSERT INTO genq.webhook_events (provider, dedupe_key, request_id, orphan, body)
         VALUES ('plisio', $4 || $1 || ':' || $2, $1, NOT $5, $3)
         ON CONFLICT (provider, dedupe_key) DO NOTHING RETURNING id",
    )
    .bind(txn_id)
    .bind(status)
    .bind(raw)
    .bind(prefix)
    .bind(known)
    .fetch_optional(&mut *tx)
    .await?;
    if !known {
        tx.commit().await?;
        return Ok("orphan");
    }
    let Some(event_id) = inserted else {
        return Ok("duplicate");
    };
    let result = crate::payments::record(&mut tx, txn_id, status, body).await?;
    crate::db::query("UPDATE genq.webhook_events SET processed_at = now() WHERE id = $1")
        .bind(event_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(result)
}

fn parse_id(text: Option<&str>) -> Option<Uuid> {
    text.and_then(|t| Uuid::parse_str(t).ok())
}

/// A verified callback.
struct Event<'a> {
    provider: &'static str,
    dedupe_key: String,
    generation_id: Option<Uuid>,
    request_id: Option<String>,
    body: &'a [u8],
}

const INSERT_EVENT: &str = r#"
INSERT INTO genq.webhook_events (provider, dedupe_key, generation_id, request_id, orphan, body)
SELECT $1, $2, $3, $4, NOT EXISTS (SELECT 1 FROM genq.generations WHERE id = $3), $5
ON CONFLICT (provider, dedupe_key) DO NOTHING
RETURNING id, orphan
"#;

/// Stores the event once and enqueues its reconciliation, in one transaction.
async fn store(pool: &PgPool, event: Event<'_>) -> Reply {
    match try_store(pool, &event).await {
        Ok(result) => {
            let status = StatusCode::OK;
            reply(event.provider, result, status)
        }
        Err(err) => {
            tracing::error!(provider = event.provider, error = %err, "webhook not stored");
            // Not acknowledged: the provider delivers it again.
            reply(event.provider, "error", StatusCode::SERVICE_UNAVAILABLE)
        }
    }
}

async fn try_store(pool: &PgPool, event: &Event<'_>) -> Result<&'static str, sqlx::Error> {
    let mut tx = crate::db::begin(pool).await?;
    let inserted: Option<(i64, bool)> = crate::db::query_as(INSERT_EVENT)
        .bind(event.provider)
        .bind(&event.dedupe_key)
        .bind(event.generation_id)
        .bind(&event.request_id)
        .bind(event.body)
        .fetch_optional(&mut *tx)
        .await?;
    let result = match inserted {
        None => "duplicate",
        Some((_, true)) => "orphan",
        Some((event_id, false)) => {
            let id = event.generation_id.expect("not an orphan");
            let job_id = record::enqueue_follow_up(&mut tx, reconcile::KIND, id, 0.0).await?;
            crate::db::query("UPDATE genq.webhook_events SET job_id = $2 WHERE id = $1")
                .bind(event_id)
                .bind(job_id)
                .execute(&mut *tx)
                .await?;
            "accepted"
        }
    };
    tx.commit().await?;
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_within_tolerance() {
        let now = chrono::Utc::now().timestamp();
        let t = Duration::from_secs(300);
        assert!(timely(&now.to_string(), t));
        assert!(timely(&(now - 299).to_string(), t));
        assert!(timely(&(now + 299).to_string(), t));
        assert!(!timely(&(now - 301).to_string(), t));
        assert!(!timely(&(now + 301).to_string(), t));
        assert!(!timely("soon", t));
    }
}
