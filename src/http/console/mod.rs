//! The operator console: server-rendered pages under `/console` on the internal listener
//! only (never the public one), for the operator who needs to understand an incident at a
//! glance and act on it. Thin handlers: the queries live in the modules that own the tables
//! (`queue::queue_control`, `queue::job_control`, `maintenance::fleet`, `generation`,
//! `credits`) or in the console's read model (`crate::console`).
//!
//! Security (docs/console.md, docs/security.md): a login with the admin token or the
//! read-only token opens a server-side session (cookie `HttpOnly; SameSite=Strict`, `Secure`
//! behind TLS); every POST carries the session's CSRF token, checked here in one place
//! together with the role, so a read-only session can never act; every action is audited.

pub mod auth;
pub mod charts;
pub mod fairness;
pub mod generations;
pub mod inbox;
pub mod jobs;
pub mod layout;
pub mod ops;
pub mod overview;
pub mod views;

use axum::http::{header, StatusCode};
use axum::middleware;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;

use super::{AdminToken, HttpState};
use crate::console::audit;
use crate::console::sessions::Session;
use crate::queue::job_control::ControlError;

/// The console's settings beside the admin token.
#[derive(Clone, Debug, Default)]
pub struct ConsoleSettings {
    /// The read-only token; `None`: only the admin token logs in.
    pub readonly_token: Option<AdminToken>,
    /// Mark the session cookie `Secure` whatever the request says.
    pub secure_cookie: bool,
}

/// Every console route (mounted on the internal listener only).
pub(crate) fn routes(state: HttpState) -> Router<HttpState> {
    let pages = Router::new()
        .route("/console", get(|| async { Redirect::to("/console/") }))
        .route("/console/", get(overview::show))
        .route("/console/queues/{queue}/pause", post(overview::pause))
        .route("/console/queues/{queue}/resume", post(overview::resume))
        .route(
            "/console/queues/{queue}/drain",
            post(overview::drain).get(overview::drain_progress),
        )
        .route("/console/queues/{queue}/cap", post(overview::cap))
        .route("/console/jobs", get(jobs::list))
        .route(
            "/console/jobs/bulk",
            get(jobs::bulk_confirm).post(jobs::bulk),
        )
        .route("/console/jobs/{id}", get(jobs::show))
        .route("/console/jobs/{id}/retry", post(jobs::retry))
        .route("/console/jobs/{id}/cancel", post(jobs::cancel))
        .route("/console/generations", get(generations::list))
        .route("/console/generations/{id}", get(generations::show))
        .route(
            "/console/generations/{id}/cancel",
            post(generations::cancel),
        )
        .route("/console/providers", get(ops::providers))
        .route(
            "/console/providers/{provider}/open",
            post(ops::open_circuit),
        )
        .route(
            "/console/providers/{provider}/close",
            post(ops::close_circuit),
        )
        .route("/console/webhooks", get(inbox::list))
        .route("/console/webhooks/{id}/redrive", post(inbox::redrive))
        .route("/console/fairness", get(fairness::show))
        .route("/console/credits", get(ops::credits))
        .route("/console/privacy", get(ops::privacy_page))
        .route("/console/audit", get(views::audit))
        .route("/console/logout", post(auth::logout))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_session,
        ));
    Router::new()
        .route("/console/login", get(auth::login_form).post(auth::login))
        .route("/console/assets/console.css", get(stylesheet))
        .route_layer(middleware::from_fn_with_state(state, auth::require_enabled))
        .merge(pages)
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        layout::CSS,
    )
        .into_response()
}

/// A failed page: status and a message for the operator, as an HTML page.
#[derive(Debug)]
pub struct PageError(pub StatusCode, pub String);

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let body = layout::error_page(self.0.as_u16(), &self.1);
        (self.0, html_headers(), body.into_string()).into_response()
    }
}

impl From<sqlx::Error> for PageError {
    fn from(err: sqlx::Error) -> Self {
        tracing::warn!(error = %err, "console request failed on the database");
        let status = if crate::db::is_transient(&err) {
            StatusCode::SERVICE_UNAVAILABLE
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        Self(status, format!("database error: {err}"))
    }
}

impl From<ControlError> for PageError {
    fn from(err: ControlError) -> Self {
        match err {
            ControlError::NotFound(_) => Self(StatusCode::NOT_FOUND, err.to_string()),
            ControlError::WrongState { .. } | ControlError::UniqueKeyHeld(_) => {
                Self(StatusCode::CONFLICT, err.to_string())
            }
            ControlError::Database(e) => e.into(),
        }
    }
}

/// The result of a page handler.
pub type PageResult = Result<Response, PageError>;

/// Headers of every console page: HTML, never cached, never framed, no referrer leaks.
pub fn html_headers() -> [(header::HeaderName, &'static str); 5] {
    [
        (header::CONTENT_TYPE, "text/html; charset=utf-8"),
        (header::CACHE_CONTROL, "no-store"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'",
        ),
    ]
}

/// An HTML 200 response.
pub fn html(markup: maud::Markup) -> Response {
    (html_headers(), markup.into_string()).into_response()
}

/// After an action: back to `to` with a notice.
pub fn see_other(to: &str, notice: &str) -> Response {
    let sep = if to.contains('?') { '&' } else { '?' };
    let target = format!(
        "{to}{sep}{}",
        layout::query(&[("notice", Some(notice.to_string()))])
    );
    Redirect::to(&target).into_response()
}

/// Writes the audit row of an action.
pub async fn record(
    state: &HttpState,
    session: &Session,
    action: &str,
    target: Option<&str>,
    affected: i64,
    detail: serde_json::Value,
) -> Result<(), PageError> {
    audit::record(
        state.daemon.pool(),
        &session.actor(),
        action,
        target,
        affected,
        detail,
    )
    .await?;
    Ok(())
}

/// A form or query value: trimmed, empty means absent.
pub fn opt(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
}
