//! Scenarios: providers. Each adapter against the fake provider in its own dialect: the
//! happy path, each way a provider fails, cancels, webhooks, and the ambiguous submit that
//! must be found again instead of paid twice. No database.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use genq::dev::fake_provider::{self as fake, FakeConfig, FakeOp, FakeServer, FakeStats};
use genq::providers::{
    CancelOutcome, Provider, ProviderError, ProviderKind, Providers, ProvidersConfig, RemoteStatus,
    SubmitRequest, Submitted,
};
use serde_json::{json, Value};
use uuid::Uuid;

/// No test reads a real key: every adapter looks in this (unset) variable.
const NO_KEY_VAR: &str = "GENQ_TEST_PROVIDER_KEY_THAT_IS_NEVER_SET";

struct Setup {
    fake: FakeServer,
    providers: Providers,
    http: reqwest::Client,
}

impl Setup {
    fn get(&self, kind: ProviderKind) -> Arc<dyn Provider> {
        self.providers.get(kind)
    }

    /// Scripts a fault through the control API, as an operator or a benchmark would.
    async fn fault(&self, spec: Value) {
        let r = self
            .http
            .post(format!("{}/_fake/faults", self.fake.url()))
            .json(&spec)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    }

    async fn stats(&self) -> FakeStats {
        self.http
            .get(format!("{}/_fake/stats", self.fake.url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

fn providers_config(fake: &FakeServer, timeout: Duration) -> ProvidersConfig {
    let mut cfg = fake.providers_config();
    cfg.request_timeout = timeout;
    for kind in ProviderKind::ALL {
        cfg.endpoint_mut(kind).api_key_env = NO_KEY_VAR.into();
    }
    cfg
}

async fn setup_with(cfg: FakeConfig, timeout: Duration) -> Setup {
    let fake = fake::serve("127.0.0.1:0".parse().unwrap(), cfg)
        .await
        .unwrap();
    let providers = Providers::from_config(&providers_config(&fake, timeout)).unwrap();
    Setup {
        fake,
        providers,
        http: reqwest::Client::new(),
    }
}

/// Jobs take 400 ms (queued for the first 100 ms); calls time out after 2 s.
async fn setup() -> Setup {
    setup_with(render(Duration::from_millis(400)), Duration::from_secs(2)).await
}

/// Jobs take 1 s (queued for the first 250 ms), for checks that must catch a phase.
async fn setup_slow() -> Setup {
    setup_with(render(Duration::from_secs(1)), Duration::from_secs(2)).await
}

fn render(render_time: Duration) -> FakeConfig {
    FakeConfig {
        render_time,
        ..FakeConfig::default()
    }
}

fn model(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::Fal => "fal-ai/kling-video/v2.1/master/image-to-video",
        ProviderKind::BytePlus => "seedance-1-0-pro-250528",
        ProviderKind::Replicate => "kwaivgi/kling-v2.1",
    }
}

/// A generation of `kind` whose callbacks go to a closed port (delivery fails quietly).
fn request(kind: ProviderKind) -> SubmitRequest {
    SubmitRequest {
        generation_id: Uuid::new_v4(),
        model: model(kind).into(),
        input: json!({"prompt": "a cat surfing", "image_url": "https://example.invalid/cat.png", "duration": "5"}),
        webhook_url: Some(format!("http://127.0.0.1:1/webhooks/{kind}")),
    }
}

/// Polls until the request ends; returns the end and every status seen on the way.
async fn run_to_end(p: &dyn Provider, s: &Submitted) -> (RemoteStatus, Vec<RemoteStatus>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    loop {
        let status = p.status(&s.request_id, &s.meta).await.expect("status");
        if status.is_final() {
            return (status, seen);
        }
        seen.push(status);
        assert!(
            Instant::now() < deadline,
            "request {} never ended",
            s.request_id
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn is_permanent(r: &Result<Submitted, ProviderError>) -> bool {
    matches!(r, Err(ProviderError::Permanent { .. }))
}

#[tokio::test]
async fn each_dialect_runs_a_job_to_a_downloadable_output() {
    let s = setup_slow().await;
    for kind in ProviderKind::ALL {
        let p = s.get(kind);
        let submitted = p.submit(&request(kind)).await.unwrap();
        assert_eq!(
            p.status(&submitted.request_id, &submitted.meta)
                .await
                .unwrap(),
            RemoteStatus::Queued
        );
        let (end, seen) = run_to_end(p.as_ref(), &submitted).await;
        assert!(
            seen.contains(&RemoteStatus::Running),
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
async fn an_ambiguous_submit_is_found_again_and_paid_once() {
    let s = setup_with(
        render(Duration::from_millis(400)),
        Duration::from_millis(500),
    )
    .await;
    for kind in [ProviderKind::BytePlus, ProviderKind::Replicate] {
        let p = s.get(kind);
        // Another generation's job of the same model, created just before.
        let other = p.submit(&request(kind)).await.unwrap();
        let since = Utc::now() - chrono::Duration::minutes(5);
        s.fault(json!({"provider": kind, "op": "submit", "fault": "accept_then_hang"}))
            .await;
        let req = request(kind);
        let started = Instant::now();
        let err = p.submit(&req).await.unwrap_err();
        assert!(err.is_ambiguous(), "{kind}: {err:?}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "the client timeout applies"
        );

        let found = p
            .find_submitted(&req, since)
            .await
            .unwrap()
            .expect("the job the submit created");
        assert_ne!(
            found.request_id, other.request_id,
            "{kind}: matched another generation's job"
        );
        // The adopted id is a real job that runs to its end.
        let (end, _) = run_to_end(p.as_ref(), &found).await;
        assert!(
            matches!(end, RemoteStatus::Succeeded { .. }),
            "{kind}: {end:?}"
        );
        // A generation that never reached the provider is provably absent.
        assert_eq!(
            p.find_submitted(&request(kind), since).await.unwrap(),
            None,
            "{kind}"
        );

        let stats = s.stats().await;
        assert_eq!(stats.ops(kind, FakeOp::Submit), 2, "{kind}");
        assert_eq!(
            stats.created(kind),
            2,
            "{kind}: the ambiguous submit created exactly one job"
        );
    }
}

#[tokio::test]
async fn fal_cannot_reconcile_an_ambiguous_submit() {
    let s = setup_with(
        render(Duration::from_millis(400)),
        Duration::from_millis(500),
    )
    .await;
    let p = s.get(ProviderKind::Fal);
    s.fault(json!({"provider": "fal", "op": "submit", "fault": "accept_then_hang"}))
        .await;
    let req = request(ProviderKind::Fal);
    let err = p.submit(&req).await.unwrap_err();
    assert!(err.is_ambiguous(), "{err:?}");
    let err = p.find_submitted(&req, Utc::now()).await.unwrap_err();
    assert!(
        matches!(&err, ProviderError::Permanent { message } if message.contains("cannot be reconciled")),
        "{err:?}"
    );
    assert_eq!(s.stats().await.created(ProviderKind::Fal), 1);
}

#[tokio::test]
async fn reconciliation_pages_through_the_list_and_stops_at_since() {
    let s = setup().await;
    let p = s.get(ProviderKind::Replicate);
    s.fault(json!({"provider": "replicate", "op": "submit", "fault": "malformed_json"}))
        .await;
    let req = request(ProviderKind::Replicate);
    let err = p.submit(&req).await.unwrap_err();
    assert!(
        err.is_ambiguous(),
        "an unreadable success is ambiguous: {err:?}"
    );
    for _ in 0..fake::REPLICATE_PAGE_SIZE + 2 {
        p.submit(&request(ProviderKind::Replicate)).await.unwrap();
    }
    let since = Utc::now() - chrono::Duration::minutes(5);
    let lists = s.stats().await.ops(ProviderKind::Replicate, FakeOp::List);
    assert!(p.find_submitted(&req, since).await.unwrap().is_some());
    assert_eq!(
        s.stats().await.ops(ProviderKind::Replicate, FakeOp::List),
        lists + 2,
        "found on page 2"
    );

    // A window that starts after every job ends after one page.
    let lists = s.stats().await.ops(ProviderKind::Replicate, FakeOp::List);
    let later = Utc::now() + chrono::Duration::minutes(5);
    assert_eq!(
        p.find_submitted(&request(ProviderKind::Replicate), later)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        s.stats().await.ops(ProviderKind::Replicate, FakeOp::List),
        lists + 1
    );

    // Without a webhook URL there is nothing to match on.
    let mut blind = request(ProviderKind::BytePlus);
    blind.webhook_url = None;
    assert!(s
        .get(ProviderKind::BytePlus)
        .find_submitted(&blind, since)
        .await
        .is_err());
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
            assert_eq!(
                p.status(&running.request_id, &running.meta).await.unwrap(),
                RemoteStatus::Running
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

/// A callback receiver: records (path and query, headers, body) of each POST.
async fn webhook_sink() -> (
    String,
    Arc<Mutex<Vec<(String, axum::http::HeaderMap, Value)>>>,
) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let app = axum::Router::new().fallback(
        move |uri: axum::http::Uri, headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let record = record.clone();
            async move {
                let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
                record
                    .lock()
                    .unwrap()
                    .push((uri.to_string(), headers, body));
                "ok"
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

#[tokio::test]
async fn webhooks_reach_the_callback_url_with_the_generation_id() {
    let s = setup().await;
    let (sink, seen) = webhook_sink().await;
    let mut ids = Vec::new();
    for kind in ProviderKind::ALL {
        let mut req = request(kind);
        req.webhook_url = Some(format!("{sink}/webhooks/{kind}"));
        let submitted = s.get(kind).submit(&req).await.unwrap();
        ids.push((kind, req.generation_id, submitted.request_id));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while seen.lock().unwrap().len() < 3 {
        assert!(Instant::now() < deadline, "webhooks did not arrive");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let seen = seen.lock().unwrap().clone();
    for (kind, generation_id, request_id) in ids {
        let (uri, headers, body) = seen
            .iter()
            .find(|(uri, _, _)| uri.starts_with(&format!("/webhooks/{kind}?")))
            .unwrap_or_else(|| panic!("no {kind} webhook in {seen:?}"));
        assert!(
            uri.contains(&format!("generation_id={generation_id}")),
            "{uri}"
        );
        match kind {
            ProviderKind::Fal => {
                assert_eq!(body["request_id"], request_id.as_str());
                assert_eq!(body["status"], "OK");
                assert!(body["payload"]["video"]["url"].is_string());
            }
            ProviderKind::BytePlus => {
                assert_eq!(body["id"], request_id.as_str());
                assert_eq!(body["status"], "succeeded");
            }
            ProviderKind::Replicate => {
                assert_eq!(body["id"], request_id.as_str());
                assert_eq!(body["status"], "succeeded");
                assert!(headers.contains_key("webhook-id"));
            }
        }
    }
    assert_eq!(s.stats().await.webhooks_sent, 3);
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

/// One webhook as received: path and query, headers, raw body.
#[derive(Clone, Debug)]
struct Hook {
    uri: String,
    headers: axum::http::HeaderMap,
    body: bytes::Bytes,
}

impl Hook {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} in {:?}", self.headers))
            .to_str()
            .unwrap()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A callback receiver on loopback keeping raw bodies, for signature checks.
async fn raw_webhook_sink() -> (String, Arc<Mutex<Vec<Hook>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let app = axum::Router::new().fallback(
        move |uri: axum::http::Uri, headers: axum::http::HeaderMap, body: bytes::Bytes| {
            let record = record.clone();
            async move {
                record.lock().unwrap().push(Hook {
                    uri: uri.to_string(),
                    headers,
                    body,
                });
                "ok"
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

/// Waits until `n` webhooks have arrived; returns them all.
async fn hooks(seen: &Arc<Mutex<Vec<Hook>>>, n: usize) -> Vec<Hook> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = seen.lock().unwrap().clone();
        if got.len() >= n {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "only {} webhooks of {n}",
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

impl Setup {
    /// Submits a job of `kind` whose webhook goes to `sink`; returns its request id.
    async fn submit_to(&self, kind: ProviderKind, sink: &str) -> String {
        let mut req = request(kind);
        req.webhook_url = Some(format!("{sink}/webhooks/{kind}"));
        self.get(kind).submit(&req).await.unwrap().request_id
    }

    /// POSTs to the control API, expecting 200; returns the answer.
    async fn control(&self, path: &str, body: Value) -> Value {
        let r = self
            .http
            .post(format!("{}{path}", self.fake.url()))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        r.json().await.unwrap()
    }

    async fn replay(&self, request_id: &str, times: u32) {
        let answer = self
            .control(
                "/_fake/webhooks/replay",
                json!({"request_id": request_id, "times": times}),
            )
            .await;
        assert_eq!(answer["delivered"], times, "{answer}");
    }

    async fn get_json(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.fake.url()))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }
}

/// The kid of the JWKS key that verifies this fal webhook, if any (as a receiver would:
/// ed25519 over request id, user id, timestamp and the body's SHA-256).
fn fal_verifying_kid(jwks: &Value, hook: &Hook) -> Option<String> {
    use base64::Engine as _;
    use ed25519_dalek::{Signature, Verifier, VerifyingKey};
    let message = genq::providers::signing::fal_message(
        hook.header("x-fal-webhook-request-id"),
        hook.header("x-fal-webhook-user-id"),
        hook.header("x-fal-webhook-timestamp"),
        &hook.body,
    );
    let signature: [u8; 64] = hex::decode(hook.header("x-fal-webhook-signature"))
        .unwrap()
        .try_into()
        .unwrap();
    let signature = Signature::from_bytes(&signature);
    jwks["keys"].as_array().unwrap().iter().find_map(|key| {
        assert_eq!(
            (key["kty"].as_str(), key["crv"].as_str()),
            (Some("OKP"), Some("Ed25519"))
        );
        let x: [u8; 32] = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(key["x"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        let verifying = VerifyingKey::from_bytes(&x).unwrap();
        verifying
            .verify(&message, &signature)
            .is_ok()
            .then(|| key["kid"].as_str().unwrap().to_string())
    })
}

fn timestamp_age(hook: &Hook, header: &str) -> i64 {
    Utc::now().timestamp() - hook.header(header).parse::<i64>().unwrap()
}

#[tokio::test]
async fn fal_webhooks_are_signed_with_a_key_of_the_jwks_and_keys_rotate() {
    let s = setup().await;
    let (sink, seen) = raw_webhook_sink().await;
    let id = s.submit_to(ProviderKind::Fal, &sink).await;
    let first = hooks(&seen, 1).await.remove(0);
    assert!(first.uri.starts_with("/webhooks/fal?"), "{}", first.uri);
    assert_eq!(first.json()["request_id"], id.as_str());
    assert_eq!(first.header("x-fal-webhook-request-id"), id);
    assert_eq!(
        first.header("x-fal-webhook-user-id"),
        fake::DEFAULT_FAL_USER_ID
    );
    assert!(timestamp_age(&first, "x-fal-webhook-timestamp").abs() <= 5);
    assert_eq!(first.header("x-fal-webhook-signature").len(), 128);

    let (status, jwks) = s.get_json("/fal/.well-known/jwks.json").await;
    assert_eq!(status, 200);
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 1, "{jwks}");
    let old_kid = fal_verifying_kid(&jwks, &first).expect("the signature verifies");
    // A byte more in the body and it no longer does.
    let mut tampered = first.clone();
    tampered.body = bytes::Bytes::from([&first.body[..], b" "].concat());
    assert_eq!(fal_verifying_kid(&jwks, &tampered), None);

    // Rotation: the JWKS lists old and new, and the next webhook verifies with the new.
    let rotated = s.control("/_fake/fal-keys/rotate", json!({})).await;
    let new_kid = rotated["kid"].as_str().unwrap().to_string();
    assert_ne!(new_kid, old_kid);
    let (_, jwks) = s.get_json("/fal/.well-known/jwks.json").await;
    let kids: HashSet<&str> = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["kid"].as_str().unwrap())
        .collect();
    assert_eq!(kids, HashSet::from([old_kid.as_str(), new_kid.as_str()]));
    s.replay(&id, 1).await;
    let replayed = hooks(&seen, 2).await.remove(1);
    assert_eq!(replayed.body, first.body, "a replay is the same webhook");
    assert_eq!(fal_verifying_kid(&jwks, &replayed), Some(new_kid.clone()));

    // Unknown-key mode: the next webhook is signed by a key no JWKS lists.
    s.control("/_fake/fal-keys/unknown", json!({})).await;
    s.replay(&id, 2).await;
    let got = hooks(&seen, 4).await;
    assert_eq!(fal_verifying_kid(&jwks, &got[2]), None);
    assert_eq!(fal_verifying_kid(&jwks, &got[3]), Some(new_kid));

    // The JWKS endpoint can be made to fail like any other.
    s.fault(json!({"provider": "fal", "op": "jwks", "fault": "http_status", "status": 503}))
        .await;
    assert_eq!(s.get_json("/fal/.well-known/jwks.json").await.0, 503);
    assert_eq!(s.get_json("/fal/.well-known/jwks.json").await.0, 200);
    let stats = s.stats().await;
    assert_eq!(stats.ops(ProviderKind::Fal, FakeOp::Jwks), 4);
    assert_eq!(stats.webhooks_sent, 4);
}

#[tokio::test]
async fn fal_webhooks_carry_the_configured_user_id() {
    let s = setup_with(
        FakeConfig {
            fal_user_id: "user-42".into(),
            ..render(Duration::from_millis(200))
        },
        Duration::from_secs(2),
    )
    .await;
    let (sink, seen) = raw_webhook_sink().await;
    s.submit_to(ProviderKind::Fal, &sink).await;
    let hook = hooks(&seen, 1).await.remove(0);
    assert_eq!(hook.header("x-fal-webhook-user-id"), "user-42");
    assert!(fal_verifying_kid(&s.fake.fal_jwks(), &hook).is_some());
}

/// Whether one of the `webhook-signature` entries is the Standard Webhooks signature of
/// this webhook under `secret`.
fn replicate_verifies(secret: &str, hook: &Hook) -> bool {
    let expected = genq::providers::signing::standard_webhooks_sign(
        secret,
        hook.header("webhook-id"),
        hook.header("webhook-timestamp"),
        &hook.body,
    );
    hook.header("webhook-signature")
        .split(' ')
        .any(|sig| sig == expected)
}

#[tokio::test]
async fn replicate_webhooks_are_signed_with_the_served_secret() {
    let s = setup().await;
    let (sink, seen) = raw_webhook_sink().await;
    let id = s.submit_to(ProviderKind::Replicate, &sink).await;
    let first = hooks(&seen, 1).await.remove(0);
    assert_eq!(first.json()["id"], id.as_str());
    assert!(first.header("webhook-id").starts_with("msg_"));
    assert!(timestamp_age(&first, "webhook-timestamp").abs() <= 5);

    let (status, secret) = s.get_json("/replicate/v1/webhooks/default/secret").await;
    assert_eq!(status, 200);
    let secret = secret["key"].as_str().unwrap().to_string();
    assert_eq!(secret, fake::DEFAULT_REPLICATE_WEBHOOK_SECRET);
    assert!(first.header("webhook-signature").starts_with("v1,"));
    assert!(!first.header("webhook-signature").contains(' '));
    assert!(replicate_verifies(&secret, &first));
    assert!(!replicate_verifies(
        "whsec_C2FVsBQIhrscChlQIMV+b5sSYspob7oD",
        &first
    ));

    // A stale timestamp for the next delivery, signed as such; duplicates keep the id.
    s.control("/_fake/webhooks/stale", json!({"seconds": 600}))
        .await;
    s.replay(&id, 2).await;
    let got = hooks(&seen, 3).await;
    let (stale, fresh) = (&got[1], &got[2]);
    assert!((595..=610).contains(&timestamp_age(stale, "webhook-timestamp")));
    assert!(timestamp_age(fresh, "webhook-timestamp").abs() <= 5);
    for hook in [stale, fresh] {
        assert_eq!(hook.header("webhook-id"), first.header("webhook-id"));
        assert_eq!(hook.body, first.body);
        assert!(replicate_verifies(&secret, hook));
    }

    // Rotation: the endpoint serves the new secret; webhooks carry both signatures.
    let rotated = s.control("/_fake/replicate-secret/rotate", json!({})).await;
    let new_secret = rotated["key"].as_str().unwrap().to_string();
    assert_eq!(rotated["previous"], secret.as_str());
    assert_ne!(new_secret, secret);
    assert!(new_secret.starts_with("whsec_"));
    let (_, served) = s.get_json("/replicate/v1/webhooks/default/secret").await;
    assert_eq!(served["key"], new_secret.as_str());
    s.replay(&id, 1).await;
    let during = hooks(&seen, 4).await.remove(3);
    assert_eq!(during.header("webhook-signature").split(' ').count(), 2);
    assert!(replicate_verifies(&new_secret, &during));
    assert!(replicate_verifies(&secret, &during));
    assert_eq!(s.fake.replicate_webhook_secret(), new_secret);
}

#[tokio::test]
async fn byteplus_webhooks_are_unsigned_and_replays_need_a_finished_job() {
    let s = setup().await;
    let (sink, seen) = raw_webhook_sink().await;
    let id = s.submit_to(ProviderKind::BytePlus, &sink).await;
    // Even with a stale timestamp asked for: BytePlus sends none, and does not use it up.
    s.control("/_fake/webhooks/stale", json!({"seconds": 600, "times": 1}))
        .await;
    let hook = hooks(&seen, 1).await.remove(0);
    assert_eq!(hook.json()["id"], id.as_str());
    for name in hook.headers.keys() {
        let name = name.as_str();
        assert!(
            !name.starts_with("webhook-") && !name.starts_with("x-fal-"),
            "BytePlus signs nothing, yet {name}"
        );
    }
    s.replay(&id, 1).await;
    assert_eq!(hooks(&seen, 2).await[1].body, hook.body);

    // The stale timestamp is still there for the next signed delivery.
    s.submit_to(ProviderKind::Replicate, &sink).await;
    let replicate = hooks(&seen, 3).await.remove(2);
    assert!((595..=610).contains(&timestamp_age(&replicate, "webhook-timestamp")));

    let r = s
        .http
        .post(format!("{}/_fake/webhooks/replay", s.fake.url()))
        .json(&json!({"request_id": "no-such-job"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // A job still running has no final webhook to replay yet.
    let slow = setup_slow().await;
    let running = slow.submit_to(ProviderKind::Replicate, &sink).await;
    let r = slow
        .http
        .post(format!("{}/_fake/webhooks/replay", slow.fake.url()))
        .json(&json!({"request_id": running}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
}
