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
//!
//! These are the thin axum handlers: headers in, status codes out. Verification material
//! and fal's JWKS cache are in [`crate::webhooks::verify`], every `genq.webhook_events`
//! statement in [`crate::webhooks::inbox`].

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};
use sqlx::PgPool;
use uuid::Uuid;

use super::HttpState;
use crate::providers::signing;
use crate::webhooks::inbox::{self, Event};
use crate::webhooks::verify::timely;
pub use crate::webhooks::Webhooks;

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
    match inbox::store_payment_event(state.daemon.pool(), txn_id, status, &body, &raw).await {
        Ok(result) => reply(P, result, StatusCode::OK),
        Err(err) => {
            tracing::error!(error = %err, %txn_id, "Plisio callback not stored");
            reply(P, "error", StatusCode::SERVICE_UNAVAILABLE)
        }
    }
}

fn parse_id(text: Option<&str>) -> Option<Uuid> {
    text.and_then(|t| Uuid::parse_str(t).ok())
}

/// Stores the event once and enqueues its reconciliation, in one transaction.
async fn store(pool: &PgPool, event: Event<'_>) -> Reply {
    match inbox::store_generation_event(pool, &event).await {
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
