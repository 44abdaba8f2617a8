//! Retention, the policies: each deletes exactly what is due, kept-forever outputs and
//! changed policies, bad registrations refused, sweeps racing uploads, and the backlog.

use super::*;

#[sqlx::test(migrations = false)]
async fn each_policy_deletes_exactly_what_is_due(po: PgPoolOptions, co: PgConnectOptions) {
    let env = RetentionEnv::setup(po, co).await;
    let _daemon = env.daemon();

    // Sources: due 24 h after their generation ended, never while it runs.
    let ended_long_ago = env.generation("u1").await;
    env.cancel(ended_long_ago).await;
    let ended_recently = env.generation("u1").await;
    env.cancel(ended_recently).await;
    let running = env.generation("u1").await;
    let src_due = env
        .upload("u1", BlobRole::Source, "up/u1/a.png", Some(ended_long_ago))
        .await;
    let src_kept = env
        .upload("u1", BlobRole::Source, "up/u1/b.png", Some(ended_recently))
        .await;
    let src_running = env
        .upload("u1", BlobRole::Source, "up/u1/c.png", Some(running))
        .await;
    env.backdate_generation(ended_long_ago, h(25)).await;
    env.backdate_generation(ended_recently, h(23)).await;
    // Re-date the sources from the back-dated ends (as if the time had passed).
    sqlx::query("SELECT genq.set_retention_policy('source', interval '23 hours')")
        .execute(&env.db.pool)
        .await
        .unwrap();
    sqlx::query("SELECT genq.set_retention_policy('source', interval '24 hours')")
        .execute(&env.db.pool)
        .await
        .unwrap();
    assert!(env.blob(src_running).await.expires_at.is_none());

    // References 7 days, outputs 30 days, exports 7 days after registration.
    let ref_due = env
        .upload("u1", BlobRole::Reference, "ref/u1/due.png", None)
        .await;
    let ref_kept = env
        .upload("u1", BlobRole::Reference, "ref/u1/kept.png", None)
        .await;
    let out_due = env
        .upload("u1", BlobRole::Output, "out/u1/due.mp4", None)
        .await;
    let out_kept = env
        .upload("u1", BlobRole::Output, "out/u1/kept.mp4", None)
        .await;
    let exp_due = env
        .upload("u1", BlobRole::Export, "exports/due.json", None)
        .await;
    let exp_kept = env
        .upload("u1", BlobRole::Export, "exports/kept.json", None)
        .await;
    env.backdate_blob(ref_due, d(7) + h(1)).await;
    env.backdate_blob(ref_kept, d(7) - h(1)).await;
    env.backdate_blob(out_due, d(30) + h(1)).await;
    env.backdate_blob(out_kept, d(30) - h(1)).await;
    env.backdate_blob(exp_due, d(7) + h(1)).await;
    env.backdate_blob(exp_kept, d(6)).await;

    // Inputs scrubbed 30 days after the generation ended; webhook bodies after 7 days.
    let old_gen = env.generation("u2").await;
    env.cancel(old_gen).await;
    env.backdate_generation(old_gen, d(31)).await;
    let new_gen = env.generation("u2").await;
    env.cancel(new_gen).await;
    for (key, age) in [("old", d(8)), ("new", d(6))] {
        sqlx::query(
            "INSERT INTO genq.webhook_events (provider, dedupe_key, received_at, body)
             VALUES ('replicate', $1, now() - make_interval(secs => $2), '{\"x\":1}')",
        )
        .bind(key)
        .bind(age.as_secs_f64())
        .execute(&env.db.pool)
        .await
        .unwrap();
    }

    env.sweep().await;

    for (id, key, policy) in [
        (src_due, "up/u1/a.png", "source"),
        (ref_due, "ref/u1/due.png", "reference"),
        (out_due, "out/u1/due.mp4", "output"),
        (exp_due, "exports/due.json", "export"),
    ] {
        let b = env.blob(id).await;
        assert!(
            b.deleted_at.is_some(),
            "{key} is due and must be deleted: {b:?}"
        );
        assert!(!env.local_exists(key), "{key} still on disk");
        assert_eq!(
            env.log_for_blob(id).await,
            vec![("deleted".to_string(), policy.to_string())]
        );
    }
    for (id, key) in [
        (src_kept, "up/u1/b.png"),
        (src_running, "up/u1/c.png"),
        (ref_kept, "ref/u1/kept.png"),
        (out_kept, "out/u1/kept.mp4"),
        (exp_kept, "exports/kept.json"),
    ] {
        let b = env.blob(id).await;
        assert!(b.deleted_at.is_none(), "{key} is not due yet: {b:?}");
        assert!(env.local_exists(key), "{key} deleted before it was due");
        assert!(env.log_for_blob(id).await.is_empty());
    }

    let inputs: Vec<(Uuid, serde_json::Value, bool)> = sqlx::query_as(
        "SELECT id, input, scrubbed_at IS NOT NULL FROM genq.generations WHERE user_id = 'u2'",
    )
    .fetch_all(&env.db.pool)
    .await
    .unwrap();
    for (id, input, scrubbed) in inputs {
        if id == old_gen {
            assert!(scrubbed && input == serde_json::json!({}), "{input}");
        } else {
            assert!(!scrubbed && input["prompt"].is_string(), "{input}");
        }
    }
    let bodies: Vec<(String, bool)> = sqlx::query_as(
        "SELECT dedupe_key, body IS NULL FROM genq.webhook_events ORDER BY dedupe_key",
    )
    .fetch_all(&env.db.pool)
    .await
    .unwrap();
    assert_eq!(
        bodies,
        vec![("new".to_string(), false), ("old".to_string(), true)]
    );
    let logged = scalar_i64(
        &env,
        "SELECT count(*) FROM genq.deletion_log WHERE subject IN ('input', 'webhook_body')
            AND policy IN ('inputs', 'webhook_bodies')",
    )
    .await;
    assert_eq!(logged, 2);

    // A second sweep finds nothing more.
    env.sweep().await;
    assert_eq!(
        scalar_i64(&env, "SELECT count(*) FROM genq.deletion_log").await,
        6
    );
    env.assert_retention_clean().await;
}

