//! Retention, privacy requests: deleting a generation, erasing a user (cancelling at the
//! provider first), and exporting a user's data.

use super::*;

#[sqlx::test(migrations = false)]
async fn delete_generation_scrubs_now_and_deletes_its_blobs(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let env = RetentionEnv::setup(po, co).await;
    let _daemon = env.daemon();
    let done = env.generation("u1").await;
    let src = env
        .upload("u1", BlobRole::Source, "up/u1/d.png", Some(done))
        .await;
    env.succeed(done).await;
    let out = env
        .upload("u1", BlobRole::Output, "out/u1/d.mp4", Some(done))
        .await;
    let other = env.generation("u1").await;
    let other_src = env
        .upload("u1", BlobRole::Source, "up/u1/other.png", Some(other))
        .await;

    let state: String = sqlx::query_scalar("SELECT genq.delete_generation($1)::text")
        .bind(done)
        .fetch_one(&env.db.pool)
        .await
        .unwrap();
    assert_eq!(state, "succeeded");
    let (input, output): (serde_json::Value, Option<serde_json::Value>) =
        sqlx::query_as("SELECT input, output FROM genq.generations WHERE id = $1")
            .bind(done)
            .fetch_one(&env.db.pool)
            .await
            .unwrap();
    assert_eq!(input, serde_json::json!({}));
    assert!(output.is_none());
    // delete_generation asked for a sweep: no manual run needed.
    wait_until(
        Duration::from_secs(10),
        "the generation's blobs deleted",
        || async {
            env.blob(src).await.deleted_at.is_some() && env.blob(out).await.deleted_at.is_some()
        },
    )
    .await;
    assert!(!env.local_exists("up/u1/d.png") && !env.local_exists("out/u1/d.mp4"));
    assert_eq!(
        env.log_for_blob(out).await,
        vec![("deleted".to_string(), "user_deletion".to_string())]
    );
    assert!(env.blob(other_src).await.deleted_at.is_none());
    assert!(env.local_exists("up/u1/other.png"));
    // Money untouched: the capture stays.
    env.assert_ledger_clean().await;

    // A generation still running is cancelled first (hold released) and deleted.
    let state: String = sqlx::query_scalar("SELECT genq.delete_generation($1)::text")
        .bind(other)
        .fetch_one(&env.db.pool)
        .await
        .unwrap();
    assert_eq!(state, "queued");
    wait_until(
        Duration::from_secs(10),
        "the cancelled generation's source deleted",
        || async { env.blob(other_src).await.deleted_at.is_some() },
    )
    .await;
    let kinds: Vec<String> = sqlx::query_scalar(
        "SELECT kind::text FROM genq.ledger WHERE generation_id = $1 ORDER BY id",
    )
    .bind(other)
    .fetch_all(&env.db.pool)
    .await
    .unwrap();
    assert_eq!(kinds, ["hold", "release"]);
    env.assert_ledger_clean().await;
    env.assert_retention_clean().await;
}

