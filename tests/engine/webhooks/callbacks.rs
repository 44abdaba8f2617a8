//! Webhooks, provider callbacks: each dialect finished once by its verified callback,
//! forged/stale/oversized/unknown ones refused, fal key rotation, callbacks before the submit
//! is saved or after the ambiguous-submit grace, and a thousand at once.

use super::*;

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
        env.fake
            .wait_for_stats("the refused delivery", Duration::from_secs(10), |s| {
                s.webhooks_failed >= 1
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
    env.fake
        .wait_for_stats("the refused delivery", Duration::from_secs(10), |s| {
            s.webhooks_failed == 4
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
