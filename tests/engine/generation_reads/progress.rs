//! Progress: what each fake dialect reports (fal's queue position and log percentages,
//! Replicate's log percentages and `starting`, BytePlus's phases) reaches the row through
//! the real poll; it is written only when it changed (no new version otherwise); and a
//! provider's huge log never grows the row.

use genq::dev::fake_provider::FakeConfig;
use genq::generation::record;
use genq::providers::progress::Phase;
use genq::providers::{Progress, Providers, RemoteStatus, SubmitRequest};

use super::*;

/// A fake rendering for `render`, its adapters, and the generation fixture.
async fn env_rendering(po: PgPoolOptions, co: PgConnectOptions, render: Duration) -> GenEnv {
    let db = TestDb::new(po, co).await;
    GenEnv::with_fake(
        db,
        FakeConfig {
            render_time: render,
            ..FakeConfig::default()
        },
    )
    .await
}

fn adapters(env: &GenEnv) -> Providers {
    Providers::from_config(&env.config.providers).unwrap()
}

fn request(kind: ProviderKind, input: Value) -> SubmitRequest {
    SubmitRequest {
        generation_id: Uuid::new_v4(),
        model: crate::common::generation::model_for(kind.as_str()).into(),
        input,
        webhook_url: None,
    }
}

/// A queued generation moved to `submitted`, as the submit job leaves it.
async fn submitted(env: &GenEnv) -> Uuid {
    let id = env.request("u1", "fal", 1).await;
    sqlx::query(
        "UPDATE genq.generations SET state = 'submitted', provider_request_id = 'r', submitted_at = now()
          WHERE id = $1",
    )
    .bind(id)
    .execute(&env.db.pool)
    .await
    .unwrap();
    id
}

async fn row(env: &GenEnv, id: Uuid) -> (Option<Value>, i64) {
    sqlx::query_as("SELECT progress, version FROM genq.generations WHERE id = $1")
        .bind(id)
        .fetch_one(&env.db.pool)
        .await
        .unwrap()
}

#[sqlx::test(migrations = false)]
async fn the_poll_records_what_each_dialect_reports_while_it_renders(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    // Queued for 2 s, then running for 6 s: polls every 2 s see it running.
    let env = env_rendering(po, co, Duration::from_secs(8)).await;
    env.grant("u1", 100).await;
    let daemon = env.daemon();
    let fal = env.request("u1", "fal", 1).await;
    let replicate = env.request("u1", "replicate", 1).await;
    let byteplus = env.request("u1", "byteplus", 1).await;
    let first_version = get(&env.db, fal).await["version"].as_i64().unwrap();
    for (id, with_percent) in [(fal, true), (replicate, true), (byteplus, false)] {
        wait_until(Duration::from_secs(30), "running progress", || async {
            let p = &get(&env.db, id).await["progress"];
            p["phase"] == "running" && (!with_percent || p["percent"].is_number())
        })
        .await;
    }
    daemon.shutdown().await;

    for id in [fal, replicate] {
        let g = get(&env.db, id).await;
        let p = &g["progress"];
        let percent = p["percent"].as_f64().unwrap();
        assert!((0.0..100.0).contains(&percent), "{p}");
        // The model's last log line: the tqdm bar carrying that percent.
        let message = p["message"].as_str().unwrap();
        assert!(message.contains(&format!("{percent}%")), "{p}");
        assert!(p["updated_at"].is_string(), "{p}");
        assert_eq!(p["queue_position"], Value::Null);
    }
    let p = &get(&env.db, byteplus).await["progress"];
    assert_eq!(
        (p["percent"].clone(), p["message"].clone()),
        (Value::Null, Value::Null)
    );
    assert!(get(&env.db, fal).await["version"].as_i64().unwrap() > first_version);
}

#[sqlx::test(migrations = false)]
async fn queued_requests_report_their_phase_and_fal_its_queue_position(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    // Queued for 10 s: the first status read comes long before the position changes.
    let env = env_rendering(po, co, Duration::from_secs(40)).await;
    let providers = adapters(&env);
    for (kind, expected) in [
        (
            ProviderKind::Fal,
            Progress::phase(Phase::Queued).with_queue_position(Some(2)),
        ),
        (ProviderKind::Replicate, Progress::phase(Phase::Starting)),
        (ProviderKind::BytePlus, Progress::phase(Phase::Queued)),
    ] {
        let p = providers.get(kind);
        let submitted = p
            .submit(&request(kind, json!({"prompt": "a fox"})))
            .await
            .unwrap();
        let status = p
            .status(&submitted.request_id, &submitted.meta)
            .await
            .unwrap();
        assert_eq!(status, RemoteStatus::Queued(expected), "{kind}");
    }
}

