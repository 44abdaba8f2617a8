//! Webhooks: when a job that was given a callback URL reaches a final state, the fake POSTs
//! it in the provider's shape and signed as the provider signs. A failed delivery is
//! retried on the provider's schedule when `webhook_retry_scale` is above 0 (see
//! `redelivery.rs`); at 0 (the library default) it is sent once, which keeps tests of lost
//! webhooks simple — `POST /_fake/webhooks/replay` redelivers on demand.
//!
//! - fal: body `{request_id, gateway_request_id, status: OK|ERROR, payload, error,
//!   payload_error}`; headers `X-Fal-Webhook-Request-Id`, `-User-Id`, `-Timestamp` and
//!   `-Signature`: hex Ed25519 over [`signing::fal_message`], with a key derived from the
//!   seed and listed in the JWKS at `GET /fal/.well-known/jwks.json`.
//! - BytePlus: the task, no signature (as BytePlus).
//! - Replicate: the prediction, signed with Standard Webhooks (`webhook-id`,
//!   `webhook-timestamp`, `webhook-signature`) with the secret served at
//!   `GET /replicate/v1/webhooks/default/secret`.
//!
//! Control (`/_fake/...`): rotate fal's key, sign with a key missing from the JWKS, rotate
//! Replicate's secret, replay a job's final webhook, send stale timestamps, refuse the
//! next deliveries.

use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State as AxState;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine as _;
use ed25519_dalek::{Signer, SigningKey};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::redelivery::deliver_with_retries;
use super::state::{Job, Shared};
use super::{byteplus, fal, replicate, FakeConfig};
use crate::providers::{signing, ProviderKind};

/// Longest sleep between looks at a job, so a cancel is reported soon after it happens.
const LOOK_EVERY: Duration = Duration::from_millis(250);

/// fal user id the fake signs for unless configured otherwise.
pub const DEFAULT_FAL_USER_ID: &str = "fake-fal-user";

/// Replicate webhook secret the fake signs with unless configured otherwise (32 bytes).
pub const DEFAULT_REPLICATE_WEBHOOK_SECRET: &str =
    "whsec_Z2VucS1mYWtlLXJlcGxpY2F0ZS1ob29rLXNlY3JldCE=";

/// Most deliveries one replay request may ask for.
const MAX_REPLAYS: u32 = 100;

/// Keys, secrets and the one-shot modes of webhook signing.
pub(super) struct Signing(Mutex<SigningState>);

struct SigningState {
    seed: u64,
    fal_user_id: String,
    /// Index of the current fal key; the JWKS lists it and the one before it.
    fal_key: u32,
    /// fal deliveries left to sign with a key that no JWKS lists.
    fal_unknown: u32,
    /// Replicate secrets, oldest first; the last is current. After a rotation the last
    /// two both sign (`webhook-signature: v1,<new> v1,<old>`).
    replicate_secrets: Vec<String>,
    /// Seconds to take off the timestamp, and how many signed deliveries get it.
    stale: (i64, u32),
}

/// What one delivery sends.
struct Signed {
    headers: Vec<(&'static str, String)>,
}

impl Signing {
    pub fn new(cfg: &FakeConfig) -> Self {
        Self(Mutex::new(SigningState {
            seed: cfg.seed,
            fal_user_id: cfg.fal_user_id.clone(),
            fal_key: 0,
            fal_unknown: 0,
            replicate_secrets: vec![cfg.replicate_webhook_secret.clone()],
            stale: (0, 0),
        }))
    }

    fn lock(&self) -> MutexGuard<'_, SigningState> {
        crate::sync::lock(&self.0)
    }

    /// fal's JWKS: the current key and the one it replaced, if any.
    pub fn jwks(&self) -> Value {
        let s = self.lock();
        let keys: Vec<Value> = (s.fal_key.saturating_sub(1)..=s.fal_key)
            .rev()
            .map(|i| jwk(&fal_key(s.seed, i), &fal_kid(i)))
            .collect();
        json!({ "keys": keys })
    }

    /// The Replicate secret `GET /v1/webhooks/default/secret` answers with.
    pub fn replicate_secret(&self) -> String {
        self.lock()
            .replicate_secrets
            .last()
            .cloned()
            .unwrap_or_default()
    }

    /// A new current fal key; returns its kid.
    fn rotate_fal(&self) -> String {
        let mut s = self.lock();
        s.fal_key += 1;
        fal_kid(s.fal_key)
    }

