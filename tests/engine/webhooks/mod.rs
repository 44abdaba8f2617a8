//! Webhooks end to end: the fake provider calls the daemon's real HTTP server back (fal
//! Ed25519 with its JWKS, Replicate Standard Webhooks, BytePlus tokens), callbacks are stored
//! once in `genq.webhook_events`, reconciled through the poll path, and the ledger stays
//! clean; forged, stale, oversized, duplicate, late and out-of-order callbacks change nothing;
//! the sweeper finishes generations whose callback never comes.

use std::sync::Arc;
use std::time::Duration;

use genq::credits::{self, GenerationState};
use genq::dev::fake_provider::faults::{FakeOp, FaultKind, FaultSpec};
use genq::http::webhooks::Webhooks;
use genq::http::{HttpServer, HttpState};
use genq::jobs::generation::Pipeline;
use genq::providers::signing;
use genq::providers::ProviderKind;
use genq::{DaemonHandle, JobState, Registry};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use uuid::Uuid;

use crate::common::generation::GenEnv;
use crate::common::{free_port, wait_until, TestDb};

mod callbacks;
mod payments;
mod payments_poll;
mod sweeper;

const BYTEPLUS_SECRET: &str = "test-byteplus-callback-secret";

/// A generation fixture whose webhook URLs point at the daemon's own HTTP server.
async fn hook_env(po: PgPoolOptions, co: PgConnectOptions) -> (GenEnv, u16) {
    hook_env_with(GenEnv::setup(po, co).await).await
}

/// `env` with its webhook URLs pointing at a daemon HTTP server on a free port.
pub(crate) async fn hook_env_with(mut env: GenEnv) -> (GenEnv, u16) {
    let port = free_port();
    env.config.providers.webhook_base_url = format!("http://127.0.0.1:{port}");
    env.config.webhooks.fal_jwks_url = format!("{}/fal/.well-known/jwks.json", env.fake.url());
    env.config.webhooks.fal_user_id = "fake-fal-user".into();
    env.config.webhooks.fal_jwks_refetch_after = Duration::ZERO;
    env.config.database.max_connections = 10;
    (env, port)
}

/// Starts a daemon with `config` and its HTTP server on `port`.
pub(crate) async fn start(
    env: &GenEnv,
    config: genq::config::Config,
    port: u16,
) -> (DaemonHandle, HttpServer) {
    let daemon = start_daemon(env, config.clone());
    let server = serve_webhooks(env, &config, port, &daemon).await;
    (daemon, server)
}

/// Starts a daemon with `config` whose callbacks go to `webhook_base_url`, without an
/// HTTP server (callbacks to it are refused until [`serve_webhooks`]).
pub(crate) fn start_daemon(env: &GenEnv, config: genq::config::Config) -> DaemonHandle {
    let mut pipeline = Pipeline::from_config(&config).unwrap();
    pipeline.callback_secret = Some(BYTEPLUS_SECRET.as_bytes().to_vec());
    let mut registry = Registry::new();
    Arc::new(pipeline).register(&mut registry);
    env.db.daemon(config, registry)
}

/// Serves `daemon`'s HTTP server (webhooks included) on `port`.
pub(crate) async fn serve_webhooks(
    env: &GenEnv,
    config: &genq::config::Config,
    port: u16,
    daemon: &DaemonHandle,
) -> HttpServer {
    // Secrets come from the environment in production; here they are handed over directly.
    let webhooks = Webhooks::with_secrets(
        &config.webhooks,
        Some(env.fake.replicate_webhook_secret()),
        Some(BYTEPLUS_SECRET.as_bytes().to_vec()),
    )
    .unwrap();
    serve(daemon, port, webhooks).await
}

/// Serves `daemon`'s HTTP server on `port`, verifying Plisio callbacks only.
pub(crate) async fn serve_plisio(env: &GenEnv, daemon: &DaemonHandle, port: u16) -> HttpServer {
    let webhooks = Webhooks::with_secrets(&env.config.webhooks, None, None)
        .unwrap()
        .with_plisio_secret(Some(PLISIO_SECRET.as_bytes().to_vec()));
    serve(daemon, port, webhooks).await
}

/// Serves `daemon`'s HTTP server on `port` with `webhooks`.
async fn serve(daemon: &DaemonHandle, port: u16, webhooks: Webhooks) -> HttpServer {
    genq::http::serve(
        &format!("127.0.0.1:{port}"),
        HttpState {
            daemon: daemon.control(),
            admin_token: None,
            console: Default::default(),
            webhooks: Some(Arc::new(webhooks)),
            events: None,
        },
    )
    .await
    .unwrap()
}

