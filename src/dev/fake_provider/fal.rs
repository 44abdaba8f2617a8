//! fal.ai's queue API under `/fal`: submit to `/fal/{model}`, then the `status_url`,
//! `response_url` and `cancel_url` (owner/app only) that the submit answer points back at.

use std::collections::HashMap;
use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::faults::{affect_job, finish, gate, Dialect, FakeOp, Gate};
use super::state::{Job, NewJob, Phase, Shared};
use super::{check_auth, files, progress, webhooks};
use crate::providers::ProviderKind;

const KIND: ProviderKind = ProviderKind::Fal;

pub(super) fn routes() -> Router<Shared> {
    // One catch-all: model ids have any number of segments, so dispatch is by hand.
    Router::new().route("/fal/{*path}", any(dispatch))
}

pub(super) struct FalDialect;

impl Dialect for FalDialect {
    fn error(&self, status: StatusCode, code: Option<&str>, message: &str) -> Response {
        let error_type = code.map(str::to_string).or_else(|| {
            Some(
                match status.as_u16() {
                    400 => "bad_request",
                    499 => "client_cancelled",
                    500 => "internal_error",
                    502 => "runner_incomplete_response",
                    503 => "runner_disconnected",
                    504 => "request_timeout",
                    _ => return None,
                }
                .to_string(),
            )
        });
        let mut response = (
            status,
            Json(json!({ "detail": message, "error_type": error_type })),
        )
            .into_response();
        if let Some(t) = error_type.and_then(|t| HeaderValue::from_str(&t).ok()) {
            response.headers_mut().insert("x-fal-error-type", t);
        }
        response
    }

    fn moderation(&self) -> Response {
        let (status, headers, body) = moderation_error();
        (status, headers, Json(body)).into_response()
    }
}

fn moderation_error() -> (StatusCode, HeaderMap, Value) {
    let mut headers = HeaderMap::new();
    headers.insert("x-fal-retryable", HeaderValue::from_static("false"));
    let body = json!({"detail": [{
        "loc": ["body", "prompt"],
        "msg": "The content could not be processed because it was flagged by a content checker.",
        "type": "content_policy_violation",
    }]});
    (StatusCode::UNPROCESSABLE_ENTITY, headers, body)
}

async fn dispatch(
    State(state): State<Shared>,
    method: Method,
    Path(path): Path<String>,
    Query(query): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if method == Method::GET && path == ".well-known/jwks.json" {
        // Public, like fal's (which lives at rest.alpha.fal.ai): no key needed.
        return jwks(state).await;
    }
    if let Some(refused) = check_auth(&headers, "Key", &FalDialect) {
        return refused;
    }
    let segments: Vec<&str> = path.split('/').collect();
    match (&method, segments.as_slice()) {
        (&Method::GET, [_, _, "requests", id, "status"]) => {
            // Like fal, logs only when asked for.
            let logs = query.get("logs").is_some_and(|v| v == "1");
            status(state, id, logs).await
        }
        (&Method::GET, [_, _, "requests", id]) => result(state, id).await,
        (&Method::PUT, [_, _, "requests", id, "cancel"]) => cancel(state, id).await,
        (&Method::POST, _) => submit(state, &path, query.get("fal_webhook").cloned(), &body).await,
        _ => FalDialect.error(StatusCode::NOT_FOUND, None, "Not found"),
    }
}

/// The keys fal's webhooks are signed with (`X-Fal-Webhook-Signature`).
async fn jwks(state: Shared) -> Response {
    let fault = match gate(&state, Some(KIND), FakeOp::Jwks, &FalDialect).await {
        Gate::Respond(r) => return r,
        Gate::Proceed(f) => f,
    };
    let body = state.signing.jwks();
    finish(&state, fault, StatusCode::OK, HeaderMap::new(), body).await
}

fn app_of(model: &str) -> String {
    model.split('/').take(2).collect::<Vec<_>>().join("/")
}

fn request_url(state: &Shared, job: &Job) -> String {
    format!(
        "{}/fal/{}/requests/{}",
        state.base,
        app_of(&job.model),
        job.id
    )
}

async fn submit(state: Shared, model: &str, webhook: Option<String>, body: &[u8]) -> Response {
    let fault = match gate(&state, Some(KIND), FakeOp::Submit, &FalDialect).await {
        Gate::Respond(r) => return r,
        Gate::Proceed(f) => f,
    };
    if model.split('/').filter(|s| !s.is_empty()).count() < 2 {
        return FalDialect.error(StatusCode::NOT_FOUND, None, "Application not found");
    }
    let input = match serde_json::from_slice::<Value>(body) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            return FalDialect.error(
                StatusCode::UNPROCESSABLE_ENTITY,
                None,
                "the body must be a JSON object",
            )
        }
    };
    let Ok(job) = state.create(NewJob {
        provider: KIND,
        model: model.to_string(),
        version: String::new(),
        input,
        webhook,
    }) else {
        return FalDialect.error(StatusCode::TOO_MANY_REQUESTS, None, "queue full");
    };
    affect_job(&state, fault.as_ref(), &job.id, false);
    webhooks::watch(state.clone(), job.id.clone());
    let url = request_url(&state, &job);
    let answer = json!({
        "request_id": job.id,
        "gateway_request_id": job.gateway_id,
        "response_url": url,
        "status_url": format!("{url}/status"),
        "cancel_url": format!("{url}/cancel"),
        "queue_position": state.queue_position(KIND, &job.id).unwrap_or(0),
    });
    finish(&state, fault, StatusCode::OK, HeaderMap::new(), answer).await
}

