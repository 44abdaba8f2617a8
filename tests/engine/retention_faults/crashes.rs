//! Retention faults, crashes and lost connections: a daemon killed mid-delete, and lost
//! database connections during deletes and erasures; each blob is deleted once.

use super::*;

#[sqlx::test(migrations = false)]
async fn a_daemon_killed_mid_delete_is_rescued_and_each_blob_is_deleted_once(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let env = RetentionEnv::setup_without_periodic_sweep(po, co).await;
    let fake = FakeVercel::start(VERCEL_TOKEN)
        .await
        .expect("fake Vercel store");
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
    fake.wait_for_delete_requests(1, Duration::from_secs(10))
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
    let env = RetentionEnv::setup_without_periodic_sweep(po, co).await;
    let fake = FakeVercel::start(VERCEL_TOKEN)
        .await
        .expect("fake Vercel store");
    let (due, due_keys, fresh, fresh_key) = vercel_references(&env, &fake, "u2", 3).await;
    let (proxy, via_proxy) = env.pg_proxy().await;

    fake.fail_next(Fault::Hold);
    let daemon = env.daemon_via(via_proxy, vec![vercel_store(&fake)]);
    env.sweep_once().await;
    let job_id = env.delete_job_of(due[0]).await.expect("scheduled");
    fake.wait_for_delete_requests(1, Duration::from_secs(10))
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
    let env = RetentionEnv::setup_without_periodic_sweep(po, co).await;
    let fake = FakeVercel::start(VERCEL_TOKEN)
        .await
        .expect("fake Vercel store");
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
    fake.wait_for_delete_requests(1, Duration::from_secs(10))
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