#[sqlx::test(migrations = false)]
async fn erasure_deletes_data_and_deidentifies_money_records(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let env = RetentionEnv::setup(po, co).await;
    let user = "user-erase-7";
    // History: a succeeded generation (captured), a cancelled one, one still queued, every
    // kind of blob, a payment and its callback, a provider callback.
    let g1 = env.generation(user).await;
    env.upload(
        user,
        BlobRole::Source,
        &format!("up/{user}/src.png"),
        Some(g1),
    )
    .await;
    env.succeed(g1).await;
    env.upload(
        user,
        BlobRole::Output,
        &format!("outputs/{user}/{g1}/0.png"),
        Some(g1),
    )
    .await;
    let g2 = env.generation(user).await;
    env.cancel(g2).await;
    let g3 = env.generation(user).await;
    env.upload(
        user,
        BlobRole::Reference,
        &format!("ref/{user}/style.png"),
        None,
    )
    .await;
    sqlx::query("SELECT genq.record_invoice('txn-1', 'order-1', $1, 500)")
        .bind(user)
        .execute(&env.db.pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO genq.webhook_events (provider, dedupe_key, request_id, body)
         VALUES ('plisio', 'txn-1:completed', 'txn-1', convert_to('{\"email\":\"user-erase-7@example.com\"}', 'UTF8')),
                ('fal', 'r1:OK', NULL, convert_to('{\"prompt\":\"user-erase-7 portrait\"}', 'UTF8'))",
    )
    .execute(&env.db.pool)
    .await
    .unwrap();
    sqlx::query("UPDATE genq.webhook_events SET generation_id = $1 WHERE provider = 'fal'")
        .bind(g1)
        .execute(&env.db.pool)
        .await
        .unwrap();
    // Someone else's data must not be touched.
    let bystander = env.generation("bystander").await;
    let kept = env
        .upload(
            "bystander",
            BlobRole::Reference,
            "ref/bystander/bystander.png",
            None,
        )
        .await;

    let ledger_before = scalar_i64(&env, "SELECT count(*) FROM genq.ledger").await;
    let (available_before, held_before): (i64, i64) =
        sqlx::query_as("SELECT available, held FROM genq.accounts WHERE user_id = $1")
            .bind(user)
            .fetch_one(&env.db.pool)
            .await
            .unwrap();
    assert!(env.rows_naming(user).await > 0);

    let _daemon = env.daemon();
    let id = request_erasure(&env.db.pool, user).await;
    // Asking again returns the pending request.
    assert_eq!(request_erasure(&env.db.pool, user).await, id);
    let request = wait_erased(&env.db.pool, id, Duration::from_secs(20)).await;
    let subject = genq::retention::erasure::subject(HASH_KEY, user);
    assert_eq!(request.subject.as_deref(), Some(subject.as_str()));
    assert!(request.user_id.is_none());
    assert!(request.completed_at.unwrap() < request.due_at);

    // Nothing names the user any more; every blob is gone from the store.
    assert_eq!(env.rows_naming(user).await, 0);
    assert_eq!(
        scalar_i64(&env, &format!("SELECT count(*) FROM genq.blobs WHERE user_id = '{subject}' AND deleted_at IS NULL")).await,
        0
    );
    // Not even an empty directory named after the user is left in the store.
    for dir in ["up", "ref", "outputs"] {
        let path = env.dir.path().join(dir).join(user);
        assert!(!path.exists(), "{} is still there", path.display());
    }
    // Every webhook body about the user is gone; the bystander's data is intact.
    assert_eq!(
        scalar_i64(
            &env,
            "SELECT count(*) FROM genq.webhook_events WHERE body IS NOT NULL"
        )
        .await,
        0
    );
    assert!(env.blob(kept).await.deleted_at.is_none());
    assert!(env.local_exists("ref/bystander/bystander.png"));
    let by: String = sqlx::query_scalar("SELECT state::text FROM genq.generations WHERE id = $1")
        .bind(bystander)
        .fetch_one(&env.db.pool)
        .await
        .unwrap();
    assert_eq!(by, "queued");

    // Money: the ledger keeps every row, under the pseudonym, and still adds up. The queued
    // generation was cancelled (hold released) before the balance moved.
    assert_eq!(
        scalar_i64(&env, "SELECT count(*) FROM genq.ledger").await,
        ledger_before + 1
    );
    let (available, held): (i64, i64) =
        sqlx::query_as("SELECT available, held FROM genq.accounts WHERE user_id = $1")
            .bind(&subject)
            .fetch_one(&env.db.pool)
            .await
            .unwrap();
    assert_eq!((available, held), (available_before + held_before, 0));
    let g3_state: String =
        sqlx::query_scalar("SELECT state::text FROM genq.generations WHERE id = $1")
            .bind(g3)
            .fetch_one(&env.db.pool)
            .await
            .unwrap();
    assert_eq!(g3_state, "cancelled");
    let payment_owner: String =
        sqlx::query_scalar("SELECT user_id FROM genq.payments WHERE txn_id = 'txn-1'")
            .fetch_one(&env.db.pool)
            .await
            .unwrap();
    assert_eq!(payment_owner, subject);
    env.assert_ledger_clean().await;
    let deletions = scalar_i64(
        &env,
        &format!("SELECT count(*) FROM genq.deletion_log WHERE user_id = '{subject}' AND policy = 'erasure'"),
    )
    .await;
    assert!(
        deletions >= 5,
        "blobs, inputs and bodies logged under the erasure policy: {deletions}"
    );
    env.assert_retention_clean().await;
}

