//! Providers, each way one fails: throttling, 503 runs, permanent refusals, failed and
//! expired jobs, malformed answers, timeouts, and keys that never reach an error.

use super::*;

#[tokio::test]
async fn throttling_carries_the_providers_wait() {
    let s = setup().await;
    for kind in ProviderKind::ALL {
        let p = s.get(kind);
        s.fault(json!({"provider": kind, "op": "submit", "fault": "http_status", "status": 429, "retry_after": "2"}))
            .await;
        let err = p.submit(&request(kind)).await.unwrap_err();
        assert!(err.is_retryable(), "{kind}: {err:?}");
        assert_eq!(err.retry_after(), Some(Duration::from_secs(2)), "{kind}");

        let at = (Utc::now() + chrono::Duration::seconds(3))
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        s.fault(json!({"provider": kind, "op": "status", "fault": "http_status", "status": 429, "retry_after": at}))
            .await;
        let err = p
            .status("any", &json!({"app": "fal-ai/x"}))
            .await
            .unwrap_err();
        let wait = err.retry_after().expect("a wait from the HTTP-date");
        assert!(
            wait >= Duration::from_secs(1) && wait <= Duration::from_secs(3),
            "{kind}: {wait:?}"
        );
    }
    // Replicate says the wait in the body when there is no header.
    s.fault(
        json!({"provider": "replicate", "op": "submit", "fault": "http_status", "status": 429}),
    )
    .await;
    let err = s
        .get(ProviderKind::Replicate)
        .submit(&request(ProviderKind::Replicate))
        .await
        .unwrap_err();
    assert_eq!(err.retry_after(), Some(Duration::from_secs(1)), "{err:?}");
    // BytePlus documents no wait: plain backoff.
    s.fault(json!({"provider": "byteplus", "op": "submit", "fault": "http_status", "status": 429}))
        .await;
    let err = s
        .get(ProviderKind::BytePlus)
        .submit(&request(ProviderKind::BytePlus))
        .await
        .unwrap_err();
    assert!(err.is_retryable() && err.retry_after().is_none(), "{err:?}");
    assert!(err.to_string().contains("RateLimitExceeded"), "{err}");
}

#[tokio::test]
async fn a_run_of_503s_is_retryable_then_recovers() {
    let s = setup().await;
    for kind in ProviderKind::ALL {
        s.fault(json!({"provider": kind, "op": "submit", "fault": "http_status", "status": 503, "times": 3}))
            .await;
        for _ in 0..3 {
            let err = s.get(kind).submit(&request(kind)).await.unwrap_err();
            assert!(err.is_retryable(), "{kind}: {err:?}");
        }
        s.get(kind)
            .submit(&request(kind))
            .await
            .expect("recovered after 3 failures");
    }
    let err = {
        s.fault(json!({"provider": "fal", "op": "status", "fault": "http_status", "status": 503}))
            .await;
        s.get(ProviderKind::Fal)
            .status("x", &json!({"app": "a/b"}))
            .await
            .unwrap_err()
    };
    assert!(err.to_string().contains("runner_disconnected"), "{err}");
    let stats = s.stats().await;
    for kind in ProviderKind::ALL {
        assert_eq!(stats.ops(kind, FakeOp::Submit), 4, "{kind}");
        assert_eq!(
            stats.created(kind),
            1,
            "{kind}: failed submits created nothing"
        );
    }
}

#[tokio::test]
async fn moderation_auth_and_validation_errors_are_permanent() {
    let s = setup().await;
    for kind in ProviderKind::ALL {
        let p = s.get(kind);
        s.fault(json!({"provider": kind, "op": "submit", "fault": "moderation"}))
            .await;
        let err = p.submit(&request(kind)).await.unwrap_err();
        assert!(
            matches!(err, ProviderError::Permanent { .. }),
            "{kind}: {err:?}"
        );
        for status in [401, 403, 400, 422] {
            s.fault(
                json!({"provider": kind, "op": "submit", "fault": "http_status", "status": status}),
            )
            .await;
            let err = p.submit(&request(kind)).await.unwrap_err();
            assert!(
                matches!(err, ProviderError::Permanent { .. }),
                "{kind} {status}: {err:?}"
            );
            if status == 401 {
                // Says where the key should come from, never a key.
                assert!(err.to_string().contains(NO_KEY_VAR), "{err}");
            }
        }
        // A request the provider does not know.
        let err = p
            .status("does-not-exist", &json!({"app": "fal-ai/x"}))
            .await
            .unwrap_err();
        assert!(
            matches!(err, ProviderError::Permanent { .. }),
            "{kind}: {err:?}"
        );
    }
    assert!(s
        .get(ProviderKind::Fal)
        .submit(&SubmitRequest {
            model: "fal-ai/../../admin".into(),
            ..request(ProviderKind::Fal)
        })
        .await
        .is_err());
    let stats = s.stats().await;
    for kind in ProviderKind::ALL {
        assert_eq!(stats.created(kind), 0, "{kind}");
    }
}

