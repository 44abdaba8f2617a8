//! The daemon's HTTP server, through the real binary: admin API auth, /metrics agreeing
//! with the database, and /readyz across a database outage and a drain.

use std::time::Duration;

use genq::queue::enqueue::enqueue_many_in;
use genq::{JobState, NewJob};
use reqwest::StatusCode;
use serde_json::{json, Value};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::common::proxy::PgProxy;
use crate::common::{prom, wait_until, RunningBinary, TestDb};

const TOKEN: &str = "s3cret-admin-token";

#[sqlx::test(migrations = false)]
async fn the_admin_api_needs_the_bearer_token(po: PgPoolOptions, co: PgConnectOptions) {
    let db = TestDb::new(po, co).await;
    let url = db.url().await;
    let daemon = RunningBinary::start(&url, &[("GENQ_ADMIN_TOKEN", TOKEN)]).await;
    let queues = daemon.url("/admin/queues");

    let none = daemon.http.get(&queues).send().await.unwrap();
    assert_eq!(none.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(none.headers()["www-authenticate"], "Bearer");
    assert!(none.json::<Value>().await.unwrap()["error"]
        .as_str()
        .unwrap()
        .contains("missing"));
    let wrong = daemon
        .http
        .get(&queues)
        .bearer_auth("s3cret-admin-tokeN")
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);

    // The daemon registers its configured queues just after it starts.
    wait_until(
        Duration::from_secs(10),
        "the default queue to be registered",
        || async {
            sqlx::query_scalar::<_, bool>(
                "SELECT EXISTS (SELECT 1 FROM genq.queues WHERE name = 'default')",
            )
            .fetch_one(&db.pool)
            .await
            .unwrap()
        },
    )
    .await;
    let ok = daemon
        .http
        .get(&queues)
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    let list: Value = ok.json().await.unwrap();
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|q| q["name"] == "default"),
        "{list}"
    );

    let paused = daemon
        .http
        .post(daemon.url("/admin/queues/default/pause"))
        .bearer_auth(TOKEN)
        .json(&json!({"reason": "maintenance"}))
        .send()
        .await
        .unwrap();
    assert_eq!(paused.status(), StatusCode::OK);
    let row: (bool, Option<String>) =
        sqlx::query_as("SELECT paused, pause_reason FROM genq.queues WHERE name = 'default'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(row, (true, Some("maintenance".into())));
    let resumed = daemon
        .http
        .post(daemon.url("/admin/queues/default/resume"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(
        resumed.json::<Value>().await.unwrap()["was_paused"],
        json!(true)
    );

    let id = db.enqueue(NewJob::new("noop", json!({}))).await;
    db.wait_for_state(id, JobState::Completed, Duration::from_secs(10))
        .await;
    let job: Value = daemon
        .http
        .get(daemon.url(&format!("/admin/jobs/{id}")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(job["state"], json!("completed"));
    let missing = daemon
        .http
        .get(daemon.url("/admin/jobs/99999"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        missing.json::<Value>().await.unwrap()["error"],
        json!("job 99999 not found")
    );
    let conflict = daemon
        .http
        .post(daemon.url(&format!("/admin/jobs/{id}/cancel")))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(conflict.status(), StatusCode::CONFLICT);

    let bad_json = daemon
        .http
        .post(daemon.url("/admin/queues/default/pause"))
        .bearer_auth(TOKEN)
        .body("{reason: nope")
        .send()
        .await
        .unwrap();
    assert_eq!(bad_json.status(), StatusCode::BAD_REQUEST);
    assert!(bad_json.json::<Value>().await.unwrap()["error"]
        .as_str()
        .unwrap()
        .starts_with("invalid JSON body"));
    let huge = daemon
        .http
        .post(daemon.url("/admin/queues/default/pause"))
        .bearer_auth(TOKEN)
        .body(format!("{{\"reason\": \"{}\"}}", "x".repeat(200_000)))
        .send()
        .await
        .unwrap();
    assert_eq!(huge.status(), StatusCode::PAYLOAD_TOO_LARGE);
    assert!(huge.json::<Value>().await.unwrap()["error"].is_string());
    let still: bool = sqlx::query_scalar("SELECT paused FROM genq.queues WHERE name = 'default'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(!still, "rejected requests changed nothing");
    assert!(daemon.stop().await);
}

#[sqlx::test(migrations = false)]
async fn without_a_token_the_admin_api_is_off(po: PgPoolOptions, co: PgConnectOptions) {
    let db = TestDb::new(po, co).await;
    let url = db.url().await;
    let daemon = RunningBinary::start(&url, &[]).await;
    for token in ["", "anything"] {
        let r = daemon
            .http
            .post(daemon.url("/admin/queues/default/pause"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::NOT_FOUND);
        assert!(r.json::<Value>().await.unwrap()["error"]
            .as_str()
            .unwrap()
            .contains("disabled"));
    }
    let paused: bool = sqlx::query_scalar(
        "SELECT coalesce((SELECT paused FROM genq.queues WHERE name = 'default'), false)",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(!paused);
    assert!(daemon.stop().await);
}

#[sqlx::test(migrations = false)]
async fn metrics_parse_and_agree_with_the_database(po: PgPoolOptions, co: PgConnectOptions) {
    let db = TestDb::new(po, co).await;
    let url = db.url().await;
    let daemon = RunningBinary::start(&url, &[]).await;
    let mut jobs: Vec<NewJob> = (0..30)
        .map(|i| NewJob::new("noop", json!({ "i": i })))
        .collect();
    jobs.extend((0..5).map(|_| NewJob::new("unknown.kind", json!({}))));
    jobs.extend((0..3).map(|_| NewJob::new("sleep", json!({"ms": "not a number"}))));
    jobs.push(
        NewJob::new("noop", json!({})).run_at(chrono::Utc::now() + chrono::Duration::hours(1)),
    );
    enqueue_many_in(&mut db.pool.acquire().await.unwrap(), &jobs)
        .await
        .unwrap();
    wait_until(Duration::from_secs(15), "all due jobs final", || async {
        db.count("noop", JobState::Completed).await == 30
            && db.count("unknown.kind", JobState::Discarded).await == 5
            && db.count("sleep", JobState::Discarded).await == 3
    })
    .await;

    let samples = loop {
        let text = daemon
            .http
            .get(daemon.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let samples = prom::parse(&text);
        // Fleet-wide gauges arrive with the next sample (every 200 ms here).
        if prom::sum(&samples, "genq_jobs_enqueued_total", &[("kind", "noop")]) == 31.0
            && prom::sum(
                &samples,
                "genq_queue_jobs",
                &[("queue", "default"), ("state", "scheduled")],
            ) == 1.0
            // The render groups are written by a start hook, beside the first samples.
            && prom::has(&samples, "genq_limit_group_active")
        {
            break samples;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let finished = |kind: &str, outcome: &str| {
        prom::sum(
            &samples,
            "genq_jobs_finished_total",
            &[("kind", kind), ("outcome", outcome)],
        )
    };
    assert_eq!(finished("noop", "completed"), 30.0);
    assert_eq!(finished("unknown.kind", "discarded"), 5.0);
    assert_eq!(finished("sleep", "discarded"), 3.0);
    let db_completed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM genq.jobs WHERE state = 'completed' AND kind <> 'genq.prune'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let metric_completed = prom::sum(
        &samples,
        "genq_jobs_finished_total",
        &[("outcome", "completed")],
    ) - finished("genq.prune", "completed");
    assert_eq!(metric_completed, db_completed as f64);
    assert_eq!(
        prom::sum(
            &samples,
            "genq_job_duration_seconds_count",
            &[("kind", "noop")]
        ),
        30.0
    );
    assert_eq!(
        prom::sum(&samples, "genq_queue_paused", &[("queue", "default")]),
        0.0
    );
    for name in [
        "genq_build_info",
        "genq_jobs_running",
        "genq_db_pool_connections",
        "genq_queue_oldest_available_age_seconds",
        // The generation queue is fair and each provider has a render group.
        "genq_queue_fair_keys",
        "genq_queue_held_back_jobs",
        "genq_limit_group_active",
        "genq_limit_group_max",
    ] {
        assert!(prom::has(&samples, name), "{name} is exported");
    }
    for s in samples.iter().filter(|s| s.name.starts_with("genq_")) {
        let base = s
            .name
            .trim_end_matches("_bucket")
            .trim_end_matches("_sum")
            .trim_end_matches("_count");
        assert!(
            genq::metrics::ALL.iter().any(|(n, _, _)| *n == base),
            "{} is declared in genq::metrics::ALL",
            s.name
        );
    }
    assert!(daemon.stop().await);
}

#[sqlx::test(migrations = false)]
async fn readiness_follows_the_database_and_drain_and_work_survives_an_outage(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    let (proxy, via_proxy) = PgProxy::in_front_of(&db.url().await).await;
    let daemon = RunningBinary::start(&via_proxy, &[("GENQ_ADMIN_TOKEN", TOKEN)]).await;
    let ready = || async { daemon.http.get(daemon.url("/readyz")).send().await.unwrap() };
    wait_until(Duration::from_secs(10), "ready", || async {
        ready().await.status() == StatusCode::OK
    })
    .await;

    // The database goes away (a restart, as the daemon sees it): not ready, but alive.
    proxy.cut();
    wait_until(
        Duration::from_secs(10),
        "not ready while the database is away",
        || async { ready().await.status() == StatusCode::SERVICE_UNAVAILABLE },
    )
    .await;
    let body: Value = ready().await.json().await.unwrap();
    assert_eq!(body["ready"], json!(false));
    assert!(
        body["database"].as_str().unwrap().starts_with("error"),
        "{body}"
    );
    assert_eq!(
        daemon
            .http
            .get(daemon.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let during = db.enqueue(NewJob::new("sleep", json!({"ms": 5}))).await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    // It comes back: ready again, and the job enqueued meanwhile is done.
    proxy.restore();
    wait_until(Duration::from_secs(20), "ready again", || async {
        ready().await.status() == StatusCode::OK
    })
    .await;
    db.wait_for_state(during, JobState::Completed, Duration::from_secs(20))
        .await;

    // Draining: not ready at once, nothing new is claimed, metrics still served.
    let drained: Value = daemon
        .http
        .post(daemon.url("/admin/drain"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(drained["draining"], json!(true));
    let body: Value = ready().await.json().await.unwrap();
    assert_eq!(
        (body["ready"].clone(), body["draining"].clone()),
        (json!(false), json!(true))
    );
    let after = db.enqueue(NewJob::new("noop", json!({}))).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(db.job(after).await.state, JobState::Available);
    let metrics = daemon
        .http
        .get(daemon.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        prom::sum(&prom::parse(&metrics), "genq_daemon_draining", &[]),
        1.0
    );
    assert!(daemon.stop().await, "exit 0 after SIGTERM");
}

#[sqlx::test(migrations = false)]
async fn the_public_listener_serves_only_webhooks_and_the_internal_one_the_rest(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    let url = db.url().await;
    let public = format!("127.0.0.1:{}", crate::common::free_port());
    let daemon = RunningBinary::start(
        &url,
        &[
            ("GENQ_ADMIN_TOKEN", TOKEN),
            ("GENQ_HTTP_PUBLIC_BIND", public.as_str()),
        ],
    )
    .await;
    // The public listener binds on its own, after the internal one the start waited for.
    wait_until(Duration::from_secs(10), "the public listener", || async {
        tokio::net::TcpStream::connect(public.as_str())
            .await
            .is_ok()
    })
    .await;
    let http = &daemon.http;
    let get = |base: String, path: &'static str| async move {
        http.get(format!("{base}{path}"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .status()
    };
    let post = |base: String, path: &'static str| async move {
        http.post(format!("{base}{path}"))
            .body("{}")
            .send()
            .await
            .unwrap()
            .status()
    };
    let public = format!("http://{public}");

    // The internet-facing port: webhooks (and a health check that says nothing) only.
    for path in ["/metrics", "/readyz", "/admin/queues"] {
        assert_eq!(
            get(public.clone(), path).await,
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    assert_eq!(get(public.clone(), "/healthz").await, StatusCode::OK);
    for path in ["/webhooks/replicate", "/webhooks/fal", "/webhooks/plisio"] {
        let status = post(public.clone(), path).await;
        assert_ne!(status, StatusCode::NOT_FOUND, "{path} is served publicly");
        assert!(
            !status.is_success(),
            "{path}: an unsigned callback is refused"
        );
    }

    // The internal port: everything but the webhooks, which moved to the public one.
    for path in ["/metrics", "/readyz", "/healthz", "/admin/queues"] {
        assert_eq!(
            get(daemon.base.clone(), path).await,
            StatusCode::OK,
            "{path}"
        );
    }
    assert_eq!(
        post(daemon.base.clone(), "/webhooks/replicate").await,
        StatusCode::NOT_FOUND
    );
    assert!(daemon.stop().await);
}
