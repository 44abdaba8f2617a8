//! BytePlus ModelArk video tasks under `/byteplus/api/v3/contents/generations/tasks`:
//! create (validating `model` and `content` as BytePlus does), get, list with filters and
//! pages, and DELETE, which cancels a queued task, refuses a running one and deletes a
//! finished one.

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use super::faults::{affect_job, finish, gate, Dialect, FakeOp, Gate};
use super::state::{Job, NewJob, Phase, QueueFull, Shared};
use super::{check_auth, files, webhooks};
use crate::providers::ProviderKind;

const KIND: ProviderKind = ProviderKind::BytePlus;
const TASKS: &str = "/byteplus/api/v3/contents/generations/tasks";
use crate::providers::byteplus::QUEUE_FULL_CODE;

pub(super) fn routes() -> Router<Shared> {
    Router::new()
        .route(TASKS, get(list).post(create))
        .route(&format!("{TASKS}/{{id}}"), get(read).delete(delete))
}

pub(super) struct BytePlusDialect;

impl Dialect for BytePlusDialect {
    fn error(&self, status: StatusCode, code: Option<&str>, message: &str) -> Response {
        let code = code.unwrap_or(match status.as_u16() {
            400 => "InvalidParameter",
            401 => "AuthenticationError",
            403 => "AccessDenied",
            404 => "ResourceNotFound",
            429 => "RateLimitExceeded.EndpointRPMExceeded",
            _ => "InternalServiceError",
        });
        error(status, code, message)
    }

    fn moderation(&self) -> Response {
        error(
            StatusCode::BAD_REQUEST,
            "InputTextSensitiveContentDetected",
            "The request failed because the input text may contain sensitive information.",
        )
    }
}

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    let body =
        json!({"error": {"code": code, "message": message, "param": "", "type": "BadRequest"}});
    (status, Json(body)).into_response()
}

async fn create(State(state): State<Shared>, headers: HeaderMap, body: Bytes) -> Response {
    if let Some(refused) = check_auth(&headers, "Bearer", &BytePlusDialect) {
        return refused;
    }
    let fault = match gate(&state, Some(KIND), FakeOp::Submit, &BytePlusDialect).await {
        Gate::Respond(r) => return r,
        Gate::Proceed(f) => f,
    };
    let body: Value = match serde_json::from_slice(&body) {
        Ok(v @ Value::Object(_)) => v,
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "InvalidParameter",
                "The request body is not a JSON object.",
            )
        }
    };
    let Some(model) = body
        .get("model")
        .and_then(Value::as_str)
        .filter(|m| !m.is_empty())
    else {
        return error(
            StatusCode::BAD_REQUEST,
            "MissingParameter",
            "The parameter `model` is missing.",
        );
    };
    if let Err(message) = check_content(body.get("content")) {
        return error(StatusCode::BAD_REQUEST, "InvalidParameter", &message);
    }
    let created = state.create(NewJob {
        provider: KIND,
        model: model.to_string(),
        version: String::new(),
        webhook: body
            .get("callback_url")
            .and_then(Value::as_str)
            .map(str::to_string),
        input: body,
    });
    let job = match created {
        Ok(job) => job,
        Err(QueueFull(cap)) => return queue_full(cap),
    };
    affect_job(&state, fault.as_ref(), &job.id, false);
    webhooks::watch(state.clone(), job.id.clone());
    finish(
        &state,
        fault,
        StatusCode::OK,
        HeaderMap::new(),
        json!({ "id": job.id }),
    )
    .await
}

/// The account already has `cap` tasks queued (the real account refuses more than 120).
/// BytePlus does not document this error's code; the shape is its usual error object
/// with 429, which its docs say to retry, so an adapter that follows them waits and
/// resubmits (nothing was created).
fn queue_full(cap: usize) -> Response {
    error(
        StatusCode::TOO_MANY_REQUESTS,
        QUEUE_FULL_CODE,
        &format!(
            "The number of queued tasks of your account has reached the limit of {cap}. \
             Please try again later."
        ),
    )
}

/// `content` must be a non-empty list of text and image items with a valid role.
fn check_content(content: Option<&Value>) -> Result<(), String> {
    let items = content
        .and_then(Value::as_array)
        .filter(|items| !items.is_empty())
        .ok_or("The parameter `content` must be a non-empty array.")?;
    for item in items {
        match item.get("type").and_then(Value::as_str) {
            Some("text") if item.get("text").is_some_and(Value::is_string) => {}
            Some("image_url") => {
                if !item.pointer("/image_url/url").is_some_and(Value::is_string) {
                    return Err("An image_url item needs image_url.url.".into());
                }
                let role = item.get("role").and_then(Value::as_str).unwrap_or("first_frame");
                if !matches!(role, "first_frame" | "last_frame" | "reference_image") {
                    return Err(format!("Unknown image role {role:?}."));
                }
            }
            _ => return Err("Each content item must be {type: text, text} or {type: image_url, image_url: {url}}.".into()),
        }
    }
    Ok(())
}

