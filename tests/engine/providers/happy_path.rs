//! Providers, the happy path: each dialect runs a job to a downloadable output, fal
//! keeps the URLs it answered with, Replicate version ids use their endpoint, cancels at
//! each phase, and the fake's own control API and seeding.

use super::*;

#[tokio::test]
async fn each_dialect_runs_a_job_to_a_downloadable_output() {
    let s = setup_slow().await;
    for kind in ProviderKind::ALL {
        let p = s.get(kind);
        let submitted = p.submit(&request(kind)).await.unwrap();
        let first = p
            .status(&submitted.request_id, &submitted.meta)
            .await
            .unwrap();
        assert!(
            matches!(first, RemoteStatus::Queued(_)),
            "{kind}: {first:?}"
        );
        let (end, seen) = run_to_end(p.as_ref(), &submitted).await;
        assert!(
            seen.iter().any(|s| matches!(s, RemoteStatus::Running(_))),
            "{kind}: never seen running: {seen:?}"
        );
        let RemoteStatus::Succeeded { outputs } = end else {
            panic!("{kind}: {end:?}")
        };
        assert_eq!(
            outputs[0].content_type.as_deref(),
            Some("video/mp4"),
            "{kind}"
        );
        let download = s.http.get(&outputs[0].url).send().await.unwrap();
        assert_eq!(download.status(), 200, "{kind}");
        assert_eq!(download.headers()["content-type"], "video/mp4");
        let bytes = download.bytes().await.unwrap();
        assert_eq!(
            bytes.as_ref(),
            fake::file_bytes(&submitted.request_id).as_slice(),
            "{kind}"
        );
    }
    let stats = s.stats().await;
    for kind in ProviderKind::ALL {
        assert_eq!(stats.created(kind), 1, "{kind}");
        assert_eq!(stats.ops(kind, FakeOp::Submit), 1, "{kind}");
        assert_eq!(
            stats.ops(kind, FakeOp::File),
            1,
            "{kind}: the download counts as its job's"
        );
    }
    // fal's COMPLETED was followed by a result fetch.
    assert_eq!(stats.ops(ProviderKind::Fal, FakeOp::Result), 1);
}

#[tokio::test]
async fn fal_submit_keeps_the_urls_fal_answered_with() {
    let s = setup().await;
    let submitted = s
        .get(ProviderKind::Fal)
        .submit(&request(ProviderKind::Fal))
        .await
        .unwrap();
    let status_url = submitted.meta["status_url"].as_str().unwrap();
    // owner/app only: the model's subpath is not part of the request URLs.
    assert!(status_url.ends_with(&format!(
        "/fal/fal-ai/kling-video/requests/{}/status",
        submitted.request_id
    )));
    assert!(submitted.meta["response_url"].is_string() && submitted.meta["cancel_url"].is_string());
    // Meta restored without the URLs (older rows) still works through owner/app.
    let bare = json!({"app": "fal-ai/kling-video"});
    assert!(s
        .get(ProviderKind::Fal)
        .status(&submitted.request_id, &bare)
        .await
        .is_ok());
}

#[tokio::test]
async fn replicate_version_ids_use_the_predictions_endpoint() {
    let s = setup().await;
    let p = s.get(ProviderKind::Replicate);
    let version = "5c7d5dc6dd8bf75c1acaa8565735e7986bc5b66206b55cca93cb72c9bf15ccaa";
    for model in [version.to_string(), format!("owner/name:{version}")] {
        let mut req = request(ProviderKind::Replicate);
        req.model = model;
        let submitted = p.submit(&req).await.unwrap();
        let (end, _) = run_to_end(p.as_ref(), &submitted).await;
        assert!(matches!(end, RemoteStatus::Succeeded { .. }), "{end:?}");
    }
    let mut bad = request(ProviderKind::Replicate);
    bad.model = "not a model".into();
    assert!(is_permanent(&p.submit(&bad).await));
    assert_eq!(s.stats().await.created(ProviderKind::Replicate), 2);
}

