//! Plisio's operations API, as the payments poll uses it:
//! `GET /plisio/api/v1/operations/{txn_id}?api_key=...` → `{"status":"success","data":{...}}`,
//! or `{"status":"error","data":{"name","message","code"}}` for a missing key or an unknown
//! operation. Operations are set through the control API:
//! `POST /_fake/plisio/operations/{txn_id}` with a JSON object (at least `status`), which
//! replaces the operation's fields (`txn_id` is filled in). A scripted fault makes one
//! operation's requests fail until it is removed: `POST /_fake/plisio/faults/{txn_id}` with
//! `{"status": 500}` (any HTTP status; Plisio's error body), `DELETE` the same path. Every
//! operations request is counted (`GET /_fake/stats`, `plisio_polls`) and per operation
//! ([`crate::dev::fake_provider::FakeServer::plisio_polls_of`]): payments-poll tests check
//! which payments were asked about.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{Path, Query, State as AxState};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::state::Shared;

/// Where the Plisio dialect lives on the fake.
pub const PREFIX: &str = "/plisio/api/v1";

pub(super) fn routes() -> Router<Shared> {
    Router::new()
        .route(&format!("{PREFIX}/operations/{{txn_id}}"), get(operation))
        .route("/_fake/plisio/operations/{txn_id}", post(set_operation))
        .route(
            "/_fake/plisio/faults/{txn_id}",
            post(set_fault).delete(clear_fault),
        )
}

/// Plisio's side: operations by txn id, faulted operations (the HTTP status they answer)
/// and the requests for each operation.
#[derive(Debug, Default)]
pub(crate) struct PlisioOps {
    pub operations: HashMap<String, Value>,
    pub faults: HashMap<String, u16>,
    pub polls: HashMap<String, u64>,
}

#[derive(Deserialize)]
struct Key {
    api_key: Option<String>,
}

fn error(status: StatusCode, code: u32, message: &str) -> Response {
    (
        status,
        Json(json!({ "status": "error",
                     "data": { "name": "Error", "message": message, "code": code } })),
    )
        .into_response()
}

async fn operation(
    AxState(state): AxState<Shared>,
    Path(txn_id): Path<String>,
    Query(key): Query<Key>,
) -> Response {
    state.count_plisio_poll();
    let (fault, data) = state.plisio(|ops| {
        *ops.polls.entry(txn_id.clone()).or_default() += 1;
        (
            ops.faults.get(&txn_id).copied(),
            ops.operations.get(&txn_id).cloned(),
        )
    });
    if key.api_key.as_deref().is_none_or(str::is_empty) {
        return error(StatusCode::UNAUTHORIZED, 401, "api_key is required");
    }
    if let Some(status) = fault {
        state.count_fault();
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return error(status, u32::from(status.as_u16()), "Internal error");
    }
    match data {
        Some(data) => Json(json!({ "status": "success", "data": data })).into_response(),
        None => error(StatusCode::NOT_FOUND, 404, "Operation not found"),
    }
}

async fn set_operation(
    AxState(state): AxState<Shared>,
    Path(txn_id): Path<String>,
    body: Bytes,
) -> Response {
    let Ok(Value::Object(mut data)) = serde_json::from_slice::<Value>(&body) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": "a JSON object is expected" })),
        )
            .into_response();
    };
    if !data.get("status").is_some_and(Value::is_string) {
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({ "error": "status (a string) is required" })),
        )
            .into_response();
    }
    data.insert("txn_id".into(), Value::String(txn_id.clone()));
    let data = Value::Object(data);
    state.plisio(|ops| ops.operations.insert(txn_id, data.clone()));
    Json(data).into_response()
}

#[derive(Deserialize)]
struct Fault {
    status: u16,
}

async fn set_fault(
    AxState(state): AxState<Shared>,
    Path(txn_id): Path<String>,
    Json(fault): Json<Fault>,
) -> Response {
    let reply = json!({ "txn_id": txn_id, "status": fault.status });
    state.plisio(|ops| ops.faults.insert(txn_id, fault.status));
    Json(reply).into_response()
}

async fn clear_fault(AxState(state): AxState<Shared>, Path(txn_id): Path<String>) -> Response {
    let removed = state.plisio(|ops| ops.faults.remove(&txn_id));
    Json(json!({ "txn_id": txn_id, "status": removed })).into_response()
}