#[sqlx::test(migrations = false)]
async fn export_archives_the_users_data_as_an_expiring_blob(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let env = RetentionEnv::setup(po, co).await;
    let user = "user-export-1";
    let g1 = env.generation(user).await;
    env.succeed(g1).await;
    let g2 = env.generation(user).await;
    env.cancel(g2).await;
    let src = env
        .upload(user, BlobRole::Source, "up/user-export-1/e.png", Some(g1))
        .await;
    sqlx::query("SELECT genq.record_invoice('txn-e', 'order-e', $1, 200)")
        .bind(user)
        .execute(&env.db.pool)
        .await
        .unwrap();
    env.generation("someone-else").await;

    let _daemon = env.daemon();
    let id = request_export(&env.db.pool, user).await;
    let request = wait_exported(&env.db.pool, id, Duration::from_secs(20)).await;
    let key = request.key.clone().unwrap();
    // The key cannot be guessed from the request id: 128 random bits.
    let token = key
        .strip_prefix("exports/")
        .and_then(|k| k.strip_suffix(".json"))
        .unwrap_or_else(|| panic!("export key {key}"));
    assert_eq!(token.len(), 32, "{key}");
    assert!(token.chars().all(|c| c.is_ascii_hexdigit()), "{key}");
    assert!(!key.contains(&format!("/{id}.")), "{key}");
    assert!(
        request.url.as_deref().unwrap().ends_with(&key),
        "{request:?}"
    );
    let archive: serde_json::Value =
        serde_json::from_slice(&std::fs::read(env.dir.path().join(&key)).unwrap()).unwrap();
    assert_eq!(archive["format"], "genq-export/1");
    assert_eq!(archive["user_id"], user);
    let gens = archive["generations"].as_array().unwrap();
    assert_eq!(gens.len(), 2);
    assert_eq!(gens[0]["id"], g1.to_string());
    assert_eq!(gens[0]["state"], "succeeded");
    assert_eq!(gens[0]["input"]["prompt"], format!("a portrait of {user}"));
    assert_eq!(gens[1]["state"], "cancelled");
    let kinds: Vec<&str> = archive["ledger"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["grant", "hold", "capture", "grant", "hold", "release"]
    );
    assert_eq!(archive["balance"]["available"], 10);
    assert_eq!(archive["payments"][0]["txn_id"], "txn-e");
    assert_eq!(archive["payments"][0]["credits"], 200);
    assert_eq!(archive["blobs"][0]["id"], src);
    assert!(!archive.to_string().contains("someone-else"));

    // The archive is itself user data: an export blob with its own expiry (7 days).
    let blob = env.blob(request.blob_id.unwrap()).await;
    assert_eq!(blob.role, BlobRole::Export);
    assert_eq!(blob.user_id, user);
    assert_eq!(blob.policy.as_deref(), Some("export"));
    let ttl = blob.expires_at.unwrap() - request.completed_at.unwrap();
    assert!((ttl.num_hours() - 7 * 24).abs() <= 1, "{ttl:?}");
    assert_eq!(request.expires_at, blob.expires_at);
    let _ = blobs::live_count(&env.db.pool, user).await.unwrap();
    env.assert_retention_clean().await;
}

#[sqlx::test(migrations = false)]
async fn erasure_cancels_a_generation_rendering_at_the_provider_first(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    use genq::credits::GenerationState;
    let env =
        crate::common::generation::GenEnv::new(TestDb::new(po, co).await, Duration::from_secs(60))
            .await;
    let user = "user-rendering";
    env.grant(user, 100).await;
    let rendering = env.request(user, "replicate", 10).await;
    let mut conn = env.db.pool.acquire().await.unwrap();
    blobs::register(
        &mut conn,
        user,
        BlobRole::Source,
        "local",
        "up/user-rendering/in.png",
        Some(rendering),
    )
    .await
    .unwrap();
    drop(conn);
    let _daemon = env.daemon_with_retention();
    wait_until(
        Duration::from_secs(20),
        "the generation to be at the provider",
        || async { env.generation(rendering).await.state == GenerationState::Submitted },
    )
    .await;

    let id = request_erasure(&env.db.pool, user).await;
    wait_erased(&env.db.pool, id, Duration::from_secs(30)).await;
    // Cancelled at the provider (hold released) before the records were de-identified.
    let g = env.generation(rendering).await;
    assert_eq!(g.state, GenerationState::Cancelled);
    assert_eq!(g.input, serde_json::json!({}));
    assert_eq!(env.entries(rendering).await, ["hold", "release"]);
    let subject = genq::retention::erasure::subject(HASH_KEY, user);
    assert_eq!(g.user_id, subject);
    let balance = env.balance(&subject).await;
    assert_eq!((balance.available, balance.held), (100, 0));
    env.assert_ledger_clean().await;
    assert_eq!(genq::retention::check(&env.db.pool).await.unwrap(), vec![]);
    let live: i64 = sqlx::query_scalar("SELECT count(*) FROM genq.blobs WHERE deleted_at IS NULL")
        .fetch_one(&env.db.pool)
        .await
        .unwrap();
    assert_eq!(live, 0);
}