#[tokio::test]
async fn cancel_while_queued_running_and_after_the_end() {
    // Queued for 500 ms, running until 2 s: wide windows for a loaded machine.
    let s = setup_with(render(Duration::from_secs(2)), Duration::from_secs(2)).await;
    let runs = ProviderKind::ALL.map(|kind| {
        let p = s.get(kind);
        async move {
            let queued = p.submit(&request(kind)).await.unwrap();
            assert_eq!(
                p.cancel(&queued.request_id, &queued.meta).await.unwrap(),
                CancelOutcome::Cancelled,
                "{kind}"
            );
            let running = p.submit(&request(kind)).await.unwrap();
            let finished = p.submit(&request(kind)).await.unwrap();
            assert_eq!(
                p.status(&queued.request_id, &queued.meta).await.unwrap(),
                RemoteStatus::Cancelled,
                "{kind}"
            );

            tokio::time::sleep(Duration::from_millis(900)).await;
            let status = p.status(&running.request_id, &running.meta).await.unwrap();
            assert!(
                matches!(status, RemoteStatus::Running(_)),
                "{kind}: {status:?}"
            );
            let outcome = p.cancel(&running.request_id, &running.meta).await;
            match kind {
                ProviderKind::Fal => assert_eq!(outcome.unwrap(), CancelOutcome::Requested),
                // BytePlus refuses; the task runs to its end.
                ProviderKind::BytePlus => assert!(
                    matches!(outcome, Err(ProviderError::Permanent { .. })),
                    "{outcome:?}"
                ),
                ProviderKind::Replicate => assert_eq!(outcome.unwrap(), CancelOutcome::Cancelled),
            }

            let (end, _) = run_to_end(p.as_ref(), &finished).await;
            assert!(
                matches!(end, RemoteStatus::Succeeded { .. }),
                "{kind}: {end:?}"
            );
            assert_eq!(
                p.cancel(&finished.request_id, &finished.meta)
                    .await
                    .unwrap(),
                CancelOutcome::AlreadyFinished,
                "{kind}"
            );
            // Still there: BytePlus's DELETE would have erased a finished task.
            assert!(matches!(
                p.status(&finished.request_id, &finished.meta)
                    .await
                    .unwrap(),
                RemoteStatus::Succeeded { .. }
            ));
            let unknown = match kind {
                ProviderKind::Fal => "00000000-0000-0000-0000-000000000000",
                ProviderKind::BytePlus => "cgt-20250101000000-zzzzz",
                ProviderKind::Replicate => "zzzzzzzzzzzzzzzzzzzzzzzzzz",
            };
            let meta = json!({"app": "fal-ai/kling-video"});
            assert_eq!(
                p.cancel(unknown, &meta).await.unwrap(),
                CancelOutcome::NotFound,
                "{kind}"
            );
        }
    });
    futures::future::join_all(runs).await;
}

#[tokio::test]
async fn the_control_api_lists_and_clears_faults() {
    let s = setup().await;
    s.fault(json!([
        {"provider": "fal", "op": "submit", "fault": "http_status", "status": 500, "times": 2},
        {"op": "file", "fault": "expired_result"}
    ]))
    .await;
    let url = format!("{}/_fake/faults", s.fake.url());
    let listed: Vec<Value> = s.http.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(listed.len(), 2);
    assert_eq!(listed[0]["times"], 2);
    let bad = s
        .http
        .post(&url)
        .json(&json!({"op": "submit", "fault": "gremlins"}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert_eq!(s.http.delete(&url).send().await.unwrap().status(), 204);
    let listed: Vec<Value> = s.http.get(&url).send().await.unwrap().json().await.unwrap();
    assert!(listed.is_empty());
    s.get(ProviderKind::Fal)
        .submit(&request(ProviderKind::Fal))
        .await
        .unwrap();
    assert_eq!(s.stats().await.faults_applied, 0);
}

#[tokio::test]
async fn the_same_seed_gives_the_same_ids_and_failures() {
    let mut runs = Vec::new();
    for _ in 0..2 {
        let cfg = FakeConfig {
            failure_rate: 0.5,
            seed: 7,
            ..render(Duration::from_millis(50))
        };
        let s = setup_with(cfg, Duration::from_secs(2)).await;
        let mut run = Vec::new();
        for kind in ProviderKind::ALL {
            for _ in 0..4 {
                let submitted = s.get(kind).submit(&request(kind)).await.unwrap();
                let (end, _) = run_to_end(s.get(kind).as_ref(), &submitted).await;
                // BytePlus ids start with the creation time; the random part is what repeats.
                let random_part = submitted.request_id.rsplit('-').next().unwrap().to_string();
                run.push((random_part, matches!(end, RemoteStatus::Succeeded { .. })));
            }
        }
        runs.push(run);
    }
    assert_eq!(runs[0], runs[1]);
    let ids: HashSet<_> = runs[0].iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(ids.len(), 12);
    let successes = runs[0].iter().filter(|(_, ok)| *ok).count();
    assert!(
        successes > 0 && successes < 12,
        "{successes} of 12 succeeded at failure_rate 0.5"
    );
}