async fn read(State(state): State<Shared>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    if let Some(refused) = check_auth(&headers, "Bearer", &BytePlusDialect) {
        return refused;
    }
    let fault = match gate(&state, Some(KIND), FakeOp::Status, &BytePlusDialect).await {
        Gate::Respond(r) => return r,
        Gate::Proceed(f) => f,
    };
    affect_job(&state, fault.as_ref(), &id, true);
    let Some(job) = state.job(KIND, &id) else {
        return not_found();
    };
    finish(
        &state,
        fault,
        StatusCode::OK,
        HeaderMap::new(),
        task_json(&state, &job),
    )
    .await
}

fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "ResourceNotFound",
        "The specified task is not found.",
    )
}

async fn delete(
    State(state): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = check_auth(&headers, "Bearer", &BytePlusDialect) {
        return refused;
    }
    let fault = match gate(&state, Some(KIND), FakeOp::Cancel, &BytePlusDialect).await {
        Gate::Respond(r) => return r,
        Gate::Proceed(f) => f,
    };
    match state.cancel(KIND, &id, |p| p == Phase::Queued) {
        None => not_found(),
        Some(Phase::Queued) => {
            finish(&state, fault, StatusCode::OK, HeaderMap::new(), json!({})).await
        }
        Some(Phase::Running) => error(
            StatusCode::BAD_REQUEST,
            "InvalidParameter.TaskStatus",
            "A running task cannot be cancelled.",
        ),
        Some(Phase::Cancelled) => error(
            StatusCode::BAD_REQUEST,
            "InvalidParameter.TaskStatus",
            "The task is already cancelled.",
        ),
        Some(_) => {
            state.delete(&id);
            finish(&state, fault, StatusCode::OK, HeaderMap::new(), json!({})).await
        }
    }
}

async fn list(
    State(state): State<Shared>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = check_auth(&headers, "Bearer", &BytePlusDialect) {
        return refused;
    }
    let fault = match gate(&state, Some(KIND), FakeOp::List, &BytePlusDialect).await {
        Gate::Respond(r) => return r,
        Gate::Proceed(f) => f,
    };
    let mut page_num = 1usize;
    let mut page_size = 10usize;
    let (mut statuses, mut ids, mut models) = (Vec::new(), Vec::new(), Vec::new());
    for (key, value) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match key.as_ref() {
            "page_num" => page_num = value.parse().unwrap_or(0),
            "page_size" => page_size = value.parse().unwrap_or(0),
            "filter.status" => statuses.push(value.into_owned()),
            "filter.task_ids" => ids.extend(value.split(',').map(str::to_string)),
            "filter.model" => models.push(value.into_owned()),
            _ => {}
        }
    }
    if page_num == 0 || !(1..=500).contains(&page_size) {
        return error(
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
            "page_num must be at least 1 and page_size 1 to 500.",
        );
    }
    let now = Instant::now();
    let matching: Vec<Job> = state
        .newest_first(KIND)
        .into_iter()
        .filter(|j| statuses.is_empty() || statuses.iter().any(|s| s == status_of(j.phase(now))))
        .filter(|j| ids.is_empty() || ids.contains(&j.id))
        .filter(|j| models.is_empty() || models.contains(&j.model))
        .collect();
    let items: Vec<Value> = matching
        .iter()
        .skip((page_num - 1) * page_size)
        .take(page_size)
        .map(|j| task_json(&state, j))
        .collect();
    let body = json!({ "total": matching.len(), "items": items });
    finish(&state, fault, StatusCode::OK, HeaderMap::new(), body).await
}

fn status_of(phase: Phase) -> &'static str {
    match phase {
        Phase::Queued => "queued",
        Phase::Running => "running",
        Phase::Succeeded => "succeeded",
        Phase::Failed { .. } => "failed",
        Phase::Expired { .. } => "expired",
        Phase::Cancelled => "cancelled",
    }
}

/// A task as Get, List and the callback show it.
pub(super) fn task_json(state: &Shared, job: &Job) -> Value {
    let now = Instant::now();
    let phase = job.phase(now);
    let updated = job
        .finished_at(now)
        .or(job.started_at(now))
        .unwrap_or(job.created_at);
    let error = match phase {
        Phase::Failed { moderation: true } => json!({
            "code": "OutputVideoSensitiveContentDetected",
            "message": "The request failed because the output video may contain sensitive information.",
        }),
        Phase::Failed { moderation: false } => json!({
            "code": "InternalServiceError",
            "message": "The service encountered an unexpected internal error.",
        }),
        Phase::Expired { .. } => json!({
            "code": "TaskExpired",
            "message": "The task exceeded its execution time limit.",
        }),
        _ => Value::Null,
    };
    let mut task = json!({
        "id": job.id,
        "model": job.model,
        "status": status_of(phase),
        "error": error,
        "created_at": job.created_at.timestamp(),
        "updated_at": updated.timestamp(),
        "seed": 42,
        "resolution": "720p",
        "ratio": "16:9",
        "duration": 5,
        "framespersecond": 24,
    });
    if phase == Phase::Succeeded {
        task["content"] = json!({ "video_url": files::url(state, &job.id) });
        task["usage"] = json!({ "completion_tokens": 108900, "total_tokens": 108900 });
    }
    if let Some(callback) = &job.webhook {
        task["callback_url"] = Value::String(callback.clone());
    }
    task
}