#[sqlx::test(migrations = false)]
async fn outputs_kept_forever_and_changed_policies_redate_what_is_stored(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let mut env = RetentionEnv::setup(po, co).await;
    let out = env
        .upload("u1", BlobRole::Output, "out/u1/1.mp4", None)
        .await;
    env.backdate_blob(out, d(40)).await;

    // output_after = "never": a daemon starting with it unschedules stored outputs.
    env.config.retention.output_after = None;
    genq::retention::apply_policies(&env.db.pool, &env.config.retention)
        .await
        .unwrap();
    let b = env.blob(out).await;
    assert!(b.expires_at.is_none() && b.policy.is_none(), "{b:?}");
    let daemon = env.daemon();
    env.sweep().await;
    assert!(env.blob(out).await.deleted_at.is_none());
    assert!(env.local_exists("out/u1/1.mp4"));
    // A daemon applies its own policies when it starts (a start hook, concurrent with its
    // claims): stop this one, or its "never" may land after the change below.
    daemon.shutdown().await;

    // Back to 30 days: the output registered 40 days ago is due again, and deleted.
    env.config.retention.output_after = Some(d(30));
    let redated = genq::retention::apply_policies(&env.db.pool, &env.config.retention)
        .await
        .unwrap();
    assert_eq!(redated, 1);
    let _daemon = env.daemon();
    env.sweep().await;
    assert!(env.blob(out).await.deleted_at.is_some());
    assert!(!env.local_exists("out/u1/1.mp4"));
    env.assert_retention_clean().await;
}

#[sqlx::test(migrations = false)]
async fn register_blob_refuses_bad_input_clearly(po: PgPoolOptions, co: PgConnectOptions) {
    let env = RetentionEnv::setup(po, co).await;
    let g = env.generation("owner").await;
    let call = |user: &'static str,
                role: &'static str,
                store: &'static str,
                key: &'static str,
                gen: Option<Uuid>| {
        let pool = env.db.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT genq.register_blob($1, $2, $3, $4, $5)")
                .bind(user)
                .bind(role)
                .bind(store)
                .bind(key)
                .bind(gen)
                .fetch_one(&pool)
                .await
                .map_err(|e| {
                    let db = e.as_database_error().expect("a database error");
                    (db.code().unwrap().to_string(), db.message().to_string())
                })
        }
    };
    let (code, msg) = call("u", "thumbnail", "local", "k", None)
        .await
        .unwrap_err();
    assert_eq!(code, "22023");
    assert!(
        msg.contains("role must be source, reference, output or export"),
        "{msg}"
    );
    let (code, msg) = call("u", "source", "dropbox", "k", None).await.unwrap_err();
    assert_eq!(code, "22023");
    assert!(msg.contains("store must be"), "{msg}");
    let (code, _) = call("", "source", "local", "k", None).await.unwrap_err();
    assert_eq!(code, "22023");
    let (code, msg) = call("intruder", "source", "local", "k", Some(g))
        .await
        .unwrap_err();
    assert_eq!(code, "22023");
    assert!(msg.contains("belongs to another user"), "{msg}");
    let (code, _) = call("u", "source", "local", "k", Some(Uuid::new_v4()))
        .await
        .unwrap_err();
    assert_eq!(code, "P0002");

    // Idempotent for the same registration; a live key held by another registration (here
    // another role) is refused, and another user's key is outside that user's space.
    let id = call("owner", "source", "local", "up/owner/x.png", Some(g))
        .await
        .unwrap();
    assert_eq!(
        call("owner", "source", "local", "up/owner/x.png", Some(g))
            .await
            .unwrap(),
        id
    );
    let (code, msg) = call("owner", "reference", "local", "up/owner/x.png", None)
        .await
        .unwrap_err();
    assert_eq!(code, "23505");
    assert!(msg.contains("already registered"), "{msg}");
    let (code, msg) = call("other", "reference", "local", "up/owner/x.png", None)
        .await
        .unwrap_err();
    assert_eq!(code, "22023");
    assert!(msg.contains("outside the user's space"), "{msg}");
    assert_eq!(scalar_i64(&env, "SELECT count(*) FROM genq.blobs").await, 1);
}

