//! Retention faults, races between a registration and a delete of its key: the new
//! upload stays.

use super::*;

#[sqlx::test(migrations = false)]
async fn a_registration_racing_a_held_delete_of_its_key_waits_and_the_new_upload_stays(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let env = RetentionEnv::setup_without_periodic_sweep(po, co).await;
    let fake = FakeVercel::start(VERCEL_TOKEN)
        .await
        .expect("fake Vercel store");
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
    fake.wait_for_delete_requests(1, Duration::from_secs(10))
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
    let mut env = RetentionEnv::setup_without_periodic_sweep(po, co).await;
    // A lease that outlives the outage below by far: the wait must not depend on timing.
    env.config.worker.lease = Duration::from_secs(8);
    let fake = FakeVercel::start(VERCEL_TOKEN)
        .await
        .expect("fake Vercel store");
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
    fake.wait_for_delete_requests(1, Duration::from_secs(10))
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
    let env = RetentionEnv::setup_without_periodic_sweep(po, co).await;
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