async fn status(state: Shared, id: &str, with_logs: bool) -> Response {
    let fault = match gate(&state, Some(KIND), FakeOp::Status, &FalDialect).await {
        Gate::Respond(r) => return r,
        Gate::Proceed(f) => f,
    };
    affect_job(&state, fault.as_ref(), id, true);
    let Some(job) = state.job(KIND, id) else {
        return FalDialect.error(StatusCode::NOT_FOUND, None, "Request not found");
    };
    let url = request_url(&state, &job);
    let now = Instant::now();
    let (code, body) = match job.phase(now) {
        // With an account limit: its place among the jobs waiting for a render slot (0 =
        // next); without one: fal's own queue, counting down as the job nears running.
        Phase::Queued => (
            StatusCode::ACCEPTED,
            json!({
                "status": "IN_QUEUE",
                "queue_position": if state.account_limited(KIND) {
                    state.queue_position(KIND, id).unwrap_or(0) as u64
                } else {
                    progress::queue_position(&job, now)
                },
                "response_url": url,
            }),
        ),
        Phase::Running => (
            StatusCode::ACCEPTED,
            json!({"status": "IN_PROGRESS",
                   "logs": if with_logs { progress::fal_logs(&job, now) } else { json!([]) },
                   "response_url": url}),
        ),
        _ => (
            StatusCode::OK,
            json!({
                "status": "COMPLETED",
                "logs": [],
                "metrics": {"inference_time": job.render_secs()},
                "response_url": url,
            }),
        ),
    };
    finish(&state, fault, code, HeaderMap::new(), body).await
}

async fn result(state: Shared, id: &str) -> Response {
    let fault = match gate(&state, Some(KIND), FakeOp::Result, &FalDialect).await {
        Gate::Respond(r) => return r,
        Gate::Proceed(f) => f,
    };
    affect_job(&state, fault.as_ref(), id, true);
    let Some(job) = state.job(KIND, id) else {
        return FalDialect.error(StatusCode::NOT_FOUND, None, "Request not found");
    };
    let (code, headers, body) = result_of(&state, &job);
    finish(&state, fault, code, headers, body).await
}

/// The result as fal serves it: the model's own status code and body.
fn result_of(state: &Shared, job: &Job) -> (StatusCode, HeaderMap, Value) {
    let mut headers = HeaderMap::new();
    match job.phase(Instant::now()) {
        Phase::Queued | Phase::Running => (
            StatusCode::BAD_REQUEST,
            headers,
            json!({"detail": "Request is still in progress"}),
        ),
        Phase::Succeeded => (
            StatusCode::OK,
            headers,
            json!({
                "video": {
                    "url": files::url(state, &job.id),
                    "content_type": "video/mp4",
                    "file_name": "output.mp4",
                    "file_size": files::SIZE,
                },
                "seed": 42,
                // fal models echo the prompt in their result; genq must not take it for a file.
                "prompt": job.input.get("prompt").cloned().unwrap_or(Value::Null),
            }),
        ),
        Phase::Failed { moderation: true } => moderation_error(),
        Phase::Failed { moderation: false } => (
            StatusCode::UNPROCESSABLE_ENTITY,
            headers,
            json!({"detail": [{
                "loc": ["body", "image_url"],
                "msg": "Failed to load the input image.",
                "type": "image_load_error",
            }]}),
        ),
        Phase::Expired { status } => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::NOT_FOUND),
            headers,
            json!({"detail": "Request result not found or expired"}),
        ),
        Phase::Cancelled => {
            headers.insert(
                "x-fal-error-type",
                HeaderValue::from_static("client_cancelled"),
            );
            (
                StatusCode::from_u16(499).unwrap_or(StatusCode::BAD_REQUEST),
                headers,
                json!({"detail": "Request was cancelled", "error_type": "client_cancelled"}),
            )
        }
    }
}

async fn cancel(state: Shared, id: &str) -> Response {
    let fault = match gate(&state, Some(KIND), FakeOp::Cancel, &FalDialect).await {
        Gate::Respond(r) => return r,
        Gate::Proceed(f) => f,
    };
    let (code, said) = match state.cancel(KIND, id, |p| p == Phase::Queued) {
        None => (StatusCode::NOT_FOUND, "NOT_FOUND"),
        Some(Phase::Queued) => (StatusCode::OK, "OK"),
        // A running request only gets a signal; the fake's apps ignore it.
        Some(Phase::Running) => (StatusCode::ACCEPTED, "CANCELLATION_REQUESTED"),
        Some(_) => (StatusCode::BAD_REQUEST, "ALREADY_COMPLETED"),
    };
    finish(
        &state,
        fault,
        code,
        HeaderMap::new(),
        json!({ "status": said }),
    )
    .await
}

/// The body of fal's webhook for a finished request.
pub(super) fn webhook_body(state: &Shared, job: &Job) -> Value {
    let (code, _, result) = result_of(state, job);
    let ok = code.is_success();
    json!({
        "request_id": job.id,
        "gateway_request_id": job.gateway_id,
        "status": if ok { "OK" } else { "ERROR" },
        "payload": result,
        "error": if ok { Value::Null } else { Value::String(format!("Invalid status code: {}", code.as_u16())) },
        "payload_error": Value::Null,
    })
}
