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

const FAST: Duration = Duration::from_millis(400);
const BYTEPLUS_SECRET: &str = "test-byteplus-callback-secret";

/// A generation fixture whose webhook URLs point at the daemon's own HTTP server.
async fn hook_env(po: PgPoolOptions, co: PgConnectOptions) -> (GenEnv, u16) {
    hook_env_with(GenEnv::new(TestDb::new(po, co).await, FAST).await).await
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
    let webhooks = Arc::new(
        Webhooks::with_secrets(
            &config.webhooks,
            Some(env.fake.replicate_webhook_secret()),
            Some(BYTEPLUS_SECRET.as_bytes().to_vec()),
        )
        .unwrap(),
    );
    genq::http::serve(
        &format!("127.0.0.1:{port}"),
        HttpState {
            daemon: daemon.control(),
            admin_token: None,
            webhooks: Some(webhooks),
        },
    )
    .await
    .unwrap()
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

#[sqlx::test(migrations = false)]
async fn each_dialect_is_finished_by_its_verified_callback_once(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let (env, port) = hook_env(po, co).await;
    env.grant("u1", 100).await;
    let (daemon, server) = start(&env, env.config.clone(), port).await;
    let ids = [
        (env.request("u1", "fal", 10).await, "fal"),
        (env.request("u1", "byteplus", 20).await, "byteplus"),
        (env.request("u1", "replicate", 30).await, "replicate"),
    ];
    for (id, provider) in ids {
        let g = env.wait_final(id, Duration::from_secs(30)).await;
        env.assert_output_stored(&g);
        wait_until(
            Duration::from_secs(10),
            "the callback to be processed",
            || async {
                events(&env, id).await.iter().all(|e| e.3) && !events(&env, id).await.is_empty()
            },
        )
        .await;
        let evs = events(&env, id).await;
        assert_eq!(evs.len(), 1, "{provider}: {evs:?}");
        assert_eq!(evs[0].0, provider);
        assert!(!evs[0].1, "not an orphan");
        let job = env.db.job(evs[0].2.expect("a reconcile job")).await;
        assert_eq!(job.kind, "generation.reconcile");
        assert_eq!(env.entries(id).await, vec!["hold", "capture"]);
    }
    // Duplicates: every callback delivered three more times changes nothing.
    for (id, _) in ids {
        let request_id = env.generation(id).await.provider_request_id.unwrap();
        let replay = fake_post(
            &env,
            "/_fake/webhooks/replay",
            json!({"request_id": request_id, "times": 3}),
        )
        .await;
        assert_eq!(
            replay["delivered"], 3,
            "duplicates are acknowledged: {replay}"
        );
    }
    assert_eq!(event_count(&env).await, 3, "duplicates are not stored");
    assert_eq!(
        env.db
            .count("generation.reconcile", JobState::Completed)
            .await
            + env
                .db
                .count("generation.reconcile", JobState::Available)
                .await,
        3,
        "duplicates enqueue nothing"
    );
    // Late and out of order: BytePlus `running` after `succeeded`, with a valid token.
    let (bp, _) = ids[1];
    let task = env.generation(bp).await.provider_request_id.unwrap();
    let token = signing::callback_token(BYTEPLUS_SECRET.as_bytes(), &bp.to_string());
    let late = reqwest::Client::new()
        .post(format!(
            "http://127.0.0.1:{port}/webhooks/byteplus/{bp}/{token}"
        ))
        .json(&json!({"id": task, "status": "running"}))
        .send()
        .await
        .unwrap();
    assert_eq!(late.status(), StatusCode::OK);
    wait_until(
        Duration::from_secs(10),
        "the late callback to be reconciled",
        || async {
            let evs = events(&env, bp).await;
            evs.len() == 2 && evs.iter().all(|e| e.3)
        },
    )
    .await;
    let g = env.generation(bp).await;
    assert_eq!(g.state, GenerationState::Succeeded);
    assert_eq!(env.entries(bp).await, vec!["hold", "capture"]);
    daemon.shutdown().await;
    server.stop().await;
    assert_eq!(env.balance("u1").await.available, 40);
    for kind in ProviderKind::ALL {
        assert_eq!(env.fake.stats().created(kind), 1);
    }
    env.assert_ledger_clean().await;
}

#[sqlx::test(migrations = false)]
async fn forged_stale_future_oversized_and_unknown_callbacks(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let (env, port) = hook_env(po, co).await;
    env.grant("u1", 10).await;
    let (daemon, server) = start(&env, env.config.clone(), port).await;
    let id = env.request("u1", "replicate", 10).await;
    let g = env.wait_final(id, Duration::from_secs(30)).await;
    assert_eq!(g.state, GenerationState::Succeeded);
    wait_until(Duration::from_secs(10), "the real callback", || async {
        event_count(&env).await == 1
    })
    .await;
    let secret = env.fake.replicate_webhook_secret();
    let body = json!({"id": "p-forged", "status": "succeeded"});
    let http = reqwest::Client::new();

    // Wrong secret, stale and future timestamps: 401, nothing stored.
    let forged = post_replicate(
        port,
        "whsec_d3Jvbmctc2VjcmV0LXdyb25nLXNlY3JldA==",
        "msg_a",
        &now(),
        id,
        &body,
    )
    .await;
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);
    let stale = (chrono::Utc::now().timestamp() - 400).to_string();
    let future = (chrono::Utc::now().timestamp() + 400).to_string();
    assert_eq!(
        post_replicate(port, &secret, "msg_b", &stale, id, &body)
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        post_replicate(port, &secret, "msg_c", &future, id, &body)
            .await
            .status(),
        StatusCode::UNAUTHORIZED
    );
    // Tampered body under a valid signature of another body.
    let ts = now();
    let sig = signing::standard_webhooks_sign(&secret, "msg_d", &ts, b"{}");
    let tampered = http
        .post(format!(
            "http://127.0.0.1:{port}/webhooks/replicate?generation_id={id}"
        ))
        .header("webhook-id", "msg_d")
        .header("webhook-timestamp", &ts)
        .header("webhook-signature", sig)
        .body(r#"{"status":"succeeded"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(tampered.status(), StatusCode::UNAUTHORIZED);
    // fal: a signature no JWKS key made; missing headers.
    let fal = http
        .post(format!(
            "http://127.0.0.1:{port}/webhooks/fal?generation_id={id}"
        ))
        .header("x-fal-webhook-request-id", "r1")
        .header("x-fal-webhook-user-id", "fake-fal-user")
        .header("x-fal-webhook-timestamp", now())
        .header("x-fal-webhook-signature", "ab".repeat(64))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(fal.status(), StatusCode::UNAUTHORIZED);
    let bare = http
        .post(format!("http://127.0.0.1:{port}/webhooks/fal"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(bare.status(), StatusCode::UNAUTHORIZED);
    // BytePlus: a token for another generation.
    let other = signing::callback_token(BYTEPLUS_SECRET.as_bytes(), &Uuid::new_v4().to_string());
    let bp = http
        .post(format!(
            "http://127.0.0.1:{port}/webhooks/byteplus/{id}/{other}"
        ))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(bp.status(), StatusCode::UNAUTHORIZED);
    // Over 1 MiB: 413.
    let big = http
        .post(format!("http://127.0.0.1:{port}/webhooks/replicate"))
        .body(vec![b' '; 1024 * 1024 + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(big.status(), StatusCode::PAYLOAD_TOO_LARGE);
    // Larger than the rest of the server accepts (64 KiB), within the webhooks' 1 MiB.
    let padded = json!({"id": "p-big", "status": "succeeded", "logs": "x".repeat(200 * 1024)});
    let ok = post_replicate(port, &secret, "msg_big", &now(), Uuid::new_v4(), &padded).await;
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(ok.json::<Value>().await.unwrap()["result"], "orphan");
    assert_eq!(event_count(&env).await, 2, "nothing forged was stored");

    // Unknown generation: 200, kept as an orphan, nothing enqueued.
    let stranger = Uuid::new_v4();
    let orphan = post_replicate(port, &secret, "msg_orphan", &now(), stranger, &body).await;
    assert_eq!(orphan.status(), StatusCode::OK);
    assert_eq!(orphan.json::<Value>().await.unwrap()["result"], "orphan");
    let evs = events(&env, stranger).await;
    assert_eq!(evs.len(), 1);
    assert!(evs[0].1 && evs[0].2.is_none(), "{evs:?}");

    // The metric counts each result.
    let metrics = http
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for result in ["bad_signature", "too_large", "orphan", "accepted"] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with("genq_webhooks_received_total")
                    && l.contains(&format!("result=\"{result}\""))),
            "{result} counted"
        );
    }
    daemon.shutdown().await;
    server.stop().await;
    assert_eq!(env.entries(id).await, vec!["hold", "capture"]);
    env.assert_ledger_clean().await;
}

#[sqlx::test(migrations = false)]
async fn fal_keys_rotate_unknown_keys_stale_timestamps_and_other_users_are_refused(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let (env, port) = hook_env(po, co).await;
    env.grant("u1", 100).await;
    let (daemon, server) = start(&env, env.config.clone(), port).await;
    // First callback: the JWKS is fetched once.
    let first = env.request("u1", "fal", 10).await;
    env.wait_final(first, Duration::from_secs(30)).await;
    wait_until(Duration::from_secs(10), "the first callback", || async {
        events(&env, first).await.len() == 1
    })
    .await;
    let jwks_fetches = || env.fake.stats().ops(ProviderKind::Fal, FakeOp::Jwks);
    assert_eq!(jwks_fetches(), 1);

    // Rotation: the next callback is signed with a key the cache does not hold; one refetch.
    fake_post(&env, "/_fake/fal-keys/rotate", json!({})).await;
    let rotated = env.request("u1", "fal", 10).await;
    env.wait_final(rotated, Duration::from_secs(30)).await;
    wait_until(Duration::from_secs(10), "the rotated callback", || async {
        events(&env, rotated).await.len() == 1
    })
    .await;
    assert_eq!(jwks_fetches(), 2, "one refetch after the rotation");

    // A key no JWKS lists, a stale and a future timestamp: refused, the poll finishes them.
    fake_post(&env, "/_fake/fal-keys/unknown", json!({"times": 1})).await;
    let unknown = env.request("u1", "fal", 10).await;
    let g = env.wait_final(unknown, Duration::from_secs(30)).await;
    assert_eq!(g.state, GenerationState::Succeeded);
    for seconds in [600, -600] {
        fake_post(
            &env,
            "/_fake/webhooks/stale",
            json!({"seconds": seconds, "times": 1}),
        )
        .await;
        let id = env.request("u1", "fal", 10).await;
        let g = env.wait_final(id, Duration::from_secs(30)).await;
        assert_eq!(g.state, GenerationState::Succeeded);
        // The webhook went out (and was refused) before the first poll ended it.
        wait_until(Duration::from_secs(10), "the refused delivery", || async {
            env.fake.stats().webhooks_failed >= 1
        })
        .await;
        assert!(events(&env, id).await.is_empty());
    }
    assert!(events(&env, unknown).await.is_empty());
    assert_eq!(env.fake.stats().webhooks_failed, 3);
    daemon.shutdown().await;
    server.stop().await;

    // Another fal account's callbacks (valid signature, other user id) are refused.
    let mut config = env.config.clone();
    config.webhooks.fal_user_id = "someone-else".into();
    let (daemon, server) = start(&env, config, port).await;
    let foreign = env.request("u1", "fal", 10).await;
    let g = env.wait_final(foreign, Duration::from_secs(30)).await;
    assert_eq!(g.state, GenerationState::Succeeded);
    wait_until(Duration::from_secs(10), "the refused delivery", || async {
        env.fake.stats().webhooks_failed == 4
    })
    .await;
    assert!(events(&env, foreign).await.is_empty());
    daemon.shutdown().await;
    server.stop().await;
    env.assert_ledger_clean().await;
}

#[sqlx::test(migrations = false)]
async fn a_callback_before_the_submit_response_is_saved(po: PgPoolOptions, co: PgConnectOptions) {
    let (env, port) = hook_env(po, co).await;
    env.grant("u1", 100).await;
    // The provider creates the job, renders it (and calls back), and the submit answer
    // never comes: the generation is `submitting` when the callback arrives.
    for kind in [ProviderKind::Fal, ProviderKind::Replicate] {
        let mut hang = FaultSpec::new(kind, FakeOp::Submit, FaultKind::AcceptThenHang);
        hang.ms = Some(60_000);
        env.fake.add_fault(hang);
    }
    let (daemon, server) = start(&env, env.config.clone(), port).await;
    let fal = env.request("u1", "fal", 10).await;
    let replicate = env.request("u1", "replicate", 10).await;
    // fal cannot be looked up: without the callback it would fail after
    // `providers.ambiguous_submit_grace` (10 min). The callback names the request, which is adopted.
    for id in [fal, replicate] {
        let g = env.wait_final(id, Duration::from_secs(40)).await;
        env.assert_output_stored(&g);
        assert_eq!(env.entries(id).await, vec!["hold", "capture"]);
    }
    let g = env.generation(fal).await;
    assert_eq!(g.provider_meta["adopted_from_webhook"], true, "{g:?}");
    daemon.shutdown().await;
    server.stop().await;
    assert_eq!(env.fake.stats().created(ProviderKind::Fal), 1);
    assert_eq!(env.fake.stats().created(ProviderKind::Replicate), 1);
    env.assert_ledger_clean().await;
}

#[sqlx::test(migrations = false)]
async fn a_callback_after_the_ambiguous_submit_grace_is_recorded_for_the_failed_generation(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    // fal renders for 8 s; the submit answer never comes and the grace is 1 s, so the
    // generation fails (hold released) before fal's callback arrives.
    let mut env = GenEnv::new(TestDb::new(po, co).await, Duration::from_secs(8)).await;
    let port = free_port();
    env.config.providers.webhook_base_url = format!("http://127.0.0.1:{port}");
    env.config.webhooks.fal_jwks_url = format!("{}/fal/.well-known/jwks.json", env.fake.url());
    env.config.webhooks.fal_user_id = "fake-fal-user".into();
    env.config.providers.ambiguous_submit_grace = Duration::from_secs(1);
    env.config.providers.request_timeout = Duration::from_secs(1);
    env.grant("u1", 100).await;
    let mut hang = FaultSpec::new(ProviderKind::Fal, FakeOp::Submit, FaultKind::AcceptThenHang);
    hang.ms = Some(60_000);
    env.fake.add_fault(hang);
    let (daemon, server) = start(&env, env.config.clone(), port).await;
    let id = env.request("u1", "fal", 10).await;
    let g = env.wait_final(id, Duration::from_secs(30)).await;
    assert_eq!(g.state, GenerationState::Failed, "{g:?}");
    assert!(g.provider_request_id.is_none(), "{g:?}");
    assert!(
        events(&env, id).await.is_empty(),
        "failed before the callback"
    );
    assert_eq!(env.entries(id).await, vec!["hold", "release"]);

    // The late callback is stored and processed, and changes nothing else.
    wait_until(
        Duration::from_secs(20),
        "the late callback processed",
        || async {
            matches!(
                events(&env, id).await.as_slice(),
                [(_, false, Some(_), true)]
            )
        },
    )
    .await;
    let g = env.generation(id).await;
    assert_eq!(g.state, GenerationState::Failed);
    assert_eq!(env.entries(id).await, vec!["hold", "release"]);
    assert_eq!(
        env.balance("u1").await.available,
        100,
        "the user pays nothing"
    );
    assert_eq!(
        env.fake.stats().created(ProviderKind::Fal),
        1,
        "never resubmitted"
    );
    daemon.shutdown().await;
    server.stop().await;
    env.assert_ledger_clean().await;
}

#[sqlx::test(migrations = false)]
async fn the_sweeper_finishes_generations_whose_callback_never_comes(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let mut env = GenEnv::new(TestDb::new(po, co).await, FAST).await;
    env.config.sweep.interval = Duration::from_secs(1);
    env.config.sweep.stale_after = Duration::from_secs(1);
    env.grant("u1", 100).await;
    // No callback comes (port 9), and the poll job is lost: cancelled by hand.
    let mut config = env.config.clone();
    config.queues.remove("maintenance");
    let daemon = env.daemon_with(config);
    let lost = env.request("u1", "byteplus", 10).await;
    let expired = env.request("u1", "replicate", 10).await;
    for id in [lost, expired] {
        wait_until(Duration::from_secs(20), "submitted", || async {
            env.generation(id).await.state == GenerationState::Submitted
        })
        .await;
    }
    daemon.shutdown().await;
    sqlx::query("DELETE FROM genq.jobs WHERE kind = 'generation.poll'")
        .execute(&env.db.pool)
        .await
        .unwrap();
    // One of them was submitted longer ago than the retention window.
    sqlx::query(
        "UPDATE genq.generations SET submitted_at = now() - interval '8 days' WHERE id = $1",
    )
    .bind(expired)
    .execute(&env.db.pool)
    .await
    .unwrap();
    let daemon = env.daemon();
    let g = env.wait_final(lost, Duration::from_secs(30)).await;
    env.assert_output_stored(&g);
    assert_eq!(env.entries(lost).await, vec!["hold", "capture"]);
    let g = env.wait_final(expired, Duration::from_secs(30)).await;
    assert_eq!(g.state, GenerationState::Failed);
    assert!(g.error.as_deref().unwrap().contains("retention"), "{g:?}");
    assert_eq!(env.entries(expired).await, vec!["hold", "release"]);
    daemon.shutdown().await;
    assert_eq!(env.balance("u1").await.available, 90);
    env.assert_ledger_clean().await;
}

#[sqlx::test(migrations = false)]
async fn a_thousand_concurrent_callbacks_are_stored_and_reconciled_once(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    const N: usize = 1000;
    let (env, port) = hook_env(po, co).await;
    env.grant("u1", N as i64).await;
    // Generations exist, but no daemon works the generation queue yet.
    let mut ids = Vec::with_capacity(N);
    for _ in 0..N {
        ids.push(env.request("u1", "replicate", 1).await);
    }
    let mut idle = env.config.clone();
    idle.queues.remove("generation");
    let (daemon, server) = start(&env, idle, port).await;
    let secret = env.fake.replicate_webhook_secret();
    let send_all = |round: &'static str| {
        let ids = ids.clone();
        let secret = secret.clone();
        async move {
            let mut set = tokio::task::JoinSet::new();
            // All 1,000 are sent concurrently, at most 128 connections open at once, so the
            // test measures the server and not the loopback's connect backlog.
            let open = std::sync::Arc::new(tokio::sync::Semaphore::new(128));
            for (i, id) in ids.into_iter().enumerate() {
                let secret = secret.clone();
                let open = open.clone();
                set.spawn(async move {
                    let _permit = open.acquire_owned().await.unwrap();
                    let body = json!({"id": format!("p{i}"), "status": "succeeded"});
                    let r =
                        post_replicate(port, &secret, &format!("msg_{i}"), &now(), id, &body).await;
                    (
                        r.status(),
                        r.json::<Value>().await.unwrap()["result"]
                            .as_str()
                            .unwrap()
                            .to_string(),
                    )
                });
            }
            let mut results = std::collections::HashMap::<String, usize>::new();
            while let Some(r) = set.join_next().await {
                let (status, result) = r.unwrap();
                assert_eq!(status, StatusCode::OK, "{round}");
                *results.entry(result).or_default() += 1;
            }
            results
        }
    };
    let first = send_all("first").await;
    assert_eq!(first.get("accepted"), Some(&N), "{first:?}");
    let again = send_all("again").await;
    assert_eq!(again.get("duplicate"), Some(&N), "{again:?}");
    assert_eq!(event_count(&env).await, N as i64);
    assert_eq!(
        env.db
            .count("generation.reconcile", JobState::Available)
            .await,
        N as i64
    );
    daemon.shutdown().await;
    server.stop().await;
    // End the generations (cancelled while queued), then let the pipeline reconcile.
    {
        let mut conn = env.db.pool.acquire().await.unwrap();
        for id in &ids {
            credits::cancel_generation(&mut conn, *id).await.unwrap();
        }
    }
    let (daemon, server) = start(&env, env.config.clone(), port).await;
    wait_until(
        Duration::from_secs(60),
        "every reconcile job to complete",
        || async {
            env.db
                .count("generation.reconcile", JobState::Completed)
                .await
                == N as i64
        },
    )
    .await;
    let unprocessed: i64 =
        sqlx::query_scalar("SELECT count(*) FROM genq.webhook_events WHERE processed_at IS NULL")
            .fetch_one(&env.db.pool)
            .await
            .unwrap();
    assert_eq!(unprocessed, 0);
    let reruns: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM genq.jobs WHERE kind = 'generation.reconcile' AND attempt <> 1",
    )
    .fetch_one(&env.db.pool)
    .await
    .unwrap();
    assert_eq!(reruns, 0, "each reconciled once");
    daemon.shutdown().await;
    server.stop().await;
    assert_eq!(env.fake.stats().created(ProviderKind::Replicate), 0);
    env.assert_ledger_clean().await;
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

#[sqlx::test(migrations = false)]
async fn plisio_callbacks_grant_credits_once_and_send_mismatches_to_review(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let (env, port) = hook_env(po, co).await;
    let webhooks = Arc::new(
        Webhooks::with_secrets(&env.config.webhooks, None, None)
            .unwrap()
            .with_plisio_secret(Some(PLISIO_SECRET.as_bytes().to_vec())),
    );
    let daemon = env.daemon();
    let server = genq::http::serve(
        &format!("127.0.0.1:{port}"),
        HttpState {
            daemon: daemon.control(),
            admin_token: None,
            webhooks: Some(webhooks),
        },
    )
    .await
    .unwrap();
    for (txn, user, credits) in [
        ("t-ok", "payer", 500_i64),
        ("t-odd", "payer", 300),
        ("t-late", "payer", 100),
    ] {
        sqlx::query("SELECT genq.record_invoice($1, $2, $3, $4)")
            .bind(txn)
            .bind(format!("order-{txn}"))
            .bind(user)
            .bind(credits)
            .execute(&env.db.pool)
            .await
            .unwrap();
    }
    // Recording the same invoice again is a no-op; other values are refused.
    sqlx::query("SELECT genq.record_invoice('t-ok', 'order-t-ok', 'payer', 500)")
        .execute(&env.db.pool)
        .await
        .unwrap();
    assert!(
        sqlx::query("SELECT genq.record_invoice('t-ok', 'order-t-ok', 'payer', 501)")
            .execute(&env.db.pool)
            .await
            .is_err()
    );

    // pending, then completed three times (duplicates): one grant.
    let (s, r) = post_plisio(
        port,
        plisio_body(&plisio_fields("t-ok", "pending"), PLISIO_SECRET),
    )
    .await;
    assert_eq!(
        (s, r["result"].as_str().unwrap()),
        (StatusCode::OK, "accepted")
    );
    for expected in ["accepted", "duplicate", "duplicate"] {
        let (s, r) = post_plisio(
            port,
            plisio_body(&plisio_fields("t-ok", "completed"), PLISIO_SECRET),
        )
        .await;
        assert_eq!(
            (s, r["result"].as_str().unwrap()),
            (StatusCode::OK, expected)
        );
    }
    assert_eq!(env.balance("payer").await.available, 500);
    // A late `expired` does not undo a completed payment.
    post_plisio(
        port,
        plisio_body(&plisio_fields("t-ok", "expired"), PLISIO_SECRET),
    )
    .await;
    let (status, history): (String, Value) =
        sqlx::query_as("SELECT status, history FROM genq.payments WHERE txn_id = 't-ok'")
            .fetch_one(&env.db.pool)
            .await
            .unwrap();
    assert_eq!(status, "completed");
    assert_eq!(history.as_array().unwrap().len(), 3, "{history}");
    assert_eq!(env.balance("payer").await.available, 500);

    // A bad hash: 401, nothing recorded, nothing granted.
    let forged = plisio_body(&plisio_fields("t-late", "completed"), "not-the-secret");
    let (s, _) = post_plisio(port, forged).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let tampered =
        plisio_body(&plisio_fields("t-late", "completed"), PLISIO_SECRET).replace("10.50", "10.5");
    let (s, _) = post_plisio(port, tampered).await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "numbers are signed as received"
    );

    // mismatch → review, no credits; cancelled duplicate → cancelled.
    post_plisio(
        port,
        plisio_body(&plisio_fields("t-odd", "mismatch"), PLISIO_SECRET),
    )
    .await;
    post_plisio(
        port,
        plisio_body(
            &plisio_fields("t-late", "cancelled duplicate"),
            PLISIO_SECRET,
        ),
    )
    .await;
    let statuses: Vec<(String, String)> =
        sqlx::query_as("SELECT txn_id, status FROM genq.payments ORDER BY txn_id")
            .fetch_all(&env.db.pool)
            .await
            .unwrap();
    assert_eq!(
        statuses,
        vec![
            ("t-late".into(), "cancelled".into()),
            ("t-odd".into(), "review".into()),
            ("t-ok".into(), "completed".into())
        ]
    );
    assert_eq!(env.balance("payer").await.available, 500);

    // An unknown invoice: 200, kept as an orphan; once recorded, a redelivery applies.
    let (s, r) = post_plisio(
        port,
        plisio_body(&plisio_fields("t-new", "completed"), PLISIO_SECRET),
    )
    .await;
    assert_eq!(
        (s, r["result"].as_str().unwrap()),
        (StatusCode::OK, "orphan")
    );
    sqlx::query("SELECT genq.record_invoice('t-new', 'order-t-new', 'payer', 50)")
        .execute(&env.db.pool)
        .await
        .unwrap();
    let (_, r) = post_plisio(
        port,
        plisio_body(&plisio_fields("t-new", "completed"), PLISIO_SECRET),
    )
    .await;
    assert_eq!(r["result"], "accepted");
    assert_eq!(env.balance("payer").await.available, 550);
    daemon.shutdown().await;
    server.stop().await;
    env.assert_ledger_clean().await;
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

#[sqlx::test(migrations = false)]
async fn plisio_payments_without_callbacks_are_completed_by_the_poll(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let mut env = GenEnv::new(TestDb::new(po, co).await, FAST).await;
    env.config.payments.plisio_base_url = env.fake.plisio_base_url();
    env.config.payments.poll_interval = Duration::from_secs(1);
    env.config.payments.poll_after = Duration::ZERO;
    for (txn, credits) in [
        ("p-paid", 200_i64),
        ("p-odd", 70),
        ("p-wait", 40),
        ("p-gone", 10),
    ] {
        sqlx::query("SELECT genq.record_invoice($1, $2, 'payer', $3)")
            .bind(txn)
            .bind(format!("order-{txn}"))
            .bind(credits)
            .execute(&env.db.pool)
            .await
            .unwrap();
    }
    // No callback ever comes; Plisio knows the outcomes (p-gone it does not know at all).
    env.fake.set_plisio_operation(
        "p-paid",
        json!({ "status": "completed", "amount": "0.00200000", "currency": "BTC",
                "source_amount": "20.00", "source_currency": "USD" }),
    );
    env.fake
        .set_plisio_operation("p-odd", json!({ "status": "mismatch" }));
    // Set through the control API, as an operator would.
    fake_post(
        &env,
        "/_fake/plisio/operations/p-wait",
        json!({ "status": "pending" }),
    )
    .await;

    // The pipeline registers payments.poll only with Plisio's key (PLISIO_SECRET_KEY).
    let mut pipeline = Pipeline::from_config(&env.config).unwrap();
    pipeline.plisio_api_key = Some(genq::outbound::Secret::new(PLISIO_SECRET));
    let mut registry = Registry::new();
    Arc::new(pipeline).register(&mut registry);
    let daemon = env.db.daemon(env.config.clone(), registry);
    wait_until(
        Duration::from_secs(20),
        "polled payments settled",
        || async {
            payment(&env, "p-paid").await.0 == "completed"
                && payment(&env, "p-odd").await.0 == "review"
        },
    )
    .await;
    assert_eq!(env.balance("payer").await.available, 200);
    // Later runs poll only what is still open: the completed payment is granted once.
    let polls = env.fake.stats().plisio_polls;
    wait_until(Duration::from_secs(20), "two more poll runs", || async {
        env.fake.stats().plisio_polls >= polls + 4
    })
    .await;
    daemon.shutdown().await;
    assert_eq!(payment(&env, "p-paid").await, ("completed".into(), 1));
    assert_eq!(payment(&env, "p-odd").await, ("review".into(), 1));
    // Still pending at Plisio, or unknown to it: unchanged, nothing appended.
    assert_eq!(payment(&env, "p-wait").await, ("new".into(), 0));
    assert_eq!(payment(&env, "p-gone").await, ("new".into(), 0));
    assert_eq!(env.balance("payer").await.available, 200);
    let grants: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM genq.ledger WHERE idempotency_key = 'plisio:p-paid'",
    )
    .fetch_one(&env.db.pool)
    .await
    .unwrap();
    assert_eq!(grants, 1);
    env.assert_ledger_clean().await;
}