#[tokio::test]
async fn byteplus_closed_endpoint_is_retryable_but_its_moderation_is_not() {
    let s = setup().await;
    let p = s.get(ProviderKind::BytePlus);
    s.fault(
        json!({"provider": "byteplus", "op": "submit", "fault": "http_status", "status": 400,
        "code": "InvalidEndpoint.ClosedEndpoint"}),
    )
    .await;
    let err = p
        .submit(&request(ProviderKind::BytePlus))
        .await
        .unwrap_err();
    assert!(err.is_retryable(), "{err:?}");
    s.fault(
        json!({"provider": "byteplus", "op": "submit", "fault": "http_status", "status": 400,
        "code": "SensitiveContentDetected.SevereViolation"}),
    )
    .await;
    let err = p
        .submit(&request(ProviderKind::BytePlus))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, ProviderError::Permanent { message } if message.contains("moderation")),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_completed_job_with_an_error_is_failed() {
    let s = setup().await;
    for kind in ProviderKind::ALL {
        let p = s.get(kind);
        let submitted = p.submit(&request(kind)).await.unwrap();
        // fal: the status says COMPLETED, the result is the model's error.
        s.fault(json!({"provider": kind, "op": "status", "fault": "completed_with_error"}))
            .await;
        let status = p
            .status(&submitted.request_id, &submitted.meta)
            .await
            .unwrap();
        let RemoteStatus::Failed { reason } = status else {
            panic!("{kind}: {status:?}")
        };
        if kind == ProviderKind::Fal {
            assert!(reason.contains("image_load_error"), "{reason}");
        }
        // Every later read agrees.
        assert!(matches!(
            p.status(&submitted.request_id, &submitted.meta)
                .await
                .unwrap(),
            RemoteStatus::Failed { .. }
        ));
    }
}

#[tokio::test]
async fn output_moderation_fails_the_job() {
    let cfg = FakeConfig {
        failure_rate: 1.0,
        ..render(Duration::from_millis(200))
    };
    let s = setup_with(cfg, Duration::from_secs(2)).await;
    for kind in ProviderKind::ALL {
        let p = s.get(kind);
        let submitted = p.submit(&request(kind)).await.unwrap();
        let (end, _) = run_to_end(p.as_ref(), &submitted).await;
        let RemoteStatus::Failed { reason } = end else {
            panic!("{kind}: {end:?}")
        };
        let lower = reason.to_lowercase();
        assert!(
            lower.contains("sensitive") || lower.contains("content_policy"),
            "{kind}: {reason}"
        );
    }
}

#[tokio::test]
async fn expired_results_are_reported_as_expired() {
    let s = setup_with(
        FakeConfig {
            output_ttl: Duration::from_secs(1),
            ..render(Duration::from_millis(200))
        },
        Duration::from_secs(2),
    )
    .await;
    for kind in ProviderKind::ALL {
        let p = s.get(kind);
        let submitted = p.submit(&request(kind)).await.unwrap();
        let op = if kind == ProviderKind::Fal {
            "result"
        } else {
            "status"
        };
        s.fault(json!({"provider": kind, "op": op, "fault": "expired_result", "status": 410}))
            .await;
        // fal: the request completes, then its result is gone. The others: the read ends it.
        let fault_ends_it = if kind == ProviderKind::Fal {
            run_to_end(p.as_ref(), &submitted).await.0
        } else {
            p.status(&submitted.request_id, &submitted.meta)
                .await
                .unwrap()
        };
        assert!(
            matches!(fault_ends_it, RemoteStatus::Expired { .. }),
            "{kind}: {fault_ends_it:?}"
        );
    }
    // Outputs themselves expire after output_ttl.
    let p = s.get(ProviderKind::Replicate);
    let submitted = p.submit(&request(ProviderKind::Replicate)).await.unwrap();
    let (RemoteStatus::Succeeded { outputs }, _) = run_to_end(p.as_ref(), &submitted).await else {
        panic!("not succeeded")
    };
    assert_eq!(
        s.http.get(&outputs[0].url).send().await.unwrap().status(),
        200
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        s.http.get(&outputs[0].url).send().await.unwrap().status(),
        404
    );
}

