//! The daemon's HTTP server (axum, one bind address): `/metrics`, `/healthz`, `/readyz`,
//! and the `/admin` JSON API. It outlives the daemon's drain, so Prometheus can still
//! scrape a daemon that is finishing its last jobs.

pub mod admin;
pub mod error;
pub mod health;
pub mod metrics;
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
}

/// The full router.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .merge(health::routes())
        .merge(metrics::routes())
        .nest("/admin", admin::routes(state.clone()))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        // After the default limit, so the webhooks' own (larger) limit applies to them.
        .merge(webhooks::routes(
            state.daemon.config().webhooks.max_body_bytes,
        ))
        .with_state(state)
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

/// Binds `bind` and serves until stopped.
pub async fn serve(bind: &str, state: HttpState) -> anyhow::Result<HttpServer> {
    let listener = tokio::net::TcpListener::bind(bind).await.map_err(|e| {
        anyhow::anyhow!("cannot listen on {bind} (http.bind / GENQ_HTTP_BIND / --http): {e}")
    })?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = oneshot::channel::<()>();
    let app = router(state);
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = stopped.await;
            })
            .await;
        if let Err(err) = served {
            tracing::error!(error = %err, "HTTP server failed");
        }
    });
    tracing::info!(%addr, "HTTP listening (/metrics, /healthz, /readyz, /admin, /webhooks)");
    Ok(HttpServer { addr, stop, task })
}
