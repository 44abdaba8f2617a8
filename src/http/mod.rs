//! The daemon's HTTP servers (axum). The internal listener (`http.bind`) serves `/metrics`,
//! `/healthz`, `/readyz`, the `/admin` JSON API and the `/console` operator pages; the public
//! one (`http.public_bind`) serves only `/webhooks/*`, the browsers' live event streams
//! (`/v1/.../events`, when `[events]` is configured) and `/healthz` (which reveals nothing,
//! for load balancer health checks), so an operator exposes that port to the internet and
//! nothing else (`/readyz` echoes database errors, `/metrics` names queues and kinds,
//! `/admin` and `/console` control the fleet). With a public bind the webhooks and event
//! streams are served there only; without one the internal listener serves them too. Both
//! outlive the daemon's
//! drain, so Prometheus can still scrape a daemon that is finishing its last jobs.

pub mod admin;
pub mod config;
pub mod console;
pub mod error;
mod event_edge;
pub mod events;
pub mod health;
pub mod metrics;
mod serve;
pub mod webhooks;

use std::net::SocketAddr;

use axum::extract::DefaultBodyLimit;
use axum::Router;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::daemon::DaemonControl;
pub use admin::AdminToken;

/// Largest request body accepted; larger ones get 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// What every handler can reach.
#[derive(Clone)]
pub struct HttpState {
    /// The daemon behind this server.
    pub daemon: DaemonControl,
    /// The admin API token; `None` turns the admin API off.
    pub admin_token: Option<AdminToken>,
    /// Webhook verification; `None` answers every callback 503.
    pub webhooks: Option<std::sync::Arc<webhooks::Webhooks>>,
    /// Live event streams; `None` answers them 404.
    pub events: Option<std::sync::Arc<crate::events::Events>>,
    /// The operator console's read-only token and cookie settings (the admin token above
    /// also logs in to the console).
    pub console: console::ConsoleSettings,
}

/// Which routes a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routes {
    /// Health, metrics, admin and webhooks: the only listener.
    All,
    /// Health, metrics and admin: the internal listener beside a public one.
    Internal,
    /// Only `/webhooks/*`, `/v1/.../events` and `/healthz`: the listener facing the internet.
    Public,
}

impl Routes {
    fn describe(self) -> &'static str {
        match self {
            Routes::All => {
                "/metrics, /healthz, /readyz, /admin, /console, /webhooks, /v1/.../events"
            }
            Routes::Internal => "/metrics, /healthz, /readyz, /admin, /console",
            Routes::Public => "/webhooks, /v1/.../events, /healthz",
        }
    }
}

/// The full router (every route).
pub fn router(state: HttpState) -> Router {
    routes(state, Routes::All)
}

/// The router of one listener.
pub fn routes(state: HttpState, which: Routes) -> Router {
    let mut app = Router::new();
    if which == Routes::Public {
        app = app.merge(health::liveness());
    } else {
        app = app
            .merge(health::routes())
            .merge(metrics::routes())
            .nest("/admin", admin::routes(state.clone()))
            .merge(console::routes(state.clone()))
            .layer(DefaultBodyLimit::max(MAX_BODY_BYTES));
    }
    if which != Routes::Internal {
        // After the default limit, so the webhooks' own (larger) limit applies to them.
        let max_body = state.webhooks.as_ref().map_or_else(
            || config::WebhooksConfig::default().max_body_bytes,
            |w| w.max_body_bytes(),
        );
        app = app.merge(webhooks::routes(max_body));
        let origins = state
            .events
            .as_ref()
            .map(|e| e.config.allowed_origins.clone())
            .unwrap_or_default();
        app = app.merge(events::routes(&origins));
    }
    app.with_state(state)
}

/// A running server.
pub struct HttpServer {
    /// The address it listens on.
    pub addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl HttpServer {
    /// Stops accepting connections and waits for in-flight requests.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// Binds `bind` and serves every route until stopped.
pub async fn serve(bind: &str, state: HttpState) -> anyhow::Result<HttpServer> {
    serve_routes(bind, state, Routes::All).await
}

/// Binds `bind` and serves `which` routes until stopped.
pub async fn serve_routes(
    bind: &str,
    state: HttpState,
    which: Routes,
) -> anyhow::Result<HttpServer> {
    let setting = match which {
        Routes::Public => "http.public_bind / GENQ_HTTP_PUBLIC_BIND / --http-public",
        Routes::All | Routes::Internal => "http.bind / GENQ_HTTP_BIND / --http",
    };
    let listener = tokio::net::TcpListener::bind(bind)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {bind} ({setting}): {e}"))?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let event_edge = which != Routes::Internal && state.events.is_some();
    let app = routes(state, which);
    let task = tokio::spawn(serve::serve(listener, app, stopped, event_edge));
    tracing::info!(%addr, routes = which.describe(), "HTTP listening");
    Ok(HttpServer { addr, stop, task })
}
