//! Retention policies, user deletion, the sweep racing new uploads, account erasure and
//! data export, against a real Postgres and a local store in a temp dir. Rows are
//! back-dated instead of waiting: a policy's window has passed when the row says so.

use std::time::Duration;

use genq::retention::{backlog, blobs, BlobRole};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use uuid::Uuid;

use crate::common::retention::{
    request_erasure, request_export, wait_erased, wait_exported, RetentionEnv, HASH_KEY,
};
use crate::common::{wait_until, TestDb};

const HOUR: u64 = 3600;
const DAY: u64 = 24 * HOUR;

fn h(n: u64) -> Duration {
    Duration::from_secs(n * HOUR)
}
fn d(n: u64) -> Duration {
    Duration::from_secs(n * DAY)
}

async fn env(po: PgPoolOptions, co: PgConnectOptions) -> RetentionEnv {
    RetentionEnv::new(TestDb::new(po, co).await).await
}

async fn scalar_i64(env: &RetentionEnv, sql: &str) -> i64 {
    sqlx::query_scalar(sql)
        .fetch_one(&env.db.pool)
        .await
        .unwrap()
}

#[sqlx::test(migrations = false)]
async fn each_policy_deletes_exactly_what_is_due(po: PgPoolOptions, co: PgConnectOptions) {
    let env = env(po, co).await;
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
    let mut env = env(po, co).await;
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
    let _daemon = env.daemon();
    env.sweep().await;
    assert!(env.blob(out).await.deleted_at.is_none());
    assert!(env.local_exists("out/u1/1.mp4"));

    // Back to 30 days: the output registered 40 days ago is due again, and deleted.
    env.config.retention.output_after = Some(d(30));
    let redated = genq::retention::apply_policies(&env.db.pool, &env.config.retention)
        .await
        .unwrap();
    assert_eq!(redated, 1);
    env.sweep().await;
    assert!(env.blob(out).await.deleted_at.is_some());
    assert!(!env.local_exists("out/u1/1.mp4"));
    env.assert_retention_clean().await;
}

#[sqlx::test(migrations = false)]
async fn register_blob_refuses_bad_input_clearly(po: PgPoolOptions, co: PgConnectOptions) {
    let env = env(po, co).await;
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
    let mut env = env(po, co).await;
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
async fn delete_generation_scrubs_now_and_deletes_its_blobs(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let env = env(po, co).await;
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
async fn backlog_counts_due_and_overdue_until_the_sweep_runs(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let env = env(po, co).await;
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

#[sqlx::test(migrations = false)]
async fn erasure_deletes_data_and_deidentifies_money_records(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let env = env(po, co).await;
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
    let env = env(po, co).await;
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
    let env = env(po, co).await;
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
    let env = env(po, co).await;
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