#[sqlx::test(migrations = false)]
async fn sweep_racing_new_uploads_deletes_nothing_it_should_not(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let mut env = RetentionEnv::setup(po, co).await;
    env.config.retention.batch = 7;
    let _daemon = env.daemon();
    // 60 expired references; their keys get uploaded again while sweeps run.
    let mut old = Vec::new();
    for i in 0..60 {
        let key = format!("ref/u1/{i}.png");
        let id = env.upload("u1", BlobRole::Reference, &key, None).await;
        env.backdate_blob(id, d(8)).await;
        old.push((id, key));
    }
    let sweeps = async {
        for _ in 0..5 {
            env.sweep().await;
        }
    };
    // The backend's order: register (in its transaction), then upload the bytes.
    let uploads = async {
        let mut new = Vec::new();
        for i in (0..60).step_by(2) {
            let key = format!("ref/u1/{i}.png");
            let id = env
                .register("u1", BlobRole::Reference, "local", &key, None)
                .await;
            env.put_local(&key, b"new upload");
            new.push((id, key.clone()));
            let fresh = format!("ref/u1/fresh-{i}.png");
            let id = env.upload("u1", BlobRole::Reference, &fresh, None).await;
            new.push((id, fresh));
            tokio::task::yield_now().await;
        }
        new
    };
    let ((), new) = tokio::join!(sweeps, uploads);
    env.sweep().await;

    for (id, key) in &new {
        let b = env.blob(*id).await;
        assert!(b.deleted_at.is_none(), "new upload {key} deleted: {b:?}");
        assert!(
            env.local_exists(key),
            "new upload {key} is gone from the store"
        );
        assert!(!std::fs::read(env.dir.path().join(key)).unwrap().is_empty());
    }
    for (id, key) in &old {
        let b = env.blob(*id).await;
        assert!(b.deleted_at.is_some(), "expired {key} not closed: {b:?}");
        let log = env.log_for_blob(*id).await;
        assert_eq!(log.len(), 1, "{key}: {log:?}");
        let reuploaded = new.iter().any(|(_, k)| k == key);
        if !reuploaded {
            assert!(!env.local_exists(key), "expired {key} still stored");
            assert_eq!(log[0].0, "deleted");
        }
    }
    // One live registration per key, always.
    assert_eq!(
        scalar_i64(
            &env,
            "SELECT count(*) FROM (SELECT key FROM genq.blobs WHERE deleted_at IS NULL
               GROUP BY key HAVING count(*) > 1) dup"
        )
        .await,
        0
    );
    env.assert_retention_clean().await;
}

#[sqlx::test(migrations = false)]
async fn backlog_counts_due_and_overdue_until_the_sweep_runs(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let env = RetentionEnv::setup(po, co).await;
    let due = env
        .upload("u1", BlobRole::Reference, "ref/u1/1.png", None)
        .await;
    let overdue = env
        .upload("u1", BlobRole::Reference, "ref/u1/2.png", None)
        .await;
    env.backdate_blob(due, d(7) + Duration::from_secs(60)).await;
    env.backdate_blob(overdue, d(7) + h(2)).await;
    let req: i64 = sqlx::query_scalar("SELECT genq.request_erasure('gone-user')")
        .fetch_one(&env.db.pool)
        .await
        .unwrap();
    sqlx::query("UPDATE genq.erasure_requests SET due_at = now() - interval '1 day' WHERE id = $1")
        .bind(req)
        .execute(&env.db.pool)
        .await
        .unwrap();

    let b = backlog::backlog(&env.db.pool, h(1)).await.unwrap();
    let get = |kind: &str| b.iter().find(|x| x.kind == kind).unwrap().clone();
    assert_eq!((get("reference").due, get("reference").overdue), (2, 1));
    assert_eq!((get("erasure").due, get("erasure").overdue), (1, 1));
    assert_eq!((get("output").due, get("output").overdue), (0, 0));
    assert_eq!(b.len(), backlog::KINDS.len());

    let _daemon = env.daemon();
    env.sweep().await;
    wait_until(
        Duration::from_secs(10),
        "the erasure to complete",
        || async {
            let b = backlog::backlog(&env.db.pool, h(1)).await.unwrap();
            b.iter().all(|x| x.due == 0 && x.overdue == 0)
        },
    )
    .await;
    env.assert_retention_clean().await;
}
