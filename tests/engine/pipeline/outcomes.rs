//! Pipeline outcomes: success with one capture, refusals and failures that release,
//! duplicates run once, a cancel while rendering, and outputs that cannot or must not be
//! fetched.

use super::*;

#[sqlx::test(migrations = false)]
async fn each_dialect_succeeds_with_one_capture_and_a_stored_output(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let env = GenEnv::setup(po, co).await;
    env.grant("u1", 100).await;
    let daemon = env.daemon();
    let ids = [
        env.request("u1", "fal", 10).await,
        env.request("u1", "byteplus", 20).await,
        env.request("u1", "replicate", 30).await,
    ];
    for id in ids {
        let g = env.wait_final(id, Duration::from_secs(30)).await;
        env.assert_output_stored(&g);
        assert_eq!(env.entries(id).await, vec!["hold", "capture"]);
        assert!(g.provider_request_id.is_some());
    }
    daemon.shutdown().await;
    assert_eq!(env.balance("u1").await.available, 40);
    assert_eq!(env.balance("u1").await.held, 0);
    let created = env.fake.stats();
    for kind in ProviderKind::ALL {
        assert_eq!(created.created(kind), 1, "one paid request at {kind}");
    }
    env.assert_ledger_clean().await;
}

#[sqlx::test(migrations = false)]
async fn a_moderation_refusal_fails_the_generation_and_releases_the_hold(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let env = GenEnv::setup(po, co).await;
    env.grant("u1", 50).await;
    env.fake.add_fault(FaultSpec::new(
        ProviderKind::BytePlus,
        FakeOp::Submit,
        FaultKind::Moderation,
    ));
    let daemon = env.daemon();
    let id = env.request("u1", "byteplus", 50).await;
    let g = env.wait_final(id, Duration::from_secs(20)).await;
    daemon.shutdown().await;
    assert_eq!(g.state, GenerationState::Failed);
    assert!(
        g.error
            .as_deref()
            .unwrap_or("")
            .contains("byteplus refused the request"),
        "{g:?}"
    );
    assert_eq!(env.entries(id).await, vec!["hold", "release"]);
    assert_eq!(env.balance("u1").await.available, 50);
    env.assert_ledger_clean().await;
}

#[sqlx::test(migrations = false)]
async fn fal_completed_with_an_error_result_is_a_failure(po: PgPoolOptions, co: PgConnectOptions) {
    let env = GenEnv::setup(po, co).await;
    env.grant("u1", 10).await;
    env.fake.add_fault(FaultSpec::new(
        ProviderKind::Fal,
        FakeOp::Submit,
        FaultKind::CompletedWithError,
    ));
    let daemon = env.daemon();
    let id = env.request("u1", "fal", 10).await;
    let g = env.wait_final(id, Duration::from_secs(20)).await;
    daemon.shutdown().await;
    assert_eq!(g.state, GenerationState::Failed, "{g:?}");
    assert_eq!(env.entries(id).await, vec!["hold", "release"]);
    env.assert_ledger_clean().await;
}

#[sqlx::test(migrations = false)]
async fn a_duplicate_request_runs_once(po: PgPoolOptions, co: PgConnectOptions) {
    let env = GenEnv::setup(po, co).await;
    env.grant("u1", 100).await;
    let daemon = env.daemon();
    let request = genq::credits::NewGeneration {
        user_id: "u1".into(),
        provider: "replicate".into(),
        model: "bytedance/seedance-1-pro".into(),
        input: serde_json::json!({"prompt": "same request twice"}),
        cost: 25,
        idempotency_key: "order-42".into(),
    };
    let mut ids = Vec::new();
    for _ in 0..3 {
        let mut conn = env.db.pool.acquire().await.unwrap();
        ids.push(
            genq::credits::enqueue_generation(&mut conn, &request)
                .await
                .unwrap(),
        );
    }
    ids.dedup();
    assert_eq!(ids.len(), 1);
    let g = env.wait_final(ids[0], Duration::from_secs(30)).await;
    daemon.shutdown().await;
    env.assert_output_stored(&g);
    assert_eq!(env.balance("u1").await.available, 75);
    assert_eq!(env.fake.stats().created(ProviderKind::Replicate), 1);
    env.assert_ledger_clean().await;
}

