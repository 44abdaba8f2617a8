//! Replicate predictions under `/replicate/v1`: create by version or by official model,
//! get, cancel, and the cursor-paged list (newest first).

use std::time::Instant;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::faults::{affect_job, finish, gate, Dialect, FakeOp, Gate};
use super::state::{Job, NewJob, Phase, Shared};
use super::{check_auth, files, progress, webhooks};
use crate::providers::ProviderKind;

const KIND: ProviderKind = ProviderKind::Replicate;

/// Predictions per list page. Small, so reconciliation tests cross pages.
pub const PAGE_SIZE: usize = 10;

/// The version the fake reports for official models.
const OFFICIAL_VERSION: &str = "0000000000000000000000000000000000000000000000000000000000000000";

pub(super) fn routes() -> Router<Shared> {
    Router::new()
        .route(
            "/replicate/v1/predictions",
            get(list).post(create_by_version),
        )
        .route(
            "/replicate/v1/models/{owner}/{name}/predictions",
            post(create_by_model),
        )
        .route("/replicate/v1/predictions/{id}", get(read))
        .route("/replicate/v1/predictions/{id}/cancel", post(cancel))
        .route("/replicate/v1/webhooks/default/secret", get(webhook_secret))
}

/// The secret the webhooks are signed with, `{"key": "whsec_…"}`.
async fn webhook_secret(State(state): State<Shared>, headers: HeaderMap) -> Response {
    if let Some(refused) = check_auth(&headers, "Bearer", &ReplicateDialect) {
        return refused;
    }
    let fault = match gate(&state, Some(KIND), FakeOp::WebhookSecret, &ReplicateDialect).await {
        Gate::Respond(r) => return r,
        Gate::Proceed(f) => f,
    };
    let body = json!({ "key": state.signing.replicate_secret() });
    finish(&state, fault, StatusCode::OK, HeaderMap::new(), body).await
}

pub(super) struct ReplicateDialect;

impl Dialect for ReplicateDialect {
    fn error(&self, status: StatusCode, _code: Option<&str>, message: &str) -> Response {
        let detail = match status.as_u16() {
            429 => "Request was throttled. Expected available in 1 second.".to_string(),
            401 => "Invalid token.".to_string(),
            404 => "Not found.".to_string(),
            _ => message.to_string(),
        };
        problem(status, &detail)
    }

    fn moderation(&self) -> Response {
        problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "The input or output was flagged as sensitive. Please try again with different inputs. (E005)",
        )
    }
}

fn problem(status: StatusCode, detail: &str) -> Response {
    let title = status.canonical_reason().unwrap_or("Error");
    (
        status,
        Json(json!({"title": title, "detail": detail, "status": status.as_u16()})),
    )
        .into_response()
}

#[derive(Deserialize)]
struct CreateBody {
    #[serde(default)]
    version: Option<String>,
    input: Value,
    #[serde(default)]
    webhook: Option<String>,
    #[serde(default)]
    webhook_events_filter: Option<Vec<String>>,
}

async fn create_by_version(
    State(state): State<Shared>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    create(state, headers, body, None).await
}

async fn create_by_model(
    State(state): State<Shared>,
    Path((owner, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    create(state, headers, body, Some(format!("{owner}/{name}"))).await
}

async fn create(state: Shared, headers: HeaderMap, body: Bytes, model: Option<String>) -> Response {
    if let Some(refused) = check_auth(&headers, "Bearer", &ReplicateDialect) {
        return refused;
    }
    let fault = match gate(&state, Some(KIND), FakeOp::Submit, &ReplicateDialect).await {
        Gate::Respond(r) => return r,
        Gate::Proceed(f) => f,
    };
    let body: CreateBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                &format!("Invalid request body: {e}"),
            )
        }
    };
    if !body.input.is_object() {
        return problem(StatusCode::UNPROCESSABLE_ENTITY, "input must be an object");
    }
    let (model, version) = match (model, body.version) {
        (Some(model), None) => (model, OFFICIAL_VERSION.to_string()),
        (None, Some(v)) if v.len() == 64 && v.chars().all(|c| c.is_ascii_hexdigit()) => {
            (format!("fake/model-{}", &v[..8]), v)
        }
        (None, _) => {
            return problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Invalid version or not permitted",
            )
        }
        (Some(_), Some(_)) => {
            return problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "version is not allowed for official models",
            )
        }
    };
    let filter_ok = body.webhook_events_filter.as_ref().is_none_or(|f| {
        f.iter()
            .all(|e| matches!(e.as_str(), "start" | "output" | "logs" | "completed"))
    });
    if !filter_ok {
        return problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "Invalid webhook_events_filter",
        );
    }
    let Ok(job) = state.create(NewJob {
        provider: KIND,
        model,
        version,
        input: body.input,
        webhook: body.webhook,
    }) else {
        return ReplicateDialect.error(StatusCode::TOO_MANY_REQUESTS, None, "queue full");
    };
    affect_job(&state, fault.as_ref(), &job.id, false);
    webhooks::watch(state.clone(), job.id.clone());
    finish(
        &state,
        fault,
        StatusCode::CREATED,
        HeaderMap::new(),
        prediction_json(&state, &job),
    )
    .await
}

