//! The admin API: the CLI's queue and job control over HTTP, behind a bearer token.
//! With no token configured every `/admin` route answers 404 ("disabled"): never open.
//! The token is compared in constant time and never logged.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::error::ApiError;
use super::HttpState;
use crate::queue::job_control::{self, JobRow};
use crate::queue::queue_control::{self, DrainResult, QueueInfo, Target};

/// The admin bearer token. Its `Debug` output is redacted.
#[derive(Clone)]
pub struct AdminToken(String);

impl AdminToken {
    /// Wraps a token; empty or whitespace-only tokens are refused (they would be guessable).
    pub fn new(token: impl Into<String>) -> Option<Self> {
        let token = token.into().trim().to_string();
        (!token.is_empty()).then_some(Self(token))
    }

    /// Loads the token from `GENQ_ADMIN_TOKEN`, else from `token_file` if set.
    pub fn from_env_or_file(token_file: &str) -> anyhow::Result<Option<Self>> {
        Self::load("GENQ_ADMIN_TOKEN", "admin.token_file", token_file)
    }

    /// Loads the console's read-only token from `GENQ_ADMIN_READONLY_TOKEN`, else from
    /// `token_file` (`admin.readonly_token_file`) if set.
    pub fn readonly_from_env_or_file(token_file: &str) -> anyhow::Result<Option<Self>> {
        Self::load(
            "GENQ_ADMIN_READONLY_TOKEN",
            "admin.readonly_token_file",
            token_file,
        )
    }

    fn load(variable: &str, setting: &str, token_file: &str) -> anyhow::Result<Option<Self>> {
        if let Ok(t) = std::env::var(variable) {
            return Ok(Self::new(t));
        }
        if token_file.is_empty() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(token_file)
            .map_err(|e| anyhow::anyhow!("cannot read {setting} {token_file}: {e}"))?;
        Ok(Self::new(text))
    }

    /// Whether `presented` is this token (constant time).
    pub(crate) fn matches(&self, presented: &str) -> bool {
        self.0.as_bytes().ct_eq(presented.as_bytes()).into()
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(***)")
    }
}

pub(crate) fn routes(state: HttpState) -> Router<HttpState> {
    Router::new()
        .route("/queues", get(list_queues))
        .route("/queues/pause-all", post(pause_all))
        .route("/queues/resume-all", post(resume_all))
        .route("/queues/{queue}/pause", post(pause))
        .route("/queues/{queue}/resume", post(resume))
        .route("/queues/{queue}/drain", post(drain))
        .route("/queues/{queue}/limit", put(limit))
        .route("/jobs/{id}", get(show_job))
        .route("/jobs/{id}/retry", post(retry_job))
        .route("/jobs/{id}/cancel", post(cancel_job))
        .route("/drain", post(drain_daemon))
        .route_layer(middleware::from_fn_with_state(state, authorize))
}

async fn authorize(State(state): State<HttpState>, request: Request, next: Next) -> Response {
    let Some(token) = &state.admin_token else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "the admin API is disabled: set GENQ_ADMIN_TOKEN or admin.token_file to enable it",
        )
        .into_response();
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        Some(p) if token.matches(p) => next.run(request).await,
        Some(_) => unauthorized("invalid bearer token"),
        None => unauthorized("missing `Authorization: Bearer <token>` header"),
    }
}

fn unauthorized(message: &str) -> Response {
    let mut response = ApiError::new(StatusCode::UNAUTHORIZED, message).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        header::HeaderValue::from_static("Bearer"),
    );
    response
}

