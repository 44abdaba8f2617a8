//! Retention against the fake Supabase store: failed and half-failed delete calls.

use super::*;

#[sqlx::test(migrations = false)]
async fn supabase_failed_second_request_leaves_its_blobs_due_until_the_retry(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let mut env = RetentionEnv::setup_without_periodic_sweep(po, co).await;
    // One job with more keys than one Supabase delete request takes (1000).
    env.config.retention.batch = 2000;
    let fake = FakeSupabase::start(SUPABASE_KEY)
        .await
        .expect("fake Supabase store");
    let keys: Vec<String> = (0..1050).map(|i| format!("refs/u3/{i:04}.jpg")).collect();
    for key in &keys {
        fake.insert(key, b"jpg");
    }
    let ids = env
        .register_many("u3", BlobRole::Reference, "supabase", &keys)
        .await;
    env.backdate_blobs(&ids, PAST_REFERENCE).await;
    // The job's second request fails with 503 and retry-after 1 s; the retry's request is
    // held until the test has looked.
    fake.fail_call(
        2,
        fake_supabase::Fault::Unavailable {
            retry_after_secs: Some(1),
        },
    );
    fake.fail_call(3, fake_supabase::Fault::Hold);

    let _daemon = env.daemon_with(vec![supabase(&fake)]);
    env.sweep_once().await;
    let jobs = env.delete_jobs().await;
    assert_eq!(jobs.len(), 1);
    let job_id = jobs[0].0.id;
    assert_eq!(jobs[0].1.blob_ids, ids);
    fake.wait_for_delete_calls(3, Duration::from_secs(10)).await;
    let calls = fake.delete_calls();
    assert_eq!((calls[0].len(), calls[1].len()), (1000, 50));
    let failed: BTreeSet<String> = calls[1].iter().cloned().collect();
    // The retry re-checks the rows and asks only for the blobs still live.
    assert_eq!(calls[2], calls[1]);

    // Between the attempts: the first request's blobs are deleted and logged; the second's
    // are live with the 503 recorded, and their objects are still in the bucket.
    let mut deleted_first = Vec::new();
    for b in env.blobs(&ids).await {
        if failed.contains(&b.key) {
            assert!(b.deleted_at.is_none(), "{b:?}");
            assert_eq!(b.attempts, 1, "{b:?}");
            let error = b.last_error.clone().unwrap_or_default();
            assert!(error.contains("503"), "{error}");
        } else {
            assert!(b.deleted_at.is_some(), "{b:?}");
            assert_eq!((b.attempts, b.last_error.as_deref()), (1, None), "{b:?}");
            deleted_first.push(b.id);
        }
    }
    assert_eq!(deleted_first.len(), 1000);
    assert_eq!(env.blob_log().await.len(), 1000);
    assert_eq!(fake.keys().into_iter().collect::<BTreeSet<_>>(), failed);
    let job = env.db.job(job_id).await;
    assert_eq!((job.state, job.attempt), (JobState::Running, 2));
    let errors = error_messages(&job);
    assert!(
        errors.len() == 1 && errors[0].contains("50 of 1050 blobs not deleted from supabase"),
        "{errors:?}"
    );
    let timing = env.retry_timing(job_id).await;
    assert!(
        (timing.delay_secs - 1.0).abs() < 0.001,
        "retry delay {timing:?}"
    );
    assert!(timing.claimed_after_run_at, "{timing:?}");

    fake.release();
    env.db
        .wait_for_state(job_id, JobState::Completed, Duration::from_secs(10))
        .await;
    for b in env.blobs(&ids).await {
        assert!(b.deleted_at.is_some(), "{b:?}");
        let attempts = if failed.contains(&b.key) { 2 } else { 1 };
        assert_eq!(
            (b.attempts, b.last_error.as_deref()),
            (attempts, None),
            "{b:?}"
        );
    }
    assert_logged_once(&env, &ids, "reference", job_id).await;
    assert_eq!(env.blob_log().await.len(), ids.len());
    assert!(fake.keys().is_empty(), "{} objects left", fake.keys().len());
    assert_eq!(fake.delete_calls().len(), 3);
    env.assert_retention_clean().await;
}

#[sqlx::test(migrations = false)]
async fn supabase_delete_failing_midway_is_retried_whole_and_logged_once(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let env = RetentionEnv::setup_without_periodic_sweep(po, co).await;
    let fake = FakeSupabase::start(SUPABASE_KEY)
        .await
        .expect("fake Supabase store");
    let keys: Vec<String> = (0..20).map(|i| format!("outputs/u3b/{i:02}.png")).collect();
    for key in &keys {
        fake.insert(key, b"png");
    }
    let ids = env
        .register_many("u3b", BlobRole::Output, "supabase", &keys)
        .await;
    env.backdate_blobs(&ids, PAST_ALL).await;
    // The store removes 8 of the 20 objects, then answers 500: the job cannot tell which.
    fake.fail_call(1, fake_supabase::Fault::PartialThen500 { removed: 8 });
    fake.fail_call(2, fake_supabase::Fault::Hold);

    let _daemon = env.daemon_with(vec![supabase(&fake)]);
    env.sweep_once().await;
    let job_id = env.delete_job_of(ids[0]).await.expect("scheduled");
    fake.wait_for_delete_calls(2, Duration::from_secs(10)).await;

    // Between the attempts every blob is still due (a failed request proves nothing), with
    // the 500 recorded; 8 objects are already gone from the bucket.
    let calls = fake.delete_calls();
    assert_eq!(calls[0], keys);
    assert_eq!(calls[1], keys, "the retry asks for every blob again");
    for b in env.blobs(&ids).await {
        assert!(b.deleted_at.is_none(), "{b:?}");
        assert_eq!(b.attempts, 1, "{b:?}");
        let error = b.last_error.clone().unwrap_or_default();
        assert!(error.contains("500"), "{error}");
    }
    assert!(env.blob_log().await.is_empty());
    assert_eq!(fake.keys(), keys[8..].to_vec());
    let job = env.db.job(job_id).await;
    assert_eq!((job.state, job.attempt), (JobState::Running, 2));
    let errors = error_messages(&job);
    assert!(
        errors.len() == 1 && errors[0].contains("20 of 20 blobs not deleted from supabase"),
        "{errors:?}"
    );

    fake.release();
    env.db
        .wait_for_state(job_id, JobState::Completed, Duration::from_secs(10))
        .await;
    for b in env.blobs(&ids).await {
        assert!(b.deleted_at.is_some(), "{b:?}");
        assert_eq!((b.attempts, b.last_error.as_deref()), (2, None), "{b:?}");
    }
    assert_logged_once(&env, &ids, "output", job_id).await;
    assert_eq!(env.blob_log().await.len(), ids.len());
    assert!(fake.keys().is_empty());
    env.assert_retention_clean().await;
}
