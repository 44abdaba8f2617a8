//! The fake provider: real HTTP on loopback speaking fal's, BytePlus's and Replicate's
//! dialects (under `/fal`, `/byteplus/api/v3`, `/replicate/v1`), so the real adapters are
//! what tests, benchmarks and the demo exercise.
//!
//! Each job is queued for the first quarter of `render_time`, then running, then ends:
//! succeeded (its output at `/files/{id}.mp4` until `output_ttl` later), or failed with a
//! moderation error for a `failure_rate` share of jobs, drawn from a generator seeded with
//! `seed`. Scripted faults (`POST /_fake/faults`, see [`FaultSpec`]) make single requests
//! fail the ways providers do; `GET /_fake/stats` counts requests and created jobs, which
//! is how a test proves that one generation did not become two paid jobs. Webhooks are
//! signed as each provider signs them (fal Ed25519 + JWKS, Replicate Standard Webhooks,
//! BytePlus nothing); see `webhooks.rs` and docs/providers.md for keys and controls.
//!
//! The fake accepts any API key and none, but refuses a wrong `Authorization` scheme
//! (fal `Key`, the others `Bearer`) with 401, so an adapter sending the wrong one fails.

mod account;
mod byteplus;
mod fal;
pub mod faults;
mod files;
mod plisio;
mod progress;
mod redelivery;
mod replicate;
mod state;
mod webhooks;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use axum::Router;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use faults::{FakeOp, FaultKind, FaultSpec};
pub use files::{bytes_of as file_bytes, SIZE as FILE_SIZE};
pub use redelivery::schedule as webhook_retry_schedule;
pub use replicate::PAGE_SIZE as REPLICATE_PAGE_SIZE;
pub use state::FakeStats;
pub use webhooks::{DEFAULT_FAL_USER_ID, DEFAULT_REPLICATE_WEBHOOK_SECRET};

use crate::providers::{ProviderKind, ProvidersConfig};
use faults::Dialect;
use state::State;

/// How the fake's jobs behave.
#[derive(Debug, Clone, PartialEq)]
pub struct FakeConfig {
    /// Time from submit to the end of a job (queued for the first quarter). Defaults to 2 s.
    pub render_time: Duration,
    /// Share of jobs that fail at the end with a moderation error, 0 to 1. Defaults to 0.
    pub failure_rate: f64,
    /// Seed of the generator that draws ids and failures. Defaults to 0.
    pub seed: u64,
    /// How long an output file stays downloadable after its job ends. Defaults to 1 h.
    pub output_ttl: Duration,
    /// fal user id in `X-Fal-Webhook-User-Id` and signed messages. Defaults to
    /// [`DEFAULT_FAL_USER_ID`].
    pub fal_user_id: String,
    /// Replicate's Standard Webhooks secret (`whsec_` + base64), served at
    /// `GET /replicate/v1/webhooks/default/secret`. Defaults to
    /// [`DEFAULT_REPLICATE_WEBHOOK_SECRET`].
    pub replicate_webhook_secret: String,
    /// Failed webhooks are retried on each provider's real schedule with every delay
    /// multiplied by this (0.01: fal's two hours in 77 s); 0 sends each webhook once.
    /// Defaults to 0, so tests that count lost callbacks see each loss once.
    pub webhook_retry_scale: f64,
    /// Renders each provider's account runs at once; the others wait in its queue (fal
    /// `IN_QUEUE` with `queue_position`, Replicate `starting`, BytePlus `queued`) until a
    /// slot frees. `None` (the default) is unlimited: every job starts at once.
    pub account_concurrency: Option<usize>,
    /// Tasks BytePlus lets wait for a slot before it refuses a create with 429
    /// (the real account: 120). Only reached with an `account_concurrency`.
    pub byteplus_queued_cap: usize,
}

/// The real BytePlus account's queued-task cap.
pub const BYTEPLUS_QUEUED_CAP: usize = 120;

impl Default for FakeConfig {
    fn default() -> Self {
        Self {
            render_time: Duration::from_secs(2),
            failure_rate: 0.0,
            seed: 0,
            output_ttl: Duration::from_secs(3600),
            fal_user_id: DEFAULT_FAL_USER_ID.into(),
            replicate_webhook_secret: DEFAULT_REPLICATE_WEBHOOK_SECRET.into(),
            webhook_retry_scale: 0.0,
            account_concurrency: None,
            byteplus_queued_cap: BYTEPLUS_QUEUED_CAP,
        }
    }
}

