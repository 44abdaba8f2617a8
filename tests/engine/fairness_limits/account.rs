//! The fake provider's account: with `account_concurrency` N it renders at most N at once;
//! the rest wait in its queue (fal `IN_QUEUE` with `queue_position`), get a slot in order
//! as renders end, and BytePlus refuses creates past its queued cap with a 429 that the
//! pipeline treats as "the account is full": the generation waits and is sent again later,
//! without a failed attempt, a lost hold or a second paid job.

use std::time::Duration;

use genq::credits::GenerationState;
use genq::dev::fake_provider::{self as fake, FakeConfig, FakeServer};
use genq::providers::ProviderKind;
use serde_json::Value;

use super::*;
use crate::common::generation::GenEnv;
use crate::common::wait_until;

/// POSTs a fal submit straight to the fake; returns the submit answer.
async fn fal_submit(fake: &FakeServer, http: &reqwest::Client) -> Value {
    http.post(format!(
        "{}/fal/fal-ai/kling-video/v2/image-to-video",
        fake.url()
    ))
    .json(&json!({"prompt": "a cat surfing"}))
    .send()
    .await
    .unwrap()
    .json()
    .await
    .unwrap()
}

async fn fal_status(http: &reqwest::Client, submitted: &Value) -> Value {
    http.get(submitted["status_url"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn fal_requests_past_the_account_concurrency_wait_in_queue_with_positions() {
    let fake = fake::serve(
        "127.0.0.1:0".parse().unwrap(),
        FakeConfig {
            render_time: Duration::from_millis(1500),
            account_concurrency: Some(2),
            ..FakeConfig::default()
        },
    )
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let mut submitted = Vec::new();
    for _ in 0..5 {
        submitted.push(fal_submit(&fake, &http).await);
    }
    // Two render; three wait, in submit order.
    let stats = fake.stats();
    assert_eq!(
        (
            stats.rendering(ProviderKind::Fal),
            stats.waiting(ProviderKind::Fal)
        ),
        (2, 3)
    );
    assert_eq!(submitted[2]["queue_position"], 0);
    assert_eq!(submitted[4]["queue_position"], 2);
    for (i, position) in [(2, 0), (3, 1), (4, 2)] {
        let status = fal_status(&http, &submitted[i]).await;
        assert_eq!(status["status"], "IN_QUEUE", "{status}");
        assert_eq!(status["queue_position"], position, "{status}");
    }
    // When the first two end, the next two get their slots and the last moves up.
    wait_until(
        Duration::from_secs(10),
        "the first renders to end",
        || async { fal_status(&http, &submitted[0]).await["status"] == "COMPLETED" },
    )
    .await;
    let status = fal_status(&http, &submitted[4]).await;
    assert_eq!(
        (status["status"].as_str(), status["queue_position"].as_u64()),
        (Some("IN_QUEUE"), Some(0)),
        "{status}"
    );
    let stats = fake.stats();
    assert!(stats.rendering(ProviderKind::Fal) <= 2, "{stats:?}");
    // Never more than two at once, through to the end.
    wait_until(Duration::from_secs(15), "every request to end", || async {
        let mut done = true;
        for s in &submitted {
            done &= fal_status(&http, s).await["status"] == "COMPLETED";
        }
        assert!(fake.stats().rendering(ProviderKind::Fal) <= 2);
        done
    })
    .await;
    assert_eq!(fake.stats().created(ProviderKind::Fal), 5);
    fake.stop().await;
}

#[tokio::test]
async fn byteplus_refuses_creates_past_its_queued_cap_with_429() {
    let fake = fake::serve(
        "127.0.0.1:0".parse().unwrap(),
        FakeConfig {
            render_time: Duration::from_secs(5),
            account_concurrency: Some(1),
            byteplus_queued_cap: 2,
            ..FakeConfig::default()
        },
    )
    .await
    .unwrap();
    let http = reqwest::Client::new();
    let create = || {
        http.post(format!(
            "{}/byteplus/api/v3/contents/generations/tasks",
            fake.url()
        ))
        .json(&json!({"model": "seedance", "content": [{"type": "text", "text": "a cat"}]}))
        .send()
    };
    for _ in 0..3 {
        assert_eq!(create().await.unwrap().status(), 200);
    }
    let refused = create().await.unwrap();
    assert_eq!(refused.status(), 429);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["code"], "QuotaExceeded.QueuedTasks", "{body}");
    let stats = fake.stats();
    assert_eq!(stats.created(ProviderKind::BytePlus), 3);
    assert_eq!(stats.refused_queue_full(ProviderKind::BytePlus), 1);
    assert_eq!(stats.waiting(ProviderKind::BytePlus), 2);
    fake.stop().await;
}

#[sqlx::test(migrations = false)]
async fn a_full_byteplus_queue_makes_generations_wait_not_fail_or_pay_twice(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let env = GenEnv::with_fake(
        TestDb::new(po, co).await,
        FakeConfig {
            render_time: Duration::from_millis(800),
            account_concurrency: Some(1),
            byteplus_queued_cap: 1,
            ..FakeConfig::default()
        },
    )
    .await;
    env.grant("user-a", 100).await;
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(env.request("user-a", "byteplus", 10).await);
    }
    let daemon = env.daemon();
    for id in &ids {
        let g = env.wait_final(*id, Duration::from_secs(60)).await;
        assert_eq!(g.state, GenerationState::Succeeded, "{g:?}");
        assert_eq!(env.entries(*id).await, vec!["hold", "capture"]);
    }
    let stats = env.fake.stats();
    assert!(
        stats.refused_queue_full(ProviderKind::BytePlus) >= 1,
        "the account's queue was full at least once: {stats:?}"
    );
    assert_eq!(
        stats.created(ProviderKind::BytePlus),
        4,
        "one paid task per generation"
    );
    // No attempt was spent on a full queue: a snooze runs the job again and gives the
    // attempt back (max_attempts grows by one), so each job spent exactly one of its ten.
    let attempts: Vec<(i32, i32)> = sqlx::query_as(
        "SELECT attempt, max_attempts FROM genq.jobs WHERE kind = 'generation.submit' ORDER BY id",
    )
    .fetch_all(&env.db.pool)
    .await
    .unwrap();
    assert!(attempts.iter().all(|(a, max)| max - a == 9), "{attempts:?}");
    assert!(
        attempts.iter().any(|(_, max)| *max > 10),
        "one waited for room: {attempts:?}"
    );
    let balance = env.balance("user-a").await;
    assert_eq!((balance.available, balance.held), (60, 0));
    env.assert_ledger_clean().await;
    daemon.shutdown().await;
}