    /// A new current Replicate secret; returns (new, previous).
    fn rotate_replicate(&self) -> (String, String) {
        let mut s = self.lock();
        let previous = s.replicate_secrets.last().cloned().unwrap_or_default();
        let n = s.replicate_secrets.len() as u64;
        let digest = Sha256::new()
            .chain_update(b"genq fake replicate webhook secret")
            .chain_update(s.seed.to_le_bytes())
            .chain_update(n.to_le_bytes())
            .finalize();
        let secret = format!("whsec_{}", STANDARD.encode(digest));
        s.replicate_secrets.push(secret.clone());
        (secret, previous)
    }

    /// The headers for one delivery of `body` for job `id`; uses up one-shot modes.
    fn sign(&self, kind: ProviderKind, id: &str, body: &[u8]) -> Signed {
        let mut s = self.lock();
        if kind == ProviderKind::BytePlus {
            return Signed { headers: vec![] };
        }
        let mut timestamp = chrono::Utc::now().timestamp();
        if s.stale.1 > 0 {
            s.stale.1 -= 1;
            timestamp -= s.stale.0;
        }
        let timestamp = timestamp.to_string();
        let headers = match kind {
            ProviderKind::Fal => {
                let key = if s.fal_unknown > 0 {
                    s.fal_unknown -= 1;
                    unknown_fal_key(s.seed)
                } else {
                    fal_key(s.seed, s.fal_key)
                };
                let message = signing::fal_message(id, &s.fal_user_id, &timestamp, body);
                vec![
                    ("x-fal-webhook-request-id", id.to_string()),
                    ("x-fal-webhook-user-id", s.fal_user_id.clone()),
                    ("x-fal-webhook-timestamp", timestamp),
                    (
                        "x-fal-webhook-signature",
                        hex::encode(key.sign(&message).to_bytes()),
                    ),
                ]
            }
            _ => {
                let msg_id = message_id(id);
                let signatures: Vec<String> = s
                    .replicate_secrets
                    .iter()
                    .rev()
                    .take(2)
                    .map(|secret| {
                        signing::standard_webhooks_sign(secret, &msg_id, &timestamp, body)
                    })
                    .collect();
                vec![
                    ("webhook-id", msg_id),
                    ("webhook-timestamp", timestamp),
                    ("webhook-signature", signatures.join(" ")),
                ]
            }
        };
        Signed { headers }
    }
}

/// fal key number `index`: the seed and index hashed into an Ed25519 secret key.
fn fal_key(seed: u64, index: u32) -> SigningKey {
    derived_key(b"genq fake fal webhook key", seed, index)
}

/// The key of "unknown key" mode: derived like the others, never listed.
fn unknown_fal_key(seed: u64) -> SigningKey {
    derived_key(b"genq fake fal unlisted key", seed, 0)
}

fn derived_key(label: &[u8], seed: u64, index: u32) -> SigningKey {
    let digest = Sha256::new()
        .chain_update(label)
        .chain_update(seed.to_le_bytes())
        .chain_update(index.to_le_bytes())
        .finalize();
    SigningKey::from_bytes(&digest.into())
}

fn fal_kid(index: u32) -> String {
    format!("fake-fal-key-{index}")
}

fn jwk(key: &SigningKey, kid: &str) -> Value {
    json!({
        "kty": "OKP",
        "crv": "Ed25519",
        "kid": kid,
        "use": "sig",
        "alg": "EdDSA",
        "x": URL_SAFE_NO_PAD.encode(key.verifying_key().as_bytes()),
    })
}

/// `webhook-id` of a job's final webhook: `msg_` + 26 hex digits derived from the job id,
/// so a replay (a redelivery of the same message) carries the same id.
fn message_id(job_id: &str) -> String {
    let digest = Sha256::new()
        .chain_update(b"genq fake webhook message")
        .chain_update(job_id.as_bytes())
        .finalize();
    format!("msg_{}", &hex::encode(digest)[..26])
}

/// Watches job `id` and delivers its webhook when it ends.
pub(super) fn watch(state: Shared, id: String) {
    let Some(first) = state.any_job(&id) else {
        return;
    };
    if first.webhook.is_none() {
        return;
    }
    tokio::spawn(async move {
        let (job, url) = loop {
            if state.stopping() {
                return;
            }
            let Some(job) = state.any_job(&id) else {
                return;
            };
            let now = Instant::now();
            if job.phase(now).is_final() {
                let Some(url) = job.webhook.clone() else {
                    return;
                };
                break (job, url);
            }
            state
                .sleep(
                    job.next_change(now)
                        .clamp(Duration::from_millis(5), LOOK_EVERY),
                )
                .await;
        };
        deliver_with_retries(&state, &job, &url).await;
    });
}