/// Decodes an optional JSON body: empty means the defaults; too large is 413; bad JSON is
/// 400 with serde's message.
fn body<T: DeserializeOwned + Default>(raw: Result<Bytes, BytesRejection>) -> Result<T, ApiError> {
    let raw = raw.map_err(|r| {
        ApiError::new(
            r.status(),
            format!("cannot read request body: {}", r.body_text()),
        )
    })?;
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&raw)
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, format!("invalid JSON body: {e}")))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PauseBody {
    reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DrainBody {
    /// Seconds to wait for running jobs. Defaults to 60.
    timeout_secs: Option<f64>,
    reason: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LimitBody {
    /// The cap, or null to remove it.
    max_running: Option<i32>,
}

async fn list_queues(State(s): State<HttpState>) -> Result<Json<Vec<QueueInfo>>, ApiError> {
    Ok(Json(queue_control::list(s.daemon.pool()).await?))
}

async fn pause(
    State(s): State<HttpState>,
    Path(queue): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let b: PauseBody = body(raw)?;
    queue_control::pause(s.daemon.pool(), Target::One(&queue), b.reason.as_deref()).await?;
    Ok(Json(serde_json::json!({ "queue": queue, "paused": true })))
}

async fn pause_all(
    State(s): State<HttpState>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let b: PauseBody = body(raw)?;
    let paused = queue_control::pause(s.daemon.pool(), Target::All, b.reason.as_deref()).await?;
    Ok(Json(serde_json::json!({ "paused": paused })))
}

async fn resume(
    State(s): State<HttpState>,
    Path(queue): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let resumed = queue_control::resume(s.daemon.pool(), Target::One(&queue)).await?;
    Ok(Json(
        serde_json::json!({ "queue": queue, "paused": false, "was_paused": !resumed.is_empty() }),
    ))
}

async fn resume_all(State(s): State<HttpState>) -> Result<Json<serde_json::Value>, ApiError> {
    let resumed = queue_control::resume(s.daemon.pool(), Target::All).await?;
    Ok(Json(serde_json::json!({ "resumed": resumed })))
}

/// 200 when drained; 408 with the same body when running jobs outlast the timeout.
async fn drain(
    State(s): State<HttpState>,
    Path(queue): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<DrainResult>), ApiError> {
    let b: DrainBody = body(raw)?;
    let timeout = Duration::from_secs_f64(b.timeout_secs.unwrap_or(60.0).clamp(0.0, 3600.0));
    let result = queue_control::drain(
        s.daemon.pool(),
        &queue,
        b.reason.as_deref(),
        timeout,
        Duration::from_millis(250),
        |_| {},
    )
    .await?;
    let status = if result.drained {
        StatusCode::OK
    } else {
        StatusCode::REQUEST_TIMEOUT
    };
    Ok((status, Json(result)))
}

async fn limit(
    State(s): State<HttpState>,
    Path(queue): Path<String>,
    raw: Result<Bytes, BytesRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let b: LimitBody = body(raw)?;
    if b.max_running.is_some_and(|n| n < 0) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "max_running must be 0 or more, or null",
        ));
    }
    queue_control::set_max_running(s.daemon.pool(), &queue, b.max_running).await?;
    Ok(Json(
        serde_json::json!({ "queue": queue, "max_running": b.max_running }),
    ))
}

async fn show_job(
    State(s): State<HttpState>,
    Path(id): Path<i64>,
) -> Result<Json<JobRow>, ApiError> {
    Ok(Json(job_control::show(s.daemon.pool(), id).await?))
}

async fn retry_job(
    State(s): State<HttpState>,
    Path(id): Path<i64>,
) -> Result<Json<JobRow>, ApiError> {
    Ok(Json(job_control::retry(s.daemon.pool(), id).await?))
}

async fn cancel_job(
    State(s): State<HttpState>,
    Path(id): Path<i64>,
) -> Result<Json<JobRow>, ApiError> {
    let (row, from) = job_control::cancel(s.daemon.pool(), id).await?;
    if from != crate::JobState::Running {
        metrics::counter!(crate::metrics::JOBS_FINISHED, "queue" => row.queue.clone(), "kind" => row.kind.clone(),
            "outcome" => "cancelled")
        .increment(1);
    }
    Ok(Json(row))
}

async fn drain_daemon(State(s): State<HttpState>) -> Json<serde_json::Value> {
    s.daemon.drain();
    Json(serde_json::json!({
        "worker_id": s.daemon.worker_id(),
        "draining": true,
        "running": s.daemon.running(),
    }))
}
