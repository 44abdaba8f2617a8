//! Scripted faults and the control API (`/_fake/...`).
//!
//! A fault rule matches a provider (or any) and an operation, and applies to the next
//! `times` matching requests; then that operation behaves normally again. Every request
//! passes [`gate`] before its handler runs (answer with an error, or hang first) and
//! [`finish`] after (garble or withhold the answer); faults that change a job's fate
//! (`completed_with_error`, `expired_result`, `moderation` after submit) change the job
//! itself, so every later read agrees with the faulted one.

use std::sync::Mutex;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State as AxState;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::state::{Outcome, Shared};
use crate::providers::ProviderKind;

/// Which request a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FakeOp {
    /// Create a job.
    Submit,
    /// Read a job's status (BytePlus and Replicate: the job itself).
    Status,
    /// fal: read a completed request's result.
    Result,
    /// Cancel a job.
    Cancel,
    /// BytePlus/Replicate: list jobs.
    List,
    /// Download an output file.
    File,
    /// fal: read the webhook JWKS (`GET /fal/.well-known/jwks.json`).
    Jwks,
    /// Replicate: read the webhook signing secret (`GET /replicate/v1/webhooks/default/secret`).
    WebhookSecret,
}

impl FakeOp {
    /// The spelling used in faults and stats.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Submit => "submit",
            Self::Status => "status",
            Self::Result => "result",
            Self::Cancel => "cancel",
            Self::List => "list",
            Self::File => "file",
            Self::Jwks => "jwks",
            Self::WebhookSecret => "webhook_secret",
        }
    }
}

/// What goes wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// Answer `status` with the provider's error body (and `Retry-After: retry_after`,
    /// fal's `X-Fal-Error-Type`, BytePlus's error `code`).
    HttpStatus,
    /// Wait `ms` (default 60 s), then answer normally.
    Hang,
    /// Do the operation (submit: create the job), then wait `ms` (default 1 h) before
    /// answering: the client times out not knowing the outcome.
    AcceptThenHang,
    /// Submit: the provider's content-policy error. Later operations: the job fails with
    /// a moderation error.
    Moderation,
    /// The job ends now with a model error (fal: `COMPLETED` whose result is an error).
    CompletedWithError,
    /// The job's result is gone (fal result `status`, default 404; Replicate
    /// `data_removed`; BytePlus `expired`); for `file`, the download answers 404 or `status`.
    ExpiredResult,
    /// Answer with truncated JSON (submit: after creating the job).
    MalformedJson,
    /// Answer with a status string no client knows.
    UnknownStatus,
}

/// One scripted fault: `POST /_fake/faults` with this as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultSpec {
    /// `fal`, `byteplus`, `replicate`; absent: any provider.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider: Option<ProviderKind>,
    /// The operation.
    pub op: FakeOp,
    /// What goes wrong.
    pub fault: FaultKind,
    /// HTTP status for `http_status` (default 500) and `expired_result`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// `Retry-After` header value for `http_status` (seconds or an HTTP-date).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after: Option<String>,
    /// Provider error code for `http_status` (BytePlus `error.code`, fal `X-Fal-Error-Type`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Milliseconds for `hang` and `accept_then_hang`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ms: Option<u64>,
    /// How many matching requests get the fault. Defaults to 1.
    #[serde(default = "one")]
    pub times: u32,
}

fn one() -> u32 {
    1
}

impl FaultSpec {
    /// A fault for the next request of `provider` and `op`.
    pub fn new(provider: ProviderKind, op: FakeOp, fault: FaultKind) -> Self {
        Self {
            provider: Some(provider),
            op,
            fault,
            status: None,
            retry_after: None,
            code: None,
            ms: None,
            times: 1,
        }
    }
}

/// The scripted faults, in the order they were added.
#[derive(Default)]
pub(super) struct Faults(Mutex<Vec<FaultSpec>>);

impl Faults {
    pub fn add(&self, spec: FaultSpec) {
        if spec.times > 0 {
            self.lock().push(spec);
        }
    }

    pub fn clear(&self) {
        self.lock().clear();
    }

    pub fn list(&self) -> Vec<FaultSpec> {
        self.lock().clone()
    }