/// `genq fake-provider`: serve the fake provider on loopback until SIGTERM/SIGINT.
#[derive(Debug, Clone, clap::Args)]
pub struct FakeProviderArgs {
    /// Port on 127.0.0.1.
    #[arg(long, default_value_t = 9900)]
    pub port: u16,
    /// Time from submit to the end of a job (e.g. 500ms, 2s, 1m).
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    pub render_time: Duration,
    /// Share of jobs that fail with a moderation error at the end, 0 to 1.
    #[arg(long, default_value_t = 0.0)]
    pub failure_rate: f64,
    /// How long outputs stay downloadable after a job ends.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub output_ttl: Duration,
    /// Seed for ids and failures (same seed and order, same run).
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// fal user id the webhooks are signed for.
    #[arg(long, default_value = DEFAULT_FAL_USER_ID)]
    pub fal_user_id: String,
    /// Replicate webhook secret (`whsec_` + base64).
    #[arg(long, default_value = DEFAULT_REPLICATE_WEBHOOK_SECRET)]
    pub replicate_webhook_secret: String,
    /// Retry failed webhooks on each provider's schedule, every delay multiplied by this
    /// (1: real time, 0.01: a hundred times faster, 0: never retry).
    #[arg(long, default_value_t = 1.0)]
    pub webhook_retry_scale: f64,
    /// Renders each provider account runs at once (the rest wait in its queue, as at a
    /// real account); unlimited when absent.
    #[arg(long)]
    pub account_concurrency: Option<usize>,
    /// Queued tasks BytePlus accepts before refusing creates with 429.
    #[arg(long, default_value_t = BYTEPLUS_QUEUED_CAP)]
    pub byteplus_queued_cap: usize,
}

impl FakeProviderArgs {
    /// The fake's configuration from these arguments.
    pub fn config(&self) -> FakeConfig {
        FakeConfig {
            render_time: self.render_time,
            failure_rate: self.failure_rate,
            seed: self.seed,
            output_ttl: self.output_ttl,
            fal_user_id: self.fal_user_id.clone(),
            replicate_webhook_secret: self.replicate_webhook_secret.clone(),
            webhook_retry_scale: self.webhook_retry_scale,
            account_concurrency: self.account_concurrency,
            byteplus_queued_cap: self.byteplus_queued_cap,
        }
    }
}

/// A running fake provider.
pub struct FakeServer {
    addr: SocketAddr,
    state: Arc<State>,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for FakeServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeServer")
            .field("addr", &self.addr)
            .finish()
    }
}

impl FakeServer {
    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Provider configuration pointing at this fake (see [`base_urls`]).
    pub fn providers_config(&self) -> ProvidersConfig {
        base_urls(self.addr)
    }

    /// What the fake has seen so far (as `GET /_fake/stats`).
    pub fn stats(&self) -> FakeStats {
        self.state.stats()
    }

    /// Waits until `reached` holds for [`FakeServer::stats`], woken by the fake each time
    /// they change rather than by polling; panics after `within`, naming `what`.
    pub async fn wait_for_stats(
        &self,
        what: &str,
        within: Duration,
        reached: impl Fn(&FakeStats) -> bool,
    ) {
        assert!(
            self.state.wait_for_stats(within, reached).await,
            "timed out after {within:?} waiting for {what}; the fake's stats: {:?}",
            self.stats()
        );
    }

    /// The callback URL of every job created with one (they name the generation), so a
    /// test can tell a submit that never arrived from one whose answer was lost.
    pub fn callback_urls(&self) -> Vec<String> {
        self.state.webhook_urls()
    }

    /// Adds a scripted fault (as `POST /_fake/faults`).
    pub fn add_fault(&self, spec: FaultSpec) {
        self.state.faults.add(spec);
    }

    /// fal's webhook JWKS (as `GET /fal/.well-known/jwks.json`).
    pub fn fal_jwks(&self) -> serde_json::Value {
        self.state.signing.jwks()
    }

    /// Replicate's current webhook secret (as `GET /replicate/v1/webhooks/default/secret`).
    pub fn replicate_webhook_secret(&self) -> String {
        self.state.signing.replicate_secret()
    }

    /// Plisio's API base on this fake (`http://127.0.0.1:PORT/plisio/api/v1`), for
    /// `[payments] plisio_base_url`.
    pub fn plisio_base_url(&self) -> String {
        format!("{}{}", self.url(), plisio::PREFIX)
    }

    /// Sets a Plisio operation (as `POST /_fake/plisio/operations/{txn_id}`); `data` is an
    /// object with at least `status`.
    pub fn set_plisio_operation(&self, txn_id: &str, mut data: serde_json::Value) {
        data["txn_id"] = serde_json::Value::String(txn_id.to_string());
        self.state
            .plisio(|ops| ops.operations.insert(txn_id.to_string(), data));
    }

    /// Makes Plisio answer requests for `txn_id` with HTTP `status` and its error body
    /// (`None`: normally again), as `POST`/`DELETE /_fake/plisio/faults/{txn_id}`.
    pub fn set_plisio_fault(&self, txn_id: &str, status: Option<u16>) {
        self.state.plisio(|ops| match status {
            Some(status) => ops.faults.insert(txn_id.to_string(), status),
            None => ops.faults.remove(txn_id),
        });
    }