#[sqlx::test(migrations = false)]
async fn progress_is_written_only_when_it_changed_and_only_while_submitted(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let env = GenEnv::setup(po, co).await;
    env.grant("u1", 100).await;
    let id = submitted(&env).await;
    let (_, v0) = row(&env, id).await;
    let mut conn = env.db.pool.acquire().await.unwrap();
    let at_40 = Progress::phase(Phase::Running).with_log_text(" 40%|████      | 8/20");
    assert!(record::record_progress(&mut conn, id, &at_40)
        .await
        .unwrap());
    let (p1, v1) = row(&env, id).await;
    assert!(v1 > v0);
    let p1 = p1.unwrap();
    assert_eq!(p1["percent"], 40.0);
    assert!(p1["updated_at"].is_string());

    // The same report again: nothing written, same version, same updated_at.
    assert!(!record::record_progress(&mut conn, id, &at_40)
        .await
        .unwrap());
    assert_eq!(row(&env, id).await, (Some(p1.clone()), v1));

    let at_45 = Progress::phase(Phase::Running).with_log_text(" 45%|████      | 9/20");
    assert!(record::record_progress(&mut conn, id, &at_45)
        .await
        .unwrap());
    let (p2, v2) = row(&env, id).await;
    assert!(v2 > v1);
    assert_eq!(p2.unwrap()["percent"], 45.0);

    // Once final, a late report changes nothing.
    sqlx::query("UPDATE genq.generations SET state = 'failed' WHERE id = $1")
        .bind(id)
        .execute(&env.db.pool)
        .await
        .unwrap();
    let (_, v3) = row(&env, id).await;
    let later = Progress::phase(Phase::Running).with_log_text("99%");
    assert!(!record::record_progress(&mut conn, id, &later)
        .await
        .unwrap());
    assert_eq!(row(&env, id).await.1, v3);
}

#[sqlx::test(migrations = false)]
async fn a_hostile_provider_log_cannot_grow_the_row(po: PgPoolOptions, co: PgConnectOptions) {
    // Queued for 0.5 s, then running for long.
    let env = env_rendering(po, co, Duration::from_secs(2)).await;
    env.grant("u1", 100).await;
    let providers = adapters(&env);
    let id = submitted(&env).await;
    let mut conn = env.db.pool.acquire().await.unwrap();
    for kind in [ProviderKind::Fal, ProviderKind::Replicate] {
        let p = providers.get(kind);
        // 3 MB of log in one line, under the 4 MiB answer limit: read, reduced, capped.
        let input = json!({"prompt": "a fox", "fake_log_bytes": 3_000_000});
        let submitted = p.submit(&request(kind, input)).await.unwrap();
        let mut status = p
            .status(&submitted.request_id, &submitted.meta)
            .await
            .unwrap();
        while matches!(status, RemoteStatus::Queued(_)) {
            tokio::time::sleep(Duration::from_millis(50)).await;
            status = p
                .status(&submitted.request_id, &submitted.meta)
                .await
                .unwrap();
        }
        let RemoteStatus::Running(progress) = status else {
            panic!("{kind}: {status:?}")
        };
        assert!(progress.percent.is_some(), "{kind}: {progress:?}");
        record::record_progress(&mut conn, id, &progress)
            .await
            .unwrap();
        let size: i32 = sqlx::query_scalar(
            "SELECT octet_length(progress::text) FROM genq.generations WHERE id = $1",
        )
        .bind(id)
        .fetch_one(&env.db.pool)
        .await
        .unwrap();
        assert!(size < 1024, "{kind}: progress is {size} bytes");

        // 10 MB: the answer is over the provider body limit, so the read fails as retryable
        // and nothing of it reaches the row.
        let input = json!({"prompt": "a fox", "fake_log_bytes": 10_000_000});
        let huge = p.submit(&request(kind, input)).await.unwrap();
        let err = loop {
            match p.status(&huge.request_id, &huge.meta).await {
                Ok(RemoteStatus::Queued(_)) => tokio::time::sleep(Duration::from_millis(50)).await,
                Err(err) => break err,
                Ok(other) => panic!("{kind}: a 10 MB answer was read: {other:?}"),
            }
        };
        assert!(err.is_retryable(), "{kind}: {err}");
    }
    // The column refuses anything large, whoever writes it.
    let err = sqlx::query("UPDATE genq.generations SET progress = jsonb_build_object('message', repeat('x', 2000)) WHERE id = $1")
        .bind(id)
        .execute(&env.db.pool)
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "23514", "{err}");
}