    /// Takes one use of the first rule matching the request.
    fn take(&self, provider: Option<ProviderKind>, op: FakeOp) -> Option<FaultSpec> {
        let mut rules = self.lock();
        let i = rules
            .iter()
            .position(|r| r.op == op && (r.provider.is_none() || r.provider == provider))?;
        rules[i].times -= 1;
        let spec = rules[i].clone();
        if rules[i].times == 0 {
            rules.remove(i);
        }
        Some(spec)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<FaultSpec>> {
        crate::sync::lock(&self.0)
    }
}

/// How a provider shapes its errors.
pub(super) trait Dialect: Sync {
    /// An error answer with `status`; `code` is the provider's error code if the fault
    /// named one.
    fn error(&self, status: StatusCode, code: Option<&str>, message: &str) -> Response;
    /// The content-policy rejection of a submit.
    fn moderation(&self) -> Response;
}

/// What the handler does after [`gate`].
pub(super) enum Gate {
    /// Answer this, do nothing else.
    Respond(Response),
    /// Carry on; the fault, if any, is for the handler and [`finish`].
    Proceed(Option<FaultSpec>),
}

/// Counts the request and applies the faults that replace or delay the handler.
pub(super) async fn gate(
    state: &Shared,
    provider: Option<ProviderKind>,
    op: FakeOp,
    dialect: &dyn Dialect,
) -> Gate {
    state.count(provider.map_or("files", ProviderKind::as_str), op);
    let Some(spec) = state.faults.take(provider, op) else {
        return Gate::Proceed(None);
    };
    state.count_fault();
    tracing::debug!(?provider, op = op.as_str(), fault = ?spec.fault, "fake provider: fault");
    match spec.fault {
        FaultKind::HttpStatus => {
            let status = StatusCode::from_u16(spec.status.unwrap_or(500))
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut response = dialect.error(status, spec.code.as_deref(), "injected fault");
            if let Some(value) = spec
                .retry_after
                .as_deref()
                .and_then(|v| HeaderValue::from_str(v).ok())
            {
                response.headers_mut().insert("retry-after", value);
            }
            Gate::Respond(response)
        }
        FaultKind::Hang => {
            state
                .sleep(Duration::from_millis(spec.ms.unwrap_or(60_000)))
                .await;
            Gate::Proceed(None)
        }
        FaultKind::Moderation if op == FakeOp::Submit => Gate::Respond(dialect.moderation()),
        _ => Gate::Proceed(Some(spec)),
    }
}

/// Applies a fault that changes a job's fate. `ends_now`: on a read, the job ends at once
/// so that very read shows it; on submit, it only changes how the new job will end.
pub(super) fn affect_job(state: &Shared, fault: Option<&FaultSpec>, id: &str, ends_now: bool) {
    let Some(spec) = fault else { return };
    let outcome = match spec.fault {
        FaultKind::Moderation => Outcome::Fail { moderation: true },
        FaultKind::CompletedWithError => Outcome::Fail { moderation: false },
        FaultKind::ExpiredResult => Outcome::ResultExpired {
            status: spec.status.unwrap_or(404),
        },
        _ => return,
    };
    state.set_outcome(id, outcome, ends_now);
}

/// Sends the handler's JSON answer, garbled or withheld if the fault says so.
pub(super) async fn finish(
    state: &Shared,
    fault: Option<FaultSpec>,
    status: StatusCode,
    headers: HeaderMap,
    mut body: Value,
) -> Response {
    match fault.as_ref().map(|f| f.fault) {
        Some(FaultKind::MalformedJson) => {
            let text = body.to_string();
            let mut cut = text.len() / 2;
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            let mut response =
                (status, headers, Body::from(text[..cut].to_string())).into_response();
            response
                .headers_mut()
                .insert("content-type", HeaderValue::from_static("application/json"));
            return response;
        }
        Some(FaultKind::UnknownStatus) => {
            if let Some(s) = body.get_mut("status") {
                *s = Value::String("MYSTERY_STATE".into());
            }
        }
        Some(FaultKind::AcceptThenHang) => {
            let ms = fault.as_ref().and_then(|f| f.ms).unwrap_or(3_600_000);
            state.sleep(Duration::from_millis(ms)).await;
        }
        _ => {}
    }
    (status, headers, Json(body)).into_response()
}

/// `/_fake/faults` (POST adds, GET lists, DELETE clears), `/_fake/stats`, and the webhook
/// controls (see [`super::webhooks::routes`]).
pub(super) fn routes() -> Router<Shared> {
    Router::new()
        .route("/_fake/faults", post(add).get(list).delete(clear))
        .route("/_fake/stats", get(stats))
        .merge(super::webhooks::routes())
}

/// One fault or a list of them.
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(FaultSpec),
    Many(Vec<FaultSpec>),
}

async fn add(AxState(state): AxState<Shared>, body: axum::body::Bytes) -> Response {
    match serde_json::from_slice::<OneOrMany>(&body) {
        Ok(OneOrMany::One(spec)) => state.faults.add(spec),
        Ok(OneOrMany::Many(specs)) => specs.into_iter().for_each(|s| state.faults.add(s)),
        Err(e) => {
            let message = format!("invalid fault: {e}");
            return (
                StatusCode::BAD_REQUEST,
                Json(serde_json::json!({ "error": message })),
            )
                .into_response();
        }
    }
    (StatusCode::CREATED, Json(state.faults.list())).into_response()
}

async fn list(AxState(state): AxState<Shared>) -> Json<Vec<FaultSpec>> {
    Json(state.faults.list())
}

async fn clear(AxState(state): AxState<Shared>) -> StatusCode {
    state.faults.clear();
    StatusCode::NO_CONTENT
}

async fn stats(AxState(state): AxState<Shared>) -> Json<super::FakeStats> {
    Json(state.stats())
}
