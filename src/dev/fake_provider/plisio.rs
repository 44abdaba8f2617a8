//! Plisio's operations API, as the payments poll uses it:
//! `GET /plisio/api/v1/operations/{txn_id}?api_key=...` → `{"status":"success","data":{...}}`,
//! or `{"status":"error","data":{"name","message","code"}}` for a missing key or an unknown
//! operation. Operations are set through the control API:
//! `POST /_fake/plisio/operations/{txn_id}` with a JSON object (at least `status`), which
//! replaces the operation's fields (`txn_id` is filled in). Every operations request is
//! counted (`GET /_fake/stats`, `plisio_polls`).

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
    if key.api_key.as_deref().is_none_or(str::is_empty) {
        return error(StatusCode::UNAUTHORIZED, 401, "api_key is required");
    }
    match state.plisio_operation(&txn_id) {
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
    state.set_plisio_operation(&txn_id, data.clone());
    Json(data).into_response()
}