#[sqlx::test(migrations = false)]
async fn a_prompt_naming_an_internal_url_is_never_fetched_as_an_output(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    // An "internal service" on loopback, inside the range the test daemon may reach (the
    // fake's files are there too): only the documented result fields keep it out.
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = hits.clone();
    let internal = axum::Router::new().fallback(move || {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            "internal secret"
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, internal).await.unwrap() });

    let env = GenEnv::setup(po, co).await;
    env.grant("u1", 10).await;
    let daemon = env.daemon();
    let prompt = format!("http://{addr}/admin/secrets.mp4");
    let id = env
        .request_with_input("u1", "fal", 10, serde_json::json!({ "prompt": prompt }))
        .await;
    let g = env.wait_final(id, Duration::from_secs(30)).await;
    daemon.shutdown().await;
    env.assert_output_stored(&g);
    let outputs = g.output.as_ref().and_then(|o| o.as_array()).unwrap();
    assert_eq!(outputs.len(), 1, "only the video is an output: {outputs:?}");
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "the URL in the prompt was fetched"
    );
    env.assert_ledger_clean().await;
}

#[sqlx::test(migrations = false)]
async fn an_output_that_expired_before_the_copy_captures_the_hold(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let env = GenEnv::setup(po, co).await;
    env.grant("u1", 30).await;
    let mut gone = FaultSpec::new(ProviderKind::Fal, FakeOp::File, FaultKind::ExpiredResult);
    gone.status = Some(410);
    env.fake.add_fault(gone);
    let daemon = env.daemon();
    let id = env.request("u1", "fal", 30).await;
    env.wait_final(id, Duration::from_secs(30)).await;
    daemon.shutdown().await;
    assert_unfetchable_and_captured(&env, id, "410").await;
    // Not a free render: the credits are spent.
    assert_eq!(env.balance("u1").await.available, 0);
    assert_eq!(env.balance("u1").await.held, 0);
}

#[sqlx::test(migrations = false)]
async fn the_default_outbound_policy_refuses_loopback_outputs_end_to_end(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let env = GenEnv::setup(po, co).await;
    env.grant("u1", 10).await;
    // The shipped default: no private range allowed. The fake's files are on loopback.
    let mut config = env.config.clone();
    config.outbound = Default::default();
    let daemon = env.daemon_with(config);
    let id = env.request("u1", "replicate", 10).await;
    env.wait_final(id, Duration::from_secs(30)).await;
    daemon.shutdown().await;
    assert_unfetchable_and_captured(&env, id, "non-public address").await;
    assert_eq!(
        env.fake.stats().ops(ProviderKind::Replicate, FakeOp::File),
        0,
        "the loopback file server was contacted"
    );
}

#[sqlx::test(migrations = false)]
async fn cancelling_a_rendering_generation_cancels_at_the_provider_and_releases(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let env = GenEnv::new(TestDb::new(po, co).await, Duration::from_secs(30)).await;
    env.grant("u1", 10).await;
    let daemon = env.daemon();
    let id = env.request("u1", "byteplus", 10).await;
    wait_until(Duration::from_secs(20), "submitted", || async {
        env.generation(id).await.state == GenerationState::Submitted
    })
    .await;
    let mut conn = env.db.pool.acquire().await.unwrap();
    genq::credits::cancel_generation(&mut conn, id)
        .await
        .unwrap();
    drop(conn);
    let g = env.wait_final(id, Duration::from_secs(20)).await;
    daemon.shutdown().await;
    assert_eq!(g.state, GenerationState::Cancelled, "{g:?}");
    assert_eq!(env.entries(id).await, vec!["hold", "release"]);
    assert_eq!(env.balance("u1").await.available, 10);
    env.assert_ledger_clean().await;
}