#[sqlx::test(migrations = false)]
async fn the_sweeper_fails_generations_whose_submit_job_is_final(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let mut env = GenEnv::new(TestDb::new(po, co).await, FAST).await;
    env.config.sweep.interval = Duration::from_secs(1);
    env.config.sweep.stale_after = Duration::from_secs(1);
    env.grant("u1", 100).await;
    // Nobody works the generation queue: submit jobs stay as they are set here.
    let mut config = env.config.clone();
    config.queues.remove("generation");
    let discarded = env.request("u1", "replicate", 10).await;
    let cancelled = env.request("u1", "fal", 10).await;
    let alive = env.request("u1", "byteplus", 10).await;
    for (id, state) in [(discarded, "discarded"), (cancelled, "cancelled")] {
        sqlx::query(
            "UPDATE genq.jobs SET state = $2::genq.job_state, finished_at = now()
              WHERE unique_key = 'generation.submit:' || $1::text",
        )
        .bind(id)
        .bind(state)
        .execute(&env.db.pool)
        .await
        .unwrap();
    }
    // One of them had started submitting when its job ran out of attempts.
    sqlx::query("UPDATE genq.generations SET state = 'submitting' WHERE id = $1")
        .bind(discarded)
        .execute(&env.db.pool)
        .await
        .unwrap();
    let daemon = env.daemon_with(config);
    for id in [discarded, cancelled] {
        let g = env.wait_final(id, Duration::from_secs(30)).await;
        assert_eq!(g.state, GenerationState::Failed);
        assert!(
            g.error.as_deref().unwrap().contains("submit job ended"),
            "{g:?}"
        );
        assert_eq!(env.entries(id).await, vec!["hold", "release"]);
    }
    // A generation whose submit job is still waiting is left alone.
    tokio::time::sleep(Duration::from_secs(2)).await;
    daemon.shutdown().await;
    assert_eq!(env.generation(alive).await.state, GenerationState::Queued);
    assert_eq!(env.entries(alive).await, vec!["hold"]);
    assert_eq!(env.balance("u1").await.available, 90);
    env.assert_ledger_clean().await;
}