#[tokio::test]
async fn malformed_and_unknown_answers_to_reads_are_retryable() {
    let s = setup().await;
    for kind in ProviderKind::ALL {
        let p = s.get(kind);
        let submitted = p.submit(&request(kind)).await.unwrap();
        for (fault, says) in [
            ("malformed_json", "unreadable"),
            ("unknown_status", "unknown status"),
        ] {
            s.fault(json!({"provider": kind, "op": "status", "fault": fault}))
                .await;
            let err = p
                .status(&submitted.request_id, &submitted.meta)
                .await
                .unwrap_err();
            assert!(err.is_retryable(), "{kind} {fault}: {err:?}");
            assert!(err.to_string().contains(says), "{kind} {fault}: {err}");
        }
        // And the next read is fine.
        p.status(&submitted.request_id, &submitted.meta)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn timeouts_before_sending_are_retryable_and_hung_reads_too() {
    // Nothing listens: the connection never opens, so nothing can have been created.
    let closed: SocketAddr = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut cfg = fake::base_urls(closed);
    cfg.request_timeout = Duration::from_secs(2);
    for kind in ProviderKind::ALL {
        cfg.endpoint_mut(kind).api_key_env = NO_KEY_VAR.into();
    }
    let providers = Providers::from_config(&cfg).unwrap();
    for kind in ProviderKind::ALL {
        let err = providers
            .get(kind)
            .submit(&request(kind))
            .await
            .unwrap_err();
        assert!(err.is_retryable(), "{kind}: {err:?}");
        assert!(err.to_string().contains("cannot connect"), "{kind}: {err}");
    }

    let s = setup_with(render(Duration::from_millis(400)), Duration::from_secs(1)).await;
    for kind in ProviderKind::ALL {
        let p = s.get(kind);
        let submitted = p.submit(&request(kind)).await.unwrap();
        s.fault(json!({"provider": kind, "op": "status", "fault": "hang", "ms": 5000}))
            .await;
        let err = p
            .status(&submitted.request_id, &submitted.meta)
            .await
            .unwrap_err();
        assert!(
            err.is_retryable(),
            "{kind}: a read is never ambiguous: {err:?}"
        );
        // A short hang within the timeout is just slow.
        s.fault(json!({"provider": kind, "op": "status", "fault": "hang", "ms": 50}))
            .await;
        p.status(&submitted.request_id, &submitted.meta)
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn keys_go_in_each_dialects_scheme_and_never_into_errors() {
    let fake = fake::serve(
        "127.0.0.1:0".parse().unwrap(),
        render(Duration::from_millis(100)),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, "sekrit-abc123\n").unwrap();
    let mut cfg = providers_config(&fake, Duration::from_secs(2));
    for kind in ProviderKind::ALL {
        cfg.endpoint_mut(kind).api_key_file = key_file.display().to_string();
    }
    let providers = Providers::from_config(&cfg).unwrap();
    assert!(!format!("{providers:?}").contains("sekrit"));
    for kind in ProviderKind::ALL {
        // The fake refuses a wrong scheme, so success proves the right one.
        providers.get(kind).submit(&request(kind)).await.unwrap();
        fake.add_fault(fake::FaultSpec {
            status: Some(401),
            ..fake::FaultSpec::new(kind, fake::FakeOp::Submit, fake::FaultKind::HttpStatus)
        });
        let err = providers
            .get(kind)
            .submit(&request(kind))
            .await
            .unwrap_err();
        assert!(!err.to_string().contains("sekrit") && !format!("{err:?}").contains("sekrit"));
        assert!(err.to_string().contains("API key: file"), "{err}");
    }
    let wrong = reqwest::Client::new()
        .post(format!("{}/fal/fal-ai/x", fake.url()))
        .header("authorization", "Bearer sekrit")
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);

    cfg.fal.api_key_file = dir.path().join("missing").display().to_string();
    let err = Providers::from_config(&cfg).unwrap_err().to_string();
    assert!(
        err.contains("providers.fal") && err.contains("api_key_file"),
        "{err}"
    );
}
