//! Scenarios: `retention.delete` end to end against the HTTP stores. A real Postgres, fake
//! Vercel Blob and Supabase Storage servers on loopback, and a daemon running the retention
//! jobs with the real stores pointed at the fakes: a rate limit delays the retry by its
//! `Retry-After`, objects already gone count as deleted, partial failures stay due until a
//! retry deletes them, a store the daemon lacks keeps its blobs due without losing them, and
//! a large backlog is split per store and batch and deleted exactly once. Blobs are
//! back-dated instead of waiting for their policies; a fake holds a retried request when a
//! test needs to look between attempts.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use genq::retention::BlobRole;
use genq::storage::supabase::SupabaseStore;
use genq::storage::vercel::VercelStore;
use genq::storage::BlobStore;
use genq::JobState;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::common::retention::RetentionEnv;
use crate::common::{wait_until, TestDb};
use genq::dev::fake_stores::supabase::{self as fake_supabase, FakeSupabase};
use genq::dev::fake_stores::vercel::{self as fake_vercel, FakeVercel};

const VERCEL_TOKEN: &str = "vercel_blob_rw_STORE123_notarealsecret";
const SUPABASE_KEY: &str = "service-role-key-for-tests";
const DAY: u64 = 24 * 3600;
/// Past the reference policy (7 days).
const PAST_REFERENCE: Duration = Duration::from_secs(8 * DAY);
/// Past every role's policy (the longest, output, keeps 30 days).
const PAST_ALL: Duration = Duration::from_secs(31 * DAY);

/// The fixture, with the periodic sweep out of the way: only the sweeps a test runs happen.
async fn env(po: PgPoolOptions, co: PgConnectOptions) -> RetentionEnv {
    let mut env = RetentionEnv::new(TestDb::new(po, co).await).await;
    env.config.retention.interval = Duration::from_secs(100 * 365 * DAY);
    env
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

fn vercel(fake: &FakeVercel) -> Arc<dyn BlobStore> {
    Arc::new(VercelStore::new(&fake.base_url, VERCEL_TOKEN, http()).unwrap())
}

fn supabase(fake: &FakeSupabase) -> Arc<dyn BlobStore> {
    Arc::new(SupabaseStore::new(&fake.url, "uploads", SUPABASE_KEY, http()).unwrap())
}

fn strings(keys: &[&str]) -> Vec<String> {
    keys.iter().map(|k| k.to_string()).collect()
}

/// The job's recorded error messages.
fn error_messages(job: &genq::queue::job_control::JobRow) -> Vec<String> {
    job.errors
        .as_array()
        .expect("errors is an array")
        .iter()
        .map(|e| e["error"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Every blob of `ids` deleted once by job `job`, under `policy`: one 'deleted' row each.
async fn assert_logged_once(env: &RetentionEnv, ids: &[i64], policy: &str, job: i64) {
    let log = env.blob_log().await;
    for &id in ids {
        let rows: Vec<_> = log.iter().filter(|r| r.blob_id == id).collect();
        assert_eq!(rows.len(), 1, "blob {id}: {rows:?}");
        assert_eq!(
            (
                rows[0].outcome.as_str(),
                rows[0].policy.as_str(),
                rows[0].job_id
            ),
            ("deleted", policy, Some(job)),
            "blob {id}"
        );
    }
}

#[sqlx::test(migrations = false)]
async fn vercel_rate_limit_delays_the_retry_by_retry_after_and_only_due_blobs_go(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let env = env(po, co).await;
    let fake = FakeVercel::start(VERCEL_TOKEN).await;
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
    wait_until(
        Duration::from_secs(10),
        "the retried delete to reach the store",
        || async { fake.deletes().len() == 2 },
    )
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
    let env = env(po, co).await;
    let fake = FakeVercel::start(VERCEL_TOKEN).await;
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

#[sqlx::test(migrations = false)]
async fn supabase_failed_second_request_leaves_its_blobs_due_until_the_retry(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let mut env = env(po, co).await;
    // One job with more keys than one Supabase delete request takes (1000).
    env.config.retention.batch = 2000;
    let fake = FakeSupabase::start(SUPABASE_KEY).await;
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
    wait_until(
        Duration::from_secs(10),
        "the retry's delete request",
        || async { fake.delete_calls().len() == 3 },
    )
    .await;
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
    let env = env(po, co).await;
    let fake = FakeSupabase::start(SUPABASE_KEY).await;
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
    wait_until(
        Duration::from_secs(10),
        "the retry's delete request",
        || async { fake.delete_calls().len() == 2 },
    )
    .await;

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

#[sqlx::test(migrations = false)]
async fn a_store_the_daemon_lacks_keeps_its_blobs_due_until_a_daemon_with_it_deletes_them(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let env = env(po, co).await;
    let fake = FakeSupabase::start(SUPABASE_KEY).await;
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
    let mut env = env(po, co).await;
    env.config.retention.batch = 100;
    let fake = FakeSupabase::start(SUPABASE_KEY).await;
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
