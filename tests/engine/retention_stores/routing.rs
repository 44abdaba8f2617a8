//! Retention across stores: blobs of a store the daemon lacks stay due, and a large
//! backlog is split per store and batch.

use super::*;

#[sqlx::test(migrations = false)]
async fn a_store_the_daemon_lacks_keeps_its_blobs_due_until_a_daemon_with_it_deletes_them(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let env = RetentionEnv::setup_without_periodic_sweep(po, co).await;
    let fake = FakeSupabase::start(SUPABASE_KEY)
        .await
        .expect("fake Supabase store");
    // Neither [storage.s3] (no bucket) nor [storage.supabase] (no URL) is configured.
    let s3_keys = strings(&["outputs/u4/0.mp4", "outputs/u4/1.mp4"]);
    let sb_keys = strings(&["refs/u4/a.jpg", "refs/u4/b.jpg"]);
    for key in &sb_keys {
        fake.insert(key, b"jpg");
    }
    let s3 = env
        .register_many("u4", BlobRole::Output, "s3", &s3_keys)
        .await;
    let sb = env
        .register_many("u4", BlobRole::Reference, "supabase", &sb_keys)
        .await;
    let local = env
        .upload("u4", BlobRole::Reference, "refs/u4/local.jpg", None)
        .await;
    env.backdate_blobs(&[&s3[..], &sb[..], &[local]].concat(), PAST_ALL)
        .await;

    let first = env.daemon();
    env.sweep_once().await;
    let s3_job = env.delete_job_of(s3[0]).await.expect("scheduled");
    let sb_job = env.delete_job_of(sb[0]).await.expect("scheduled");
    wait_until(
        Duration::from_secs(10),
        "both stores' jobs to have failed twice",
        || async {
            env.blobs(&[&s3[..], &sb[..]].concat())
                .await
                .iter()
                .all(|b| b.attempts >= 2)
        },
    )
    .await;

    // The local blob is deleted; the others stay due, each saying which store is missing.
    assert!(env.blob(local).await.deleted_at.is_some());
    assert!(!env.local_exists("refs/u4/local.jpg"));
    for (ids, name) in [(&s3, "s3"), (&sb, "supabase")] {
        for b in env.blobs(ids).await {
            assert!(b.deleted_at.is_none(), "{b:?}");
            let error = b.last_error.clone().unwrap_or_default();
            assert!(
                error.contains(&format!("store \"{name}\" is not usable in this daemon"))
                    && error.contains(&format!("configure [storage.{name}]")),
                "{error}"
            );
            assert!(env.log_for_blob(b.id).await.is_empty());
        }
    }
    assert!(env
        .blob(s3[0])
        .await
        .last_error
        .unwrap()
        .contains("storage.s3.bucket"));
    assert_eq!(fake.keys(), sb_keys, "nothing was asked of the bucket");
    assert!(fake.delete_calls().is_empty());
    for (id, name) in [(s3_job, "s3"), (sb_job, "supabase")] {
        let job = env.db.job(id).await;
        assert!(!job.state.is_final(), "job {id}: {:?}", job.state);
        let errors = error_messages(&job);
        assert!(
            !errors.is_empty()
                && errors.iter().all(|e| e.contains(&format!(
                    "2 of 2 blobs not deleted from {name} (first: store \"{name}\" is not usable"
                ))),
            "{errors:?}"
        );
    }
    // A sweep meanwhile leaves them to their jobs: nothing is scheduled twice.
    env.sweep_once().await;
    assert_eq!(env.delete_jobs().await.len(), 3);

    // A daemon that has the Supabase store finishes the same job; s3 still waits.
    first.shutdown().await;
    let _second = env.daemon_with(vec![supabase(&fake)]);
    env.db
        .wait_for_state(sb_job, JobState::Completed, Duration::from_secs(15))
        .await;
    for b in env.blobs(&sb).await {
        assert!(b.deleted_at.is_some(), "{b:?}");
        assert_eq!(b.last_error, None);
    }
    assert_logged_once(&env, &sb, "reference", sb_job).await;
    assert!(fake.keys().is_empty());
    assert_eq!(fake.delete_calls(), vec![sb_keys.clone()]);
    for b in env.blobs(&s3).await {
        assert!(b.deleted_at.is_none(), "{b:?}");
        assert!(env.log_for_blob(b.id).await.is_empty());
    }
    assert!(!env.db.job(s3_job).await.state.is_final());
    assert_eq!(env.delete_jobs().await.len(), 3);
    env.assert_retention_clean().await;
}

