//! Liveness and readiness. `/healthz` says the process answers; `/readyz` says this daemon
//! should get work: the database answers, its migrations are current, and it is not
//! draining. Load balancers and Kubernetes take a draining daemon out of rotation at once.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use super::HttpState;
use crate::db;

/// How long the readiness probe waits for the database.
const DB_PROBE_TIMEOUT: Duration = Duration::from_secs(2);

pub(crate) fn routes() -> Router<HttpState> {
    liveness().route("/readyz", get(readyz))
}

/// Only `/healthz`, which reveals nothing (the public listener serves it for load balancer
/// health checks).
pub(crate) fn liveness() -> Router<HttpState> {
    Router::new().route("/healthz", get(healthz))
}

async fn healthz() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

/// The readiness report.
#[derive(Debug, Serialize)]
pub struct Readiness {
    /// Whether all checks pass.
    pub ready: bool,
    /// "ok", or the database error.
    pub database: String,
    /// Whether every migration this binary knows is applied.
    pub migrations_current: bool,
    /// Whether the daemon stopped claiming.
    pub draining: bool,
}

async fn readyz(State(state): State<HttpState>) -> (StatusCode, Json<Readiness>) {
    let pool = state.daemon.pool();
    let (database, migrations_current) =
        match tokio::time::timeout(DB_PROBE_TIMEOUT, db::migrations_current(pool)).await {
            Ok(Ok(current)) => ("ok".to_string(), current),
            Ok(Err(e)) => (format!("error: {e}"), false),
            Err(_) => ("error: no answer within 2 s".to_string(), false),
        };
    let draining = state.daemon.is_draining();
    let ready = database == "ok" && migrations_current && !draining;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(Readiness {
            ready,
            database,
            migrations_current,
            draining,
        }),
    )
}