/// POSTs the final webhook of `job` to `url` once; whether it got a 2xx. A refusal
/// (`/_fake/webhooks/refuse`) fails the attempt without sending it.
pub(super) async fn deliver(state: &Shared, job: &Job, url: &str) -> bool {
    if state.refusals.take() {
        tracing::debug!(job = %job.id, "fake provider: webhook refused (scripted)");
        state.count_webhook(false);
        return false;
    }
    let body = match job.provider {
        ProviderKind::Fal => fal::webhook_body(state, job),
        ProviderKind::BytePlus => byteplus::task_json(state, job),
        ProviderKind::Replicate => replicate::prediction_json(state, job),
    };
    let body = serde_json::to_vec(&body).unwrap_or_default();
    let signed = state.signing.sign(job.provider, &job.id, &body);
    let mut request = state
        .webhook_client
        .post(url)
        .header("content-type", "application/json")
        .body(body);
    for (name, value) in signed.headers {
        request = request.header(name, value);
    }
    let delivered = matches!(request.send().await, Ok(r) if r.status().is_success());
    tracing::debug!(job = %job.id, delivered, "fake provider: webhook");
    state.count_webhook(delivered);
    delivered
}

/// The webhook controls under `/_fake`.
pub(super) fn routes() -> Router<Shared> {
    Router::new()
        .route("/_fake/fal-keys/rotate", post(rotate_fal))
        .route("/_fake/fal-keys/unknown", post(unknown_fal))
        .route("/_fake/replicate-secret/rotate", post(rotate_replicate))
        .route("/_fake/webhooks/replay", post(replay))
        .route("/_fake/webhooks/stale", post(stale))
        .route("/_fake/webhooks/refuse", post(refuse))
}

fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({ "error": message }))).into_response()
}

/// Parses a JSON body; an empty body is `{}`.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    let body: &[u8] = if body.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        body
    };
    serde_json::from_slice(body).map_err(|e| format!("invalid body: {e}"))
}

fn one() -> u32 {
    1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Times {
    #[serde(default = "one")]
    times: u32,
}

async fn rotate_fal(AxState(state): AxState<Shared>) -> Json<Value> {
    let kid = state.signing.rotate_fal();
    Json(json!({ "kid": kid, "jwks": state.signing.jwks() }))
}

async fn unknown_fal(AxState(state): AxState<Shared>, body: Bytes) -> Response {
    let times = match parse::<Times>(&body) {
        Ok(t) => t.times,
        Err(e) => return bad_request(e),
    };
    state.signing.lock().fal_unknown = times;
    Json(json!({ "times": times })).into_response()
}

async fn rotate_replicate(AxState(state): AxState<Shared>) -> Json<Value> {
    let (key, previous) = state.signing.rotate_replicate();
    Json(json!({ "key": key, "previous": previous }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Replay {
    request_id: String,
    #[serde(default = "one")]
    times: u32,
}

async fn replay(AxState(state): AxState<Shared>, body: Bytes) -> Response {
    let replay: Replay = match parse(&body) {
        Ok(r) => r,
        Err(e) => return bad_request(e),
    };
    if replay.times > MAX_REPLAYS {
        return bad_request(format!("times is at most {MAX_REPLAYS}"));
    }
    let Some(job) = state.any_job(&replay.request_id) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({ "error": "no such job" })),
        )
            .into_response();
    };
    let Some(url) = job.webhook.clone() else {
        return (
            StatusCode::CONFLICT,
            Json(json!({ "error": "the job has no webhook URL" })),
        )
            .into_response();
    };
    if !job.phase(Instant::now()).is_final() {
        return (
            StatusCode::CONFLICT,
            Json(json!({ "error": "the job has not ended yet" })),
        )
            .into_response();
    }
    let mut delivered = 0;
    for _ in 0..replay.times {
        if deliver(&state, &job, &url).await {
            delivered += 1;
        }
    }
    Json(json!({ "delivered": delivered, "failed": replay.times - delivered })).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Stale {
    seconds: i64,
    #[serde(default = "one")]
    times: u32,
}

async fn stale(AxState(state): AxState<Shared>, body: Bytes) -> Response {
    let stale: Stale = match parse(&body) {
        Ok(s) => s,
        Err(e) => return bad_request(e),
    };
    state.signing.lock().stale = (stale.seconds, stale.times);
    Json(json!({ "seconds": stale.seconds, "times": stale.times })).into_response()
}

async fn refuse(AxState(state): AxState<Shared>, body: Bytes) -> Response {
    let times = match parse::<Times>(&body) {
        Ok(t) => t.times,
        Err(e) => return bad_request(e),
    };
    state.refusals.set(times);
    Json(json!({ "times": times })).into_response()
}