#[sqlx::test(migrations = false)]
async fn a_large_backlog_is_split_per_store_and_batch_and_each_blob_deleted_once(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let mut env = RetentionEnv::setup_without_periodic_sweep(po, co).await;
    env.config.retention.batch = 100;
    let fake = FakeSupabase::start(SUPABASE_KEY)
        .await
        .expect("fake Supabase store");
    let sb_keys: Vec<String> = (0..250).map(|i| format!("refs/u5/s/{i:03}.jpg")).collect();
    let local_keys: Vec<String> = (0..250).map(|i| format!("refs/u5/l/{i:03}.jpg")).collect();
    for key in &sb_keys {
        fake.insert(key, b"jpg");
    }
    for key in &local_keys {
        env.put_local(key, b"jpg");
    }
    let sb = env
        .register_many("u5", BlobRole::Reference, "supabase", &sb_keys)
        .await;
    let local = env
        .register_many("u5", BlobRole::Reference, "local", &local_keys)
        .await;
    let all = [&sb[..], &local[..]].concat();
    env.backdate_blobs(&all, PAST_REFERENCE).await;

    // Two daemons share the delete jobs.
    let _a = env.daemon_with(vec![supabase(&fake)]);
    let _b = env.daemon_with(vec![supabase(&fake)]);
    env.sweep().await;

    // One store per job, at most `batch` blobs each: 100 + 100 + 50 per store.
    let jobs = env.delete_jobs().await;
    let mut sizes: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    let mut job_of: HashMap<i64, i64> = HashMap::new();
    for (job, args) in &jobs {
        assert_eq!(job.state, JobState::Completed, "job {}", job.id);
        assert!(error_messages(job).is_empty(), "{:?}", job.errors);
        sizes
            .entry(args.store.clone())
            .or_default()
            .push(args.blob_ids.len());
        for &id in &args.blob_ids {
            assert!(job_of.insert(id, job.id).is_none(), "blob {id} in two jobs");
        }
        let expected = if args.store == "supabase" {
            &sb
        } else {
            &local
        };
        assert!(
            args.blob_ids.iter().all(|id| expected.contains(id)),
            "job {} mixes stores",
            job.id
        );
    }
    for s in sizes.values_mut() {
        s.sort();
    }
    assert_eq!(
        sizes,
        BTreeMap::from([
            ("local".to_string(), vec![50, 100, 100]),
            ("supabase".to_string(), vec![50, 100, 100]),
        ])
    );
    assert_eq!(job_of.len(), all.len());

    // Each blob deleted once, by the job that held it, and logged once.
    let owners = env.delete_jobs_of(&all).await;
    for b in env.blobs(&all).await {
        assert!(b.deleted_at.is_some(), "{b:?}");
        assert_eq!((b.attempts, b.last_error.as_deref()), (1, None), "{b:?}");
        assert_eq!(owners[&b.id], Some(job_of[&b.id]), "{b:?}");
    }
    let log = env.blob_log().await;
    assert_eq!(log.len(), all.len());
    for row in &log {
        assert_eq!(
            (row.outcome.as_str(), row.policy.as_str(), row.job_id),
            ("deleted", "reference", Some(job_of[&row.blob_id])),
            "{row:?}"
        );
    }
    let logged: BTreeSet<i64> = log.iter().map(|r| r.blob_id).collect();
    assert_eq!(logged, all.iter().copied().collect());

    // The bucket got one request per job, and is empty; so is the local directory.
    let calls = fake.delete_calls();
    assert_eq!(calls.len(), 3);
    assert!(calls.iter().all(|c| c.len() <= 100));
    let asked: BTreeSet<String> = calls.into_iter().flatten().collect();
    assert_eq!(asked, sb_keys.iter().cloned().collect());
    assert!(fake.keys().is_empty());
    assert!(local_keys.iter().all(|k| !env.local_exists(k)));

    // Nothing is left to schedule.
    env.sweep().await;
    assert_eq!(env.delete_jobs().await.len(), jobs.len());
    assert_eq!(env.blob_log().await.len(), all.len());
    env.assert_retention_clean().await;
}
