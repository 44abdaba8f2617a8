//! Retention with the rest of genq: the pipeline registering outputs, the privacy CLI and
//! metrics against the real daemon, and `check_retention()` reporting each broken invariant.

use super::*;

#[sqlx::test(migrations = false)]
async fn the_pipeline_registers_outputs_and_dates_sources_when_a_generation_ends(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let env = crate::common::generation::GenEnv::new(
        TestDb::new(po, co).await,
        Duration::from_millis(200),
    )
    .await;
    env.grant("u1", 100).await;
    let id = env.request("u1", "fal", 10).await;
    // The backend registers the upload the generation consumes, with its generation.
    let mut conn = env.db.pool.acquire().await.unwrap();
    let source = blobs::register(
        &mut conn,
        "u1",
        BlobRole::Source,
        "local",
        "up/u1/src.png",
        Some(id),
    )
    .await
    .unwrap();
    drop(conn);
    let _daemon = env.daemon();
    let g = env.wait_final(id, Duration::from_secs(20)).await;
    env.assert_output_stored(&g);

    type Row = (
        String,
        String,
        Option<String>,
        Option<chrono::DateTime<chrono::Utc>>,
    );
    let rows: Vec<Row> =
        sqlx::query_as(
            "SELECT role::text, key, policy, expires_at FROM genq.blobs WHERE generation_id = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(&env.db.pool)
        .await
        .unwrap();
    let finished = g.finished_at.unwrap();
    // The source: due 24 h after the generation ended.
    assert_eq!(rows[0].0, "source");
    assert_eq!(rows[0].2.as_deref(), Some("source"));
    assert_eq!(rows[0].3.unwrap(), finished + chrono::Duration::hours(24));
    // Each output copied: registered in the settling transaction, due in 30 days.
    let outputs = g.output.as_ref().unwrap().as_array().unwrap();
    assert_eq!(rows.len(), 1 + outputs.len());
    for (row, out) in rows[1..].iter().zip(outputs) {
        assert_eq!(row.0, "output");
        assert_eq!(row.1, out["key"].as_str().unwrap());
        assert_eq!(row.2.as_deref(), Some("output"));
        let ttl = row.3.unwrap() - finished;
        assert!((ttl.num_hours() - 30 * 24).abs() <= 1, "{ttl:?}");
    }
    let _ = source;
    env.assert_ledger_clean().await;
    assert_eq!(genq::retention::check(&env.db.pool).await.unwrap(), vec![]);
}

#[sqlx::test(migrations = false)]
async fn privacy_cli_and_metrics_against_the_real_daemon(po: PgPoolOptions, co: PgConnectOptions) {
    use crate::common::{genq_run_async, prom, RunningBinary};
    let env = RetentionEnv::setup(po, co).await;
    let url = env.db.url().await;
    let user = "cli-user";
    let g = env.generation(user).await;
    env.succeed(g).await;
    env.upload(user, BlobRole::Reference, "ref/cli-user/new.png", None)
        .await;
    let old = env
        .upload(user, BlobRole::Reference, "ref/cli-user/old.png", None)
        .await;
    env.backdate_blob(old, d(7) + h(2)).await;

    // Overdue before any daemon ran: the status says so, with exit status 3.
    let out = genq_run_async(&url, &["privacy", "status"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(3), "{text}");
    assert!(text.contains("OVERDUE: 1 item(s)"), "{text}");

    let dir = env.dir.path().to_string_lossy().into_owned();
    let daemon = RunningBinary::start(
        &url,
        &[
            ("GENQ_STORAGE_LOCAL_DIR", dir.as_str()),
            ("GENQ_RETENTION_INTERVAL", "1s"),
            ("GENQ_ERASURE_HASH_KEY", "cli-test-key"),
        ],
    )
    .await;
    wait_until(
        Duration::from_secs(20),
        "the overdue blob deleted",
        || async { env.blob(old).await.deleted_at.is_some() },
    )
    .await;
    assert!(!env.local_exists("ref/cli-user/old.png"));
    let out = genq_run_async(&url, &["privacy", "status", "--json"]).await;
    assert_eq!(out.status.code(), Some(0));
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(status["overdue"], 0);
    assert!(status["deleted_last_24h"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["role"] == "reference" && r["outcome"] == "deleted" && r["count"] == 1));

    let out = genq_run_async(&url, &["privacy", "export", user, "--wait", "20s"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("written to file://") && text.contains("local:exports/"),
        "{text}"
    );

    let out = genq_run_async(&url, &["privacy", "erase", user, "--wait", "30s"]).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let subject = genq::retention::erasure::subject(b"cli-test-key", user);
    assert!(
        text.contains(&format!("records kept under {subject}")),
        "{text}"
    );
    assert_eq!(env.rows_naming(user).await, 0);
    assert!(!env.dir.path().join("ref").join(user).exists());

    let out = genq_run_async(
        &url,
        &["privacy", "delete-generation", &Uuid::new_v4().to_string()],
    )
    .await;
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));

    // Metrics: deletions by store/role/outcome, the erasure's duration, nothing overdue.
    wait_until(
        Duration::from_secs(10),
        "metrics to show the work",
        || async {
            let text = daemon
                .http
                .get(daemon.url("/metrics"))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            let s = prom::parse(&text);
            prom::sum(
                &s,
                "genq_retention_deletions_total",
                &[
                    ("store", "local"),
                    ("role", "reference"),
                    ("outcome", "deleted"),
                ],
            ) >= 2.0
                && prom::sum(&s, "genq_privacy_erasure_seconds_count", &[]) == 1.0
                && prom::sum(&s, "genq_privacy_exports_total", &[]) == 1.0
                && prom::has(&s, "genq_retention_overdue")
                && prom::sum(&s, "genq_retention_overdue", &[]) == 0.0
        },
    )
    .await;
    assert!(daemon.stop().await);
    env.assert_retention_clean().await;
}

#[sqlx::test(migrations = false)]
async fn check_retention_reports_each_broken_invariant(po: PgPoolOptions, co: PgConnectOptions) {
    let env = RetentionEnv::setup(po, co).await;
    let early = env
        .upload("u1", BlobRole::Reference, "ref/u1/early.png", None)
        .await;
    let ended = env.generation("u1").await;
    let source = env
        .upload("u1", BlobRole::Source, "up/u1/s.png", Some(ended))
        .await;
    let succeeded = env.generation("u1").await;
    env.succeed(succeeded).await;
    env.assert_retention_clean().await;

    // Break each one by hand, as a bug or a manual edit would.
    sqlx::query("UPDATE genq.blobs SET deleted_at = now() WHERE id = $1")
        .bind(early)
        .execute(&env.db.pool)
        .await
        .unwrap();
    sqlx::query("ALTER TABLE genq.generations DISABLE TRIGGER generations_schedule_blobs")
        .execute(&env.db.pool)
        .await
        .unwrap();
    env.cancel(ended).await;
    sqlx::query(
        "UPDATE genq.generations SET output = '[{\"store\": \"local\", \"key\": \"outputs/x.png\"}]' WHERE id = $1",
    )
    .bind(succeeded)
    .execute(&env.db.pool)
    .await
    .unwrap();
    let mut found: Vec<String> = genq::retention::check(&env.db.pool)
        .await
        .unwrap()
        .into_iter()
        .map(|v| v.invariant)
        .collect();
    found.sort();
    assert_eq!(
        found,
        [
            "deleted_before_due",
            "deletion_not_logged",
            "output_not_registered",
            "source_not_scheduled"
        ]
    );
    let _ = source;
}
