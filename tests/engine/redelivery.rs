//! Webhook redelivery: the fake provider retries a failed callback on the provider's own
//! schedule (here at 1/100 of real time), and a callback lost while the daemon's endpoint
//! was down still ends the generation it names — above all an ambiguous fal submit, which
//! nothing else can find again before `AMBIGUOUS_GRACE`.

use std::time::Duration;

use genq::credits::GenerationState;
use genq::dev::fake_provider::faults::{FakeOp, FaultKind, FaultSpec};
use genq::dev::fake_provider::FakeConfig;
use genq::providers::ProviderKind;
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::common::generation::GenEnv;
use crate::common::{wait_until, TestDb};
use crate::webhooks::{events, fake_post, hook_env_with, serve_webhooks, start, start_daemon};

/// A webhook fixture whose fake retries failed callbacks at 1/100 of real time (fal's
/// first retry after 150 ms, its last about 77 s after the first failure).
async fn retrying_env(po: PgPoolOptions, co: PgConnectOptions) -> (GenEnv, u16) {
    let fake = FakeConfig {
        render_time: Duration::from_millis(400),
        webhook_retry_scale: 0.01,
        ..FakeConfig::default()
    };
    hook_env_with(GenEnv::with_fake(TestDb::new(po, co).await, fake).await).await
}

#[sqlx::test(migrations = false)]
async fn an_ambiguous_fal_submit_is_adopted_from_a_redelivered_callback(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let (env, port) = retrying_env(po, co).await;
    env.grant("u1", 100).await;
    // fal creates the request and the answer never comes (the daemon times out after 2 s):
    // the generation stays `submitting`, and fal cannot be asked which request it made.
    let mut hang = FaultSpec::new(ProviderKind::Fal, FakeOp::Submit, FaultKind::AcceptThenHang);
    hang.ms = Some(60_000);
    env.fake.add_fault(hang);
    // The daemon runs, but its webhook endpoint is down: the first callback is refused.
    let daemon = start_daemon(&env, env.config.clone());
    let id = env.request("u1", "fal", 10).await;
    env.fake
        .wait_for_stats("a refused callback", Duration::from_secs(20), |s| {
            s.webhooks_failed >= 1
        })
        .await;
    assert_eq!(env.generation(id).await.state, GenerationState::Submitting);

    // The endpoint comes back; fal's next retry lands and names the request.
    let server = serve_webhooks(&env, &env.config, port, &daemon).await;
    let g = env.wait_final(id, Duration::from_secs(60)).await;
    env.assert_output_stored(&g);
    assert_eq!(g.provider_meta["adopted_from_webhook"], true, "{g:?}");
    assert_eq!(env.entries(id).await, vec!["hold", "capture"]);
    let stats = env.fake.stats();
    assert_eq!(stats.created(ProviderKind::Fal), 1, "one paid request");
    assert!(stats.webhook_retries >= 1, "{stats:?}");
    assert!(stats.webhooks_sent >= 1, "{stats:?}");
    daemon.shutdown().await;
    server.stop().await;
    assert_eq!(env.balance("u1").await.available, 90);
    env.assert_ledger_clean().await;
    env.assert_retention_clean().await;
}

#[sqlx::test(migrations = false)]
async fn callbacks_answered_with_errors_are_retried_in_every_dialect(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let (env, port) = retrying_env(po, co).await;
    env.grant("u1", 100).await;
    // The endpoint is up but the first two delivery attempts fail before reaching it (a
    // load balancer answering 502): each dialect's retry still brings its callback.
    fake_post(&env, "/_fake/webhooks/refuse", json!({"times": 2})).await;
    let (daemon, server) = start(&env, env.config.clone(), port).await;
    let mut ids = Vec::new();
    for provider in ["fal", "byteplus", "replicate"] {
        ids.push(env.request("u1", provider, 10).await);
    }
    for id in &ids {
        let g = env.wait_final(*id, Duration::from_secs(60)).await;
        env.assert_output_stored(&g);
        wait_until(Duration::from_secs(30), "the callback stored", || async {
            !events(&env, *id).await.is_empty()
        })
        .await;
    }
    let stats = env.fake.stats();
    assert_eq!(stats.webhooks_failed, 2, "{stats:?}");
    assert!(stats.webhook_retries >= 2, "{stats:?}");
    assert_eq!(stats.webhooks_abandoned, 0, "{stats:?}");
    for kind in ProviderKind::ALL {
        assert_eq!(stats.created(kind), 1, "{kind:?}: one paid job");
    }
    daemon.shutdown().await;
    server.stop().await;
    assert_eq!(env.balance("u1").await.available, 70);
    env.assert_ledger_clean().await;
    env.assert_retention_clean().await;
}

#[sqlx::test(migrations = false)]
async fn a_callback_nobody_takes_is_given_up_after_the_providers_schedule(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let (env, _port) = retrying_env(po, co).await;
    env.grant("u1", 100).await;
    // No endpoint ever answers: Replicate's five retries (62 s real, 0.62 s here) end, the
    // poll job ends the generation alone.
    let daemon = start_daemon(&env, env.config.clone());
    let id = env.request("u1", "replicate", 10).await;
    let g = env.wait_final(id, Duration::from_secs(30)).await;
    env.assert_output_stored(&g);
    env.fake
        .wait_for_stats("the webhook abandoned", Duration::from_secs(20), |s| {
            s.webhooks_abandoned == 1
        })
        .await;
    let stats = env.fake.stats();
    assert_eq!(
        stats.webhooks_failed, 6,
        "first try and five retries: {stats:?}"
    );
    assert_eq!(stats.webhook_retries, 5, "{stats:?}");
    daemon.shutdown().await;
    env.assert_ledger_clean().await;
    env.assert_retention_clean().await;
}