async fn read(State(state): State<Shared>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    if let Some(refused) = check_auth(&headers, "Bearer", &ReplicateDialect) {
        return refused;
    }
    let fault = match gate(&state, Some(KIND), FakeOp::Status, &ReplicateDialect).await {
        Gate::Respond(r) => return r,
        Gate::Proceed(f) => f,
    };
    affect_job(&state, fault.as_ref(), &id, true);
    let Some(job) = state.job(KIND, &id) else {
        return problem(StatusCode::NOT_FOUND, "Not found.");
    };
    finish(
        &state,
        fault,
        StatusCode::OK,
        HeaderMap::new(),
        prediction_json(&state, &job),
    )
    .await
}

async fn cancel(
    State(state): State<Shared>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = check_auth(&headers, "Bearer", &ReplicateDialect) {
        return refused;
    }
    let fault = match gate(&state, Some(KIND), FakeOp::Cancel, &ReplicateDialect).await {
        Gate::Respond(r) => return r,
        Gate::Proceed(f) => f,
    };
    // Replicate cancels running predictions too.
    if state.cancel(KIND, &id, |p| !p.is_final()).is_none() {
        return problem(StatusCode::NOT_FOUND, "Not found.");
    }
    let Some(job) = state.job(KIND, &id) else {
        return problem(StatusCode::NOT_FOUND, "Not found.");
    };
    finish(
        &state,
        fault,
        StatusCode::OK,
        HeaderMap::new(),
        prediction_json(&state, &job),
    )
    .await
}

#[derive(Deserialize)]
struct ListQuery {
    #[serde(default)]
    cursor: Option<String>,
}

async fn list(
    State(state): State<Shared>,
    Query(query): Query<ListQuery>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = check_auth(&headers, "Bearer", &ReplicateDialect) {
        return refused;
    }
    let fault = match gate(&state, Some(KIND), FakeOp::List, &ReplicateDialect).await {
        Gate::Respond(r) => return r,
        Gate::Proceed(f) => f,
    };
    // The cursor is opaque to clients; here it is the offset into the newest-first list.
    let Ok(offset) = query.cursor.as_deref().unwrap_or("0").parse::<usize>() else {
        return problem(StatusCode::BAD_REQUEST, "Invalid cursor.");
    };
    let all = state.newest_first(KIND);
    let results: Vec<Value> = all
        .iter()
        .skip(offset)
        .take(PAGE_SIZE)
        .map(|j| prediction_json(&state, j))
        .collect();
    let list_url = format!("{}/replicate/v1/predictions", state.base);
    let next = (offset + PAGE_SIZE < all.len())
        .then(|| format!("{list_url}?cursor={}", offset + PAGE_SIZE));
    let previous =
        (offset > 0).then(|| format!("{list_url}?cursor={}", offset.saturating_sub(PAGE_SIZE)));
    let body = json!({ "next": next, "previous": previous, "results": results });
    finish(&state, fault, StatusCode::OK, HeaderMap::new(), body).await
}

/// A prediction as get, cancel, list and the webhook show it.
pub(super) fn prediction_json(state: &Shared, job: &Job) -> Value {
    let now = Instant::now();
    let phase = job.phase(now);
    let (status, output, error, data_removed) = match phase {
        Phase::Queued => ("starting", Value::Null, Value::Null, false),
        Phase::Running => ("processing", Value::Null, Value::Null, false),
        Phase::Succeeded => ("succeeded", Value::String(files::url(state, &job.id)), Value::Null, false),
        Phase::Expired { .. } => ("succeeded", Value::Null, Value::Null, true),
        Phase::Failed { moderation: true } => (
            "failed",
            Value::Null,
            json!("The input or output was flagged as sensitive. Please try again with different inputs. (E005)"),
            false,
        ),
        Phase::Failed { moderation: false } => ("failed", Value::Null, json!("CUDA out of memory"), false),
        Phase::Cancelled => ("canceled", Value::Null, Value::Null, false),
    };
    let get_url = format!("{}/replicate/v1/predictions/{}", state.base, job.id);
    let ts = |t: Option<chrono::DateTime<chrono::Utc>>| {
        t.map_or(Value::Null, |t| {
            Value::String(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        })
    };
    let mut p = json!({
        "id": job.id,
        "model": job.model,
        "version": job.version,
        "input": job.input,
        "output": output,
        "error": error,
        "logs": if phase == Phase::Queued { String::new() } else { progress::replicate_logs(job, now) },
        "status": status,
        "data_removed": data_removed,
        "created_at": ts(Some(job.created_at)),
        "started_at": ts(job.started_at(now)),
        "completed_at": ts(job.finished_at(now)),
        "source": "api",
        "metrics": if phase.is_final() { json!({"predict_time": job.render_secs()}) } else { json!({}) },
        "urls": {
            "get": get_url,
            "cancel": format!("{get_url}/cancel"),
            "web": format!("https://replicate.com/p/{}", job.id),
        },
    });
    if let Some(webhook) = &job.webhook {
        p["webhook"] = Value::String(webhook.clone());
        p["webhook_events_filter"] = json!(["completed"]);
    }
    p
}
