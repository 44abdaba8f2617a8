//! Retention against the fake Vercel Blob store: rate limits honoured, objects already
//! gone counted as deleted.

use super::*;

#[sqlx::test(migrations = false)]
async fn vercel_rate_limit_delays_the_retry_by_retry_after_and_only_due_blobs_go(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let env = RetentionEnv::setup_without_periodic_sweep(po, co).await;
    let fake = FakeVercel::start(VERCEL_TOKEN)
        .await
        .expect("fake Vercel store");
    let due_keys = strings(&["refs/u1/a.png", "refs/u1/b.png"]);
    let mut due = Vec::new();
    for key in &due_keys {
        fake.insert(key, b"png");
        let id = env
            .register("u1", BlobRole::Reference, "vercel", key, None)
            .await;
        env.backdate_blob(id, PAST_REFERENCE).await;
        due.push(id);
    }
    fake.insert("refs/u1/fresh.png", b"png");
    let fresh = env
        .register(
            "u1",
            BlobRole::Reference,
            "vercel",
            "refs/u1/fresh.png",
            None,
        )
        .await;

    // The first delete is rate limited for 1 s; the retry is held in the fake until the
    // test has looked at the state between the attempts.
    fake.fail_next(fake_vercel::Fault::RateLimited {
        retry_after_secs: 1,
    });
    fake.fail_next(fake_vercel::Fault::Hold);
    let _daemon = env.daemon_with(vec![vercel(&fake)]);
    env.sweep_once().await;
    let job_id = env.delete_job_of(due[0]).await.expect("scheduled");
    assert_eq!(env.delete_job_of(due[1]).await, Some(job_id));
    assert_eq!(
        env.delete_job_of(fresh).await,
        None,
        "not due: not scheduled"
    );
    fake.wait_for_delete_requests(2, Duration::from_secs(10))
        .await;

    // Between the attempts: nothing deleted, the rate limit recorded on each due blob.
    for b in env.blobs(&due).await {
        assert!(b.deleted_at.is_none(), "{b:?}");
        assert_eq!(b.attempts, 1, "{b:?}");
        let error = b.last_error.clone().unwrap_or_default();
        assert!(
            error.contains("429") && error.contains("rate_limited"),
            "{error}"
        );
        assert!(env.log_for_blob(b.id).await.is_empty());
    }
    assert_eq!(fake.pathnames().len(), 3, "every object still there");
    let job = env.db.job(job_id).await;
    assert_eq!((job.state, job.attempt), (JobState::Running, 2));
    let errors = error_messages(&job);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].contains("2 of 2 blobs not deleted from vercel")
            && errors[0].contains("rate_limited"),
        "{}",
        errors[0]
    );
    // The retry was scheduled for the store's Retry-After (not the 50 ms backoff), and the
    // second attempt was not claimed before it.
    let timing = env.retry_timing(job_id).await;
    assert!(
        (timing.delay_secs - 1.0).abs() < 0.001,
        "retry delay {timing:?}"
    );
    assert!(timing.claimed_after_run_at, "{timing:?}");

    fake.release();
    let job = env
        .db
        .wait_for_state(job_id, JobState::Completed, Duration::from_secs(10))
        .await;
    assert_eq!((job.attempt, error_messages(&job).len()), (2, 1));
    for b in env.blobs(&due).await {
        assert!(b.deleted_at.is_some(), "{b:?}");
        assert_eq!((b.attempts, b.last_error.as_deref()), (2, None), "{b:?}");
    }
    assert_logged_once(&env, &due, "reference", job_id).await;
    assert_eq!(
        fake.deletes(),
        vec![due_keys.clone(), due_keys.clone()],
        "only the due keys were ever sent, twice"
    );
    assert_eq!(fake.pathnames(), vec!["refs/u1/fresh.png".to_string()]);

    // The blob that is not due is untouched, and a later sweep schedules nothing.
    let f = env.blob(fresh).await;
    assert!(f.deleted_at.is_none() && f.expires_at.unwrap() > chrono::Utc::now());
    assert_eq!((f.attempts, f.last_error), (0, None));
    assert!(env.log_for_blob(fresh).await.is_empty());
    env.sweep().await;
    assert_eq!(env.delete_jobs().await.len(), 1);
    assert_eq!(env.blob_log().await.len(), 2);
    env.assert_retention_clean().await;
}

#[sqlx::test(migrations = false)]
async fn vercel_objects_already_gone_count_as_deleted_and_are_logged(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let env = RetentionEnv::setup_without_periodic_sweep(po, co).await;
    let fake = FakeVercel::start(VERCEL_TOKEN)
        .await
        .expect("fake Vercel store");
    fake.insert("outputs/u2/g1/0.mp4", b"mp4");
    fake.insert("exports/u2/archive.json", b"{}");
    fake.insert("outputs/u2/g1/1.mp4", b"mp4");
    // A key may be the blob's full URL (what the backend got from the upload).
    let by_url = fake.public_url("outputs/u2/g1/1.mp4");
    let blobs = [
        // Uploaded, then deleted out of band (by the product, or by hand).
        ("outputs/u2/g1/0.mp4", BlobRole::Output, "output"),
        // Registered before uploading, and the upload never happened.
        (
            "refs/u2/never-uploaded.png",
            BlobRole::Reference,
            "reference",
        ),
        // Still there.
        ("exports/u2/archive.json", BlobRole::Export, "export"),
        (by_url.as_str(), BlobRole::Output, "output"),
    ];
    let mut ids = Vec::new();
    for (key, role, _) in blobs {
        let id = env.register("u2", role, "vercel", key, None).await;
        env.backdate_blob(id, PAST_ALL).await;
        ids.push(id);
    }
    assert!(fake.remove("outputs/u2/g1/0.mp4"));

    let _daemon = env.daemon_with(vec![vercel(&fake)]);
    env.sweep().await;

    let jobs = env.delete_jobs().await;
    assert_eq!(jobs.len(), 1);
    let (job, args) = &jobs[0];
    assert_eq!((job.state, job.attempt), (JobState::Completed, 1));
    assert!(error_messages(job).is_empty(), "{:?}", job.errors);
    assert_eq!(args.store, "vercel");
    for (&id, (key, _, policy)) in ids.iter().zip(blobs) {
        let b = env.blob(id).await;
        assert!(b.deleted_at.is_some(), "{key}: {b:?}");
        assert_eq!((b.attempts, b.last_error.as_deref()), (1, None), "{key}");
        assert_logged_once(&env, &[id], policy, job.id).await;
    }
    let log = env.blob_log().await;
    assert_eq!(log.len(), 4);
    assert!(log.iter().any(|r| r.key == by_url && r.store == "vercel"));
    assert_eq!(
        fake.deletes(),
        vec![blobs
            .iter()
            .map(|(k, _, _)| k.to_string())
            .collect::<Vec<_>>()],
        "one request with every key, gone or not"
    );
    assert!(fake.pathnames().is_empty(), "{:?}", fake.pathnames());
    env.assert_retention_clean().await;
}