    /// Requests to Plisio's operations API for `txn_id` so far (faulted ones included).
    pub fn plisio_polls_of(&self, txn_id: &str) -> u64 {
        self.state
            .plisio(|ops| ops.polls.get(txn_id).copied().unwrap_or(0))
    }

    /// Removes every scripted fault (as `DELETE /_fake/faults`).
    pub fn clear_faults(&self) {
        self.state.faults.clear();
    }

    /// Stops serving: hung requests end at once, then in-flight requests finish.
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// Default provider configuration with each base URL pointing at a fake on `addr`
/// (`http://ADDR/fal`, `http://ADDR/byteplus/api/v3`, `http://ADDR/replicate/v1`). Keys are
/// still read from the usual variables; the fake accepts any.
pub fn base_urls(addr: SocketAddr) -> ProvidersConfig {
    let mut cfg = ProvidersConfig::default();
    for kind in ProviderKind::ALL {
        cfg.endpoint_mut(kind).base_url = format!("http://{addr}{}", prefix(kind));
    }
    cfg
}

/// Where each dialect lives on the fake.
pub fn prefix(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::Fal => "/fal",
        ProviderKind::BytePlus => "/byteplus/api/v3",
        ProviderKind::Replicate => "/replicate/v1",
    }
}

/// Binds `addr` (port 0 picks a free one) and serves until stopped.
pub async fn serve(addr: SocketAddr, cfg: FakeConfig) -> anyhow::Result<FakeServer> {
    anyhow::ensure!(
        (0.0..=1.0).contains(&cfg.failure_rate),
        "failure_rate must be between 0 and 1, not {}",
        cfg.failure_rate
    );
    anyhow::ensure!(
        cfg.webhook_retry_scale.is_finite() && cfg.webhook_retry_scale >= 0.0,
        "webhook_retry_scale must be 0 or more, not {}",
        cfg.webhook_retry_scale
    );
    anyhow::ensure!(
        cfg.replicate_webhook_secret.starts_with("whsec_")
            && crate::providers::signing::standard_webhooks_key(&cfg.replicate_webhook_secret)
                .is_ok(),
        "replicate_webhook_secret must be whsec_ followed by base64"
    );
    anyhow::ensure!(
        cfg.account_concurrency != Some(0),
        "account_concurrency must be 1 or more (leave it unset for unlimited)"
    );
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("fake provider cannot listen on {addr}"))?;
    let addr = listener.local_addr()?;
    let (stop, stopped) = watch::channel(false);
    let state = Arc::new(State::new(cfg, format!("http://{addr}"), stopped.clone())?);
    let app = Router::new()
        .merge(fal::routes())
        .merge(byteplus::routes())
        .merge(replicate::routes())
        .merge(files::routes())
        .merge(plisio::routes())
        .merge(faults::routes())
        .with_state(state.clone());
    let task = tokio::spawn(async move {
        let mut stopped = stopped;
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.wait_for(|s| *s).await;
            })
            .await;
        if let Err(err) = served {
            tracing::error!(error = %err, "fake provider failed");
        }
    });
    Ok(FakeServer {
        addr,
        state,
        stop,
        task: Some(task),
    })
}

/// `genq fake-provider`: serves on `127.0.0.1:port` until SIGTERM or SIGINT.
pub async fn run_cli(port: u16, cfg: FakeConfig) -> anyhow::Result<()> {
    let server = serve(SocketAddr::from(([127, 0, 0, 1], port)), cfg.clone()).await?;
    let addr = server.addr();
    tracing::info!(%addr, render_time = ?cfg.render_time, failure_rate = cfg.failure_rate,
        "fake provider listening");
    println!(
        "fake provider on http://{addr} (render time {:?}, failure rate {})",
        cfg.render_time, cfg.failure_rate
    );
    for kind in ProviderKind::ALL {
        println!(
            "  GENQ_PROVIDERS_{}_BASE_URL=http://{addr}{}",
            kind.as_str().to_uppercase(),
            prefix(kind)
        );
    }
    println!("  faults: POST http://{addr}/_fake/faults   stats: GET http://{addr}/_fake/stats");
    println!(
        "  webhooks: fal JWKS GET http://{addr}/fal/.well-known/jwks.json (user id {}), \
         Replicate secret GET http://{addr}/replicate/v1/webhooks/default/secret",
        cfg.fal_user_id
    );
    wait_for_signal().await?;
    server.stop().await;
    Ok(())
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    Ok(())
}

/// Refuses a request whose `Authorization` uses another scheme than the provider's. A
/// missing header passes: the fake runs without keys.
fn check_auth(headers: &HeaderMap, scheme: &str, dialect: &dyn Dialect) -> Option<Response> {
    let value = headers.get(header::AUTHORIZATION)?;
    let ok = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix(scheme))
        .and_then(|v| v.strip_prefix(' '))
        .is_some_and(|key| !key.trim().is_empty());
    (!ok).then(|| {
        dialect.error(
            StatusCode::UNAUTHORIZED,
            None,
            &format!("expected Authorization: {scheme} <key>"),
        )
    })
}