/// An invoice of `payer` recorded by the backend, created (and last changed) `age` ago.
pub(crate) async fn invoice(env: &GenEnv, txn: &str, credits: i64, age: Duration) {
    sqlx::query("SELECT genq.record_invoice($1, $2, 'payer', $3)")
        .bind(txn)
        .bind(format!("order-{txn}"))
        .bind(credits)
        .execute(&env.db.pool)
        .await
        .unwrap();
    sqlx::query(
        "UPDATE genq.payments SET created_at = now() - make_interval(secs => $2),
                updated_at = now() - make_interval(secs => $2) WHERE txn_id = $1",
    )
    .bind(txn)
    .bind(age.as_secs_f64())
    .execute(&env.db.pool)
    .await
    .unwrap();
}

/// Waits (at most `within`) until the fake Plisio has answered `n` more polls than now.
pub(crate) async fn more_plisio_polls(env: &GenEnv, n: u64, within: Duration) {
    let polls = env.fake.stats().plisio_polls;
    env.fake
        .wait_for_stats(&format!("{n} more Plisio polls"), within, |s| {
            s.plisio_polls >= polls + n
        })
        .await;
}

pub(crate) async fn events(env: &GenEnv, id: Uuid) -> Vec<(String, bool, Option<i64>, bool)> {
    sqlx::query_as(
        "SELECT provider, orphan, job_id, processed_at IS NOT NULL FROM genq.webhook_events
          WHERE generation_id = $1 ORDER BY id",
    )
    .bind(id)
    .fetch_all(&env.db.pool)
    .await
    .unwrap()
}

async fn event_count(env: &GenEnv) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM genq.webhook_events")
        .fetch_one(&env.db.pool)
        .await
        .unwrap()
}

pub(crate) async fn fake_post(env: &GenEnv, path: &str, body: Value) -> Value {
    let reply = reqwest::Client::new()
        .post(format!("{}{path}", env.fake.url()))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(reply.status().is_success(), "{path}: {}", reply.status());
    reply.json().await.unwrap()
}

fn now() -> String {
    chrono::Utc::now().timestamp().to_string()
}

/// A Replicate callback signed by the test with `secret`.
async fn post_replicate(
    port: u16,
    secret: &str,
    msg_id: &str,
    timestamp: &str,
    generation_id: Uuid,
    body: &Value,
) -> reqwest::Response {
    let raw = serde_json::to_vec(body).unwrap();
    reqwest::Client::new()
        .post(format!(
            "http://127.0.0.1:{port}/webhooks/replicate?generation_id={generation_id}"
        ))
        .header("webhook-id", msg_id)
        .header("webhook-timestamp", timestamp)
        .header(
            "webhook-signature",
            signing::standard_webhooks_sign(secret, msg_id, timestamp, &raw),
        )
        .header("content-type", "application/json")
        .body(raw)
        .send()
        .await
        .unwrap()
}

const PLISIO_SECRET: &str = "test-plisio-secret-key";

/// A Plisio `json=true` callback with its keys in this order and a valid `verify_hash`
/// placed among them, pretty-printed (the hash covers the compact form).
fn plisio_body(fields: &[(&str, Value)], secret: &str) -> String {
    let mut map = serde_json::Map::new();
    for (k, v) in fields {
        map.insert((*k).to_string(), v.clone());
    }
    let hash = genq::payments::plisio_hash(secret.as_bytes(), &map);
    let mut with_hash = serde_json::Map::new();
    for (i, (k, v)) in map.into_iter().enumerate() {
        if i == 2 {
            with_hash.insert("verify_hash".into(), Value::String(hash.clone()));
        }
        with_hash.insert(k, v);
    }
    serde_json::to_string_pretty(&Value::Object(with_hash)).unwrap()
}

async fn post_plisio(port: u16, body: String) -> (StatusCode, Value) {
    let r = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{port}/webhooks/plisio?json=true"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    (r.status(), r.json().await.unwrap())
}

fn plisio_fields(txn: &str, status: &str) -> Vec<(&'static str, Value)> {
    vec![
        ("txn_id", json!(txn)),
        ("ipn_type", json!("invoice")),
        ("merchant", json!("genq")),
        ("status", json!(status)),
        ("order_number", json!(format!("order-{txn}"))),
        ("amount", json!("0.00123400")),
        ("currency", json!("BTC")),
        // A number with trailing zeros: signed as received (arbitrary_precision).
        (
            "source_amount",
            serde_json::from_str::<Value>("10.50").unwrap(),
        ),
        ("source_currency", json!("USD")),
    ]
}

async fn payment(env: &GenEnv, txn: &str) -> (String, i64) {
    sqlx::query_as(
        "SELECT status, jsonb_array_length(history)::int8 FROM genq.payments WHERE txn_id = $1",
    )
    .bind(txn)
    .fetch_one(&env.db.pool)
    .await
    .unwrap()
}
