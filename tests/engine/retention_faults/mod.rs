//! Scenarios: retention under faults. A daemon killed while a store delete is in flight, the
//! database connections lost during a delete and during an account erasure, and a
//! registration of a key racing the held delete of its previous blob. The store is a fake
//! Vercel Blob that holds a delete request until the test releases it, so each fault hits
//! the moment it is meant to; Postgres is reached through a proxy the test cuts. Every
//! scenario ends with the privacy invariants (`genq.check_retention()`) and the money
//! invariants (`genq.check_ledger()`) clean.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use genq::retention::BlobRole;
use genq::storage::stream_from_bytes;
use genq::JobState;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::common::retention::{RetentionEnv, HASH_KEY};
use crate::common::retention_faults::{vercel_store, VERCEL_TOKEN};
use crate::common::{wait_until, TestDb};
use genq::dev::fake_stores::vercel::{FakeVercel, Fault};

const DAY: u64 = 24 * 3600;
/// Past the reference policy (7 days).
const PAST_REFERENCE: Duration = Duration::from_secs(8 * DAY);

/// The fixture, with the periodic sweep out of the way: only the sweeps a test runs happen.
async fn env(po: PgPoolOptions, co: PgConnectOptions) -> RetentionEnv {
    let mut env = RetentionEnv::new(TestDb::new(po, co).await).await;
    env.config.retention.interval = Duration::from_secs(100 * 365 * DAY);
    env
}

/// Due references of `user` in the fake Vercel store (stored and registered, back-dated past
/// their policy), and one that is not due. Returns (due ids, due keys, fresh id, fresh key).
async fn vercel_references(
    env: &RetentionEnv,
    fake: &FakeVercel,
    user: &str,
    n: usize,
) -> (Vec<i64>, Vec<String>, i64, String) {
    let keys: Vec<String> = (0..n).map(|i| format!("refs/{user}/{i}.png")).collect();
    let mut ids = Vec::new();
    for key in &keys {
        fake.insert(key, b"png");
        let id = env
            .register(user, BlobRole::Reference, "vercel", key, None)
            .await;
        env.backdate_blob(id, PAST_REFERENCE).await;
        ids.push(id);
    }
    let fresh = format!("refs/{user}/fresh.png");
    fake.insert(&fresh, b"png");
    let fresh_id = env
        .register(user, BlobRole::Reference, "vercel", &fresh, None)
        .await;
    (ids, keys, fresh_id, fresh)
}

/// Each blob of `ids` is deleted and has exactly one deletion-log row: `deleted`, under
/// `policy`, by job `job`.
async fn assert_deleted_once(env: &RetentionEnv, ids: &[i64], policy: &str, job: i64) {
    let log = env.blob_log().await;
    for b in env.blobs(ids).await {
        assert!(b.deleted_at.is_some(), "{b:?}");
        let rows: Vec<_> = log.iter().filter(|r| r.blob_id == b.id).collect();
        assert_eq!(rows.len(), 1, "blob {}: {rows:?}", b.id);
        assert_eq!(
            (
                rows[0].outcome.as_str(),
                rows[0].policy.as_str(),
                rows[0].job_id
            ),
            ("deleted", policy, Some(job)),
            "blob {}",
            b.id
        );
    }
}

/// The fresh (not due) blob is untouched: live, unscheduled, never attempted, still stored.
async fn assert_untouched(env: &RetentionEnv, fake: &FakeVercel, id: i64, key: &str) {
    let b = env.blob(id).await;
    assert!(b.deleted_at.is_none(), "{b:?}");
    assert!(b.expires_at.unwrap() > chrono::Utc::now(), "{b:?}");
    assert_eq!((b.attempts, b.last_error.as_deref()), (0, None), "{b:?}");
    assert_eq!(env.delete_job_of(id).await, None);
    assert!(env.log_for_blob(id).await.is_empty());
    assert!(fake.blob(key).is_some(), "{key} still stored");
}

fn error_messages(job: &genq::queue::job_control::JobRow) -> Vec<String> {
    job.errors
        .as_array()
        .expect("errors is an array")
        .iter()
        .map(|e| e["error"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// A later sweep schedules nothing more: one delete job in all, one log row per due blob,
/// and the blob that was not due is untouched.
async fn assert_nothing_left_to_do(
    env: &RetentionEnv,
    fake: &FakeVercel,
    due: usize,
    fresh: i64,
    fresh_key: &str,
) {
    env.sweep().await;
    assert_eq!(env.delete_jobs().await.len(), 1);
    assert_eq!(env.blob_log().await.len(), due);
    assert_untouched(env, fake, fresh, fresh_key).await;
}

#[sqlx::test(migrations = false)]
async fn a_daemon_killed_mid_delete_is_rescued_and_each_blob_is_deleted_once(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let env = env(po, co).await;
    let fake = FakeVercel::start(VERCEL_TOKEN).await;
    let (due, due_keys, fresh, fresh_key) = vercel_references(&env, &fake, "u1", 3).await;

    // The real binary deletes the batch; the store holds its request.
    fake.fail_next(Fault::Hold);
    let mut doomed = env.binary_with_vercel(&fake).await;
    let doomed_pid = doomed.child.id();
    env.sweep_once().await;
    let job_id = env.delete_job_of(due[0]).await.expect("scheduled");
    for id in &due {
        assert_eq!(env.delete_job_of(*id).await, Some(job_id), "one batch");
    }
    wait_until(
        Duration::from_secs(10),
        "the delete request to reach the store",
        || async { fake.deletes().len() == 1 },
    )
    .await;
    assert_eq!(fake.deletes()[0], due_keys);
    let job = env.db.job(job_id).await;
    assert_eq!((job.state, job.attempt), (JobState::Running, 1));
    assert!(
        !env.blobs_unlocked(&due).await,
        "the delete holds the rows' locks across the store call"
    );

    // The daemon dies without draining: no hand-back, no outcome, the lease left to expire.
    doomed.kill9().await;
    wait_until(
        Duration::from_secs(10),
        "Postgres to end the dead daemon's transaction",
        || async { env.blobs_unlocked(&due).await },
    )
    .await;
    // Nothing was recorded or deleted by the dead attempt.
    for b in env.blobs(&due).await {
        assert!(b.deleted_at.is_none(), "{b:?}");
        assert_eq!((b.attempts, b.last_error.as_deref()), (0, None), "{b:?}");
    }
    assert!(env.blob_log().await.is_empty());
    assert_eq!(fake.pathnames().len(), 4, "every object still stored");

    // A second daemon rescues the job once the lease expires and deletes the batch.
    let survivor = env.daemon_with(vec![vercel_store(&fake)]);
    let job = env
        .db
        .wait_for_state(job_id, JobState::Completed, Duration::from_secs(10))
        .await;
    let errors = error_messages(&job);
    assert_eq!(job.attempt, 2, "the lost attempt was spent: {errors:?}");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("lease expired") && errors[0].contains(&format!("-{doomed_pid}-")),
        "the killed daemon's attempt: {}",
        errors[0]
    );
    assert_deleted_once(&env, &due, "reference", job_id).await;
    for b in env.blobs(&due).await {
        assert_eq!((b.attempts, b.last_error.as_deref()), (1, None), "{b:?}");
    }
    assert_eq!(
        fake.deletes(),
        vec![due_keys.clone(), due_keys.clone()],
        "the interrupted request and the rescued one, with the due keys only"
    );
    assert_eq!(fake.pathnames(), vec![fresh_key.clone()]);

    // Even if the store finishes the dead daemon's request now, nothing else goes; a later
    // sweep finds nothing to do.
    fake.release();
    assert_nothing_left_to_do(&env, &fake, due.len(), fresh, &fresh_key).await;
    survivor.shutdown().await;
    env.assert_retention_clean().await;
    env.assert_ledger_clean().await;
}

#[sqlx::test(migrations = false)]
async fn lost_database_connections_during_a_delete_still_delete_each_blob_once(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let env = env(po, co).await;
    let fake = FakeVercel::start(VERCEL_TOKEN).await;
    let (due, due_keys, fresh, fresh_key) = vercel_references(&env, &fake, "u2", 3).await;
    let (proxy, via_proxy) = env.pg_proxy().await;

    fake.fail_next(Fault::Hold);
    let daemon = env.daemon_via(via_proxy, vec![vercel_store(&fake)]);
    env.sweep_once().await;
    let job_id = env.delete_job_of(due[0]).await.expect("scheduled");
    wait_until(
        Duration::from_secs(10),
        "the delete request to reach the store",
        || async { fake.deletes().len() == 1 },
    )
    .await;
    assert!(!env.blobs_unlocked(&due).await);

    // Postgres goes away while the store call is in flight: the delete's transaction dies
    // with its connection (its row locks with it); nothing is recorded.
    proxy.cut();
    wait_until(
        Duration::from_secs(10),
        "Postgres to drop the daemon's sessions",
        || async { env.daemon_sessions().await == 0 },
    )
    .await;
    assert!(env.blobs_unlocked(&due).await);
    for b in env.blobs(&due).await {
        assert!(b.deleted_at.is_none(), "{b:?}");
    }

    // It comes back; the store then answers the request the daemon sent before the outage.
    proxy.restore();
    wait_until(
        Duration::from_secs(10),
        "the daemon to reconnect",
        || async { env.daemon_sessions().await > 0 },
    )
    .await;
    fake.release();
    let job = env
        .db
        .wait_for_state(job_id, JobState::Completed, Duration::from_secs(15))
        .await;
    // The attempt that lost its connection was interrupted (handed back, run again), not
    // failed: no error recorded, no failure counted.
    assert!(job.attempt >= 2, "{job:?}");
    assert_eq!(
        (job.failures, error_messages(&job)),
        (0, Vec::new()),
        "{job:?}"
    );
    assert_deleted_once(&env, &due, "reference", job_id).await;
    let deletes = fake.deletes();
    assert!(deletes.len() >= 2, "{deletes:?}");
    assert!(
        deletes.iter().all(|urls| *urls == due_keys),
        "only the due keys were ever sent: {deletes:?}"
    );
    assert_eq!(fake.pathnames(), vec![fresh_key.clone()]);

    assert_nothing_left_to_do(&env, &fake, due.len(), fresh, &fresh_key).await;
    daemon.shutdown().await;
    env.assert_retention_clean().await;
    env.assert_ledger_clean().await;
}

#[sqlx::test(migrations = false)]
async fn lost_database_connections_during_an_erasure_still_complete_it(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let env = env(po, co).await;
    let fake = FakeVercel::start(VERCEL_TOKEN).await;
    let user = "user-cut-9";
    // History: a succeeded generation with its source (local) and output (Vercel), a
    // reference (Vercel), a generation still queued (credits held), a provider callback.
    let g1 = env.generation(user).await;
    let source = env
        .upload(
            user,
            BlobRole::Source,
            &format!("up/{user}/src.png"),
            Some(g1),
        )
        .await;
    env.succeed(g1).await;
    let output_key = format!("outputs/{user}/{g1}/0.png");
    let reference_key = format!("refs/{user}/style.png");
    fake.insert(&output_key, b"png");
    fake.insert(&reference_key, b"png");
    let output = env
        .register(user, BlobRole::Output, "vercel", &output_key, Some(g1))
        .await;
    let reference = env
        .register(user, BlobRole::Reference, "vercel", &reference_key, None)
        .await;
    let g2 = env.generation(user).await;
    sqlx::query(
        "INSERT INTO genq.webhook_events (provider, dedupe_key, request_id, body, generation_id)
         VALUES ('fal', 'r1:OK', NULL, convert_to('{\"prompt\":\"user-cut-9 portrait\"}', 'UTF8'), $1)",
    )
    .bind(g1)
    .execute(&env.db.pool)
    .await
    .unwrap();
    // Someone else's upload in the same store, not due.
    fake.insert("refs/bystander/keep.png", b"png");
    let kept = env
        .register(
            "bystander",
            BlobRole::Reference,
            "vercel",
            "refs/bystander/keep.png",
            None,
        )
        .await;
    assert!(env.rows_naming(user).await > 0);

    let (proxy, via_proxy) = env.pg_proxy().await;
    fake.fail_next(Fault::Hold);
    let daemon = env.daemon_via(via_proxy, vec![vercel_store(&fake)]);
    let request = crate::common::retention::request_erasure(&env.db.pool, user).await;
    wait_until(
        Duration::from_secs(10),
        "the erasure's Vercel delete to reach the store",
        || async { fake.deletes().len() == 1 },
    )
    .await;
    let vercel_job = env.delete_job_of(output).await.expect("scheduled");
    assert_eq!(env.delete_job_of(reference).await, Some(vercel_job));

    // Postgres goes away mid-erasure, long enough for the delete's lease to run out.
    proxy.cut();
    wait_until(
        Duration::from_secs(10),
        "Postgres to drop the daemon's sessions",
        || async { env.daemon_sessions().await == 0 },
    )
    .await;
    env.wait_lease_expired(vercel_job, Duration::from_secs(10))
        .await;
    let pending = genq::retention::erasure::get(&env.db.pool, request)
        .await
        .unwrap()
        .unwrap();
    assert!(pending.completed_at.is_none());
    assert!(env.blob(output).await.deleted_at.is_none());

    proxy.restore();
    fake.release();
    let done =
        crate::common::retention::wait_erased(&env.db.pool, request, Duration::from_secs(20)).await;
    let subject = genq::retention::erasure::subject(HASH_KEY, user);
    assert_eq!(done.subject.as_deref(), Some(subject.as_str()));
    assert!(done.user_id.is_none());

    // Every blob of the user deleted once, from both stores; nothing names the user.
    assert_eq!(env.rows_naming(user).await, 0);
    for id in [source, output, reference] {
        let b = env.blob(id).await;
        assert!(b.deleted_at.is_some(), "{b:?}");
        assert_eq!(b.user_id, subject);
        let log = env.log_for_blob(id).await;
        assert_eq!(log.len(), 1, "blob {id}: {log:?}");
        assert_eq!(log[0].0, "deleted", "blob {id}");
    }
    assert!(!env.local_exists(&format!("up/{user}/src.png")));
    assert_eq!(
        fake.pathnames(),
        vec!["refs/bystander/keep.png".to_string()]
    );
    let job = env.db.job(vercel_job).await;
    assert_eq!(job.state, JobState::Completed);
    assert!(job.attempt >= 2, "{:?}", job.errors);
    assert!(env.blob(kept).await.deleted_at.is_none());

    // Money: the queued generation was cancelled (hold released) and the balance moved to
    // the pseudonym unchanged.
    let g2_state: String =
        sqlx::query_scalar("SELECT state::text FROM genq.generations WHERE id = $1")
            .bind(g2)
            .fetch_one(&env.db.pool)
            .await
            .unwrap();
    assert_eq!(g2_state, "cancelled");
    let balance: (i64, i64) =
        sqlx::query_as("SELECT available, held FROM genq.accounts WHERE user_id = $1")
            .bind(&subject)
            .fetch_one(&env.db.pool)
            .await
            .unwrap();
    assert_eq!(balance, (10, 0), "20 granted, 10 captured, 10 released");
    daemon.shutdown().await;
    env.assert_retention_clean().await;
    env.assert_ledger_clean().await;
}

#[sqlx::test(migrations = false)]
async fn a_registration_racing_a_held_delete_of_its_key_waits_and_the_new_upload_stays(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let env = env(po, co).await;
    let fake = FakeVercel::start(VERCEL_TOKEN).await;
    let key = "refs/u3/avatar.png";
    fake.insert(key, b"old avatar");
    let old = env
        .register("u3", BlobRole::Reference, "vercel", key, None)
        .await;
    env.backdate_blob(old, PAST_REFERENCE).await;

    fake.fail_next(Fault::Hold);
    let daemon = env.daemon_with(vec![vercel_store(&fake)]);
    env.sweep_once().await;
    let job_id = env.delete_job_of(old).await.expect("scheduled");
    wait_until(
        Duration::from_secs(10),
        "the delete request to reach the store",
        || async { fake.deletes().len() == 1 },
    )
    .await;

    // The backend registers the key again (before uploading, as it must): the call waits
    // for the delete of the old object.
    let pool = env.db.pool.clone();
    let register = tokio::spawn(async move {
        sqlx::query_scalar::<_, i64>("SELECT genq.register_blob('u3', 'reference', 'vercel', $1)")
            .bind(key)
            .fetch_one(&pool)
            .await
    });
    wait_until(
        Duration::from_secs(10),
        "register_blob to wait for the delete",
        || async { env.waiting_in("genq.register_blob").await == 1 },
    )
    .await;
    assert!(
        !register.is_finished(),
        "register_blob returned while the delete was in flight"
    );
    assert!(env.blob(old).await.deleted_at.is_none());
    assert_eq!(
        fake.blob(key).unwrap().bytes,
        b"old avatar",
        "old object still there"
    );

    fake.release();
    let new = register.await.unwrap().expect("register_blob");
    assert_ne!(new, old);
    env.db
        .wait_for_state(job_id, JobState::Completed, Duration::from_secs(10))
        .await;
    let a = env.blob(old).await;
    assert!(a.deleted_at.is_some(), "{a:?}");
    let log = env.log_for_blob(old).await;
    assert_eq!(log.len(), 1, "{log:?}");
    assert!(
        ["deleted", "superseded"].contains(&log[0].0.as_str()),
        "{log:?}"
    );
    let b = env.blob(new).await;
    assert!(b.deleted_at.is_none(), "{b:?}");
    assert!(b.expires_at.unwrap() > chrono::Utc::now(), "{b:?}");
    assert_eq!((b.attempts, b.key.as_str()), (0, key));

    // The backend uploads the new object under the key: it stays.
    let stored = vercel_store(&fake)
        .put(
            key,
            stream_from_bytes(&b"new avatar"[..]),
            Some("image/png"),
        )
        .await
        .unwrap();
    assert_eq!(stored.key, key);
    env.sweep().await;
    assert_eq!(fake.blob(key).unwrap().bytes, b"new avatar");
    assert_eq!(
        fake.deletes(),
        vec![vec![key.to_string()]],
        "one delete, ever"
    );
    assert_eq!(env.delete_jobs().await.len(), 1);
    let b = env.blob(new).await;
    assert!(b.deleted_at.is_none() && b.attempts == 0, "{b:?}");
    assert!(env.log_for_blob(new).await.is_empty());
    daemon.shutdown().await;
    env.assert_retention_clean().await;
    env.assert_ledger_clean().await;
}

#[sqlx::test(migrations = false)]
async fn a_registration_during_lost_connections_of_a_held_delete_waits_and_the_new_upload_stays(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let mut env = env(po, co).await;
    // A lease that outlives the outage below by far: the wait must not depend on timing.
    env.config.worker.lease = Duration::from_secs(8);
    let fake = FakeVercel::start(VERCEL_TOKEN).await;
    let key = "refs/u4/avatar.png";
    fake.insert(key, b"old avatar");
    let old = env
        .register("u4", BlobRole::Reference, "vercel", key, None)
        .await;
    env.backdate_blob(old, PAST_REFERENCE).await;
    let (proxy, via_proxy) = env.pg_proxy().await;

    fake.fail_next(Fault::Hold);
    let daemon = env.daemon_via(via_proxy, vec![vercel_store(&fake)]);
    env.sweep_once().await;
    let job_id = env.delete_job_of(old).await.expect("scheduled");
    wait_until(
        Duration::from_secs(10),
        "the delete request to reach the store",
        || async { fake.deletes().len() == 1 },
    )
    .await;

    // The daemon loses Postgres while its store call is in flight: the old row's lock goes
    // with the connection, but the request is still on its way to the store.
    proxy.cut();
    wait_until(
        Duration::from_secs(10),
        "Postgres to drop the daemon's sessions",
        || async { env.daemon_sessions().await == 0 },
    )
    .await;
    assert!(env.blobs_unlocked(&[old]).await);

    // Meanwhile the backend replaces the object: it registers the key again, then uploads.
    let registered = Arc::new(AtomicBool::new(false));
    let backend = {
        let (pool, store, registered) =
            (env.db.pool.clone(), vercel_store(&fake), registered.clone());
        tokio::spawn(async move {
            let id: i64 =
                sqlx::query_scalar("SELECT genq.register_blob('u4', 'reference', 'vercel', $1)")
                    .bind(key)
                    .fetch_one(&pool)
                    .await
                    .expect("register_blob");
            registered.store(true, Ordering::SeqCst);
            store
                .put(
                    key,
                    stream_from_bytes(&b"new avatar"[..]),
                    Some("image/png"),
                )
                .await
                .expect("upload");
            id
        })
    };
    wait_until(
        Duration::from_secs(10),
        "register_blob to wait for the delete in flight (or return)",
        || async {
            env.waiting_in("genq.register_blob").await == 1 || registered.load(Ordering::SeqCst)
        },
    )
    .await;
    assert!(
        !registered.load(Ordering::SeqCst),
        "register_blob returned while the old object's delete was in flight"
    );

    // The store carries out the request it got before the outage; the registration still
    // waits (the job still holds its lease) until the database is back and the job ends.
    fake.release();
    wait_until(
        Duration::from_secs(10),
        "the store to delete the old object",
        || async { fake.blob(key).is_none() },
    )
    .await;
    assert!(!registered.load(Ordering::SeqCst));
    proxy.restore();
    let new = backend.await.unwrap();
    assert_ne!(new, old);
    env.db
        .wait_for_state(job_id, JobState::Completed, Duration::from_secs(15))
        .await;
    env.sweep().await;

    // The new upload stays; the old blob is closed once; the new one was never touched.
    assert_eq!(
        fake.blob(key).map(|b| b.bytes),
        Some(b"new avatar".to_vec()),
        "the new upload is stored"
    );
    // The retried attempt may have asked the store again before the registration took the
    // key over (the object was gone, the new one not yet uploaded): only ever this key.
    let deletes = fake.deletes();
    assert!(
        deletes.iter().all(|urls| *urls == vec![key.to_string()]),
        "{deletes:?}"
    );
    let a = env.blob(old).await;
    assert!(a.deleted_at.is_some(), "{a:?}");
    let log = env.log_for_blob(old).await;
    assert_eq!(log.len(), 1, "{log:?}");
    assert!(
        ["deleted", "superseded"].contains(&log[0].0.as_str()),
        "{log:?}"
    );
    let b = env.blob(new).await;
    assert!(b.deleted_at.is_none() && b.attempts == 0, "{b:?}");
    assert!(b.expires_at.unwrap() > chrono::Utc::now(), "{b:?}");
    assert!(env.log_for_blob(new).await.is_empty());
    daemon.shutdown().await;
    env.assert_retention_clean().await;
    env.assert_ledger_clean().await;
}

#[sqlx::test(migrations = false)]
async fn a_registration_does_not_wait_for_a_delete_blocked_by_its_own_transaction(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let env = env(po, co).await;
    let keys = ["ref/u5/1.png", "ref/u5/2.png"];
    let mut old = Vec::new();
    for key in keys {
        let id = env.upload("u5", BlobRole::Reference, key, None).await;
        env.backdate_blob(id, PAST_REFERENCE).await;
        old.push(id);
    }
    // One delete job for both, scheduled before any daemon runs.
    let scheduled = genq::retention::blobs::schedule_deletions(&env.db.pool, None, 100, 1000)
        .await
        .unwrap();
    assert_eq!((scheduled.jobs, scheduled.blobs), (1, 2));
    let job_id = env.delete_job_of(old[0]).await.unwrap();

    // The backend takes the first key over in its transaction (holding the old row), and
    // the delete job then blocks on that row.
    let mut tx = env.db.pool.begin().await.unwrap();
    let first: i64 =
        sqlx::query_scalar("SELECT genq.register_blob('u5', 'reference', 'local', $1)")
            .bind(keys[0])
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    let daemon = env.daemon();
    wait_until(
        Duration::from_secs(10),
        "the delete job to wait for the backend's row",
        || async {
            env.waiting_in("SELECT id, user_id, role, key FROM genq.blobs")
                .await
                == 1
        },
    )
    .await;
    assert_eq!(env.db.job(job_id).await.state, JobState::Running);

    // Taking the second key over in the same transaction must not wait for that job (it
    // waits for this transaction): it returns at once.
    let second: i64 = tokio::time::timeout(
        Duration::from_secs(5),
        sqlx::query_scalar("SELECT genq.register_blob('u5', 'reference', 'local', $1)")
            .bind(keys[1])
            .fetch_one(&mut *tx),
    )
    .await
    .expect("register_blob waited for a job blocked by its own transaction")
    .unwrap();
    tx.commit().await.unwrap();
    for key in keys {
        env.put_local(key, b"new upload");
    }
    env.db
        .wait_for_state(job_id, JobState::Completed, Duration::from_secs(10))
        .await;
    env.sweep().await;

    for id in &old {
        let log = env.log_for_blob(*id).await;
        assert_eq!(
            log,
            vec![("superseded".to_string(), "reference".to_string())]
        );
    }
    for (id, key) in [first, second].into_iter().zip(keys) {
        let b = env.blob(id).await;
        assert!(b.deleted_at.is_none() && b.attempts == 0, "{b:?}");
        assert!(env.local_exists(key), "{key}");
    }
    daemon.shutdown().await;
    env.assert_retention_clean().await;
    env.assert_ledger_clean().await;
}
