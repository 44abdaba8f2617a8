//! Storage, the hosted stores (Vercel Blob, Supabase Storage) against their fakes.

use super::*;

#[tokio::test]
async fn vercel_put_overwrites_and_delete_takes_the_keys_back() {
    let fake = FakeVercel::start(VERCEL_TOKEN)
        .await
        .expect("fake Vercel store");
    std::env::set_var("GENQ_TEST_VERCEL_TOKEN_A", VERCEL_TOKEN);
    let store = VercelStore::from_config(
        &VercelConfig {
            base_url: fake.base_url.clone(),
            token_env: "GENQ_TEST_VERCEL_TOKEN_A".into(),
        },
        http(),
    )
    .unwrap();
    assert!(!format!("{store:?}").contains("notarealsecret"));

    let key = "outputs/u 1/g1/0.mp4";
    let stored = store
        .put(key, chunks(&[b"one", b"two"]), Some("video/mp4"))
        .await
        .unwrap();
    assert_eq!(stored.store, "vercel");
    assert_eq!(stored.key, key);
    assert_eq!(stored.url, fake.public_url(key));
    assert_eq!(stored.size, 6);
    assert_eq!(stored.content_type.as_deref(), Some("video/mp4"));
    let blob = fake.blob(key).unwrap();
    assert_eq!(
        (blob.bytes.as_slice(), blob.content_type.as_str()),
        (&b"onetwo"[..], "video/mp4")
    );

    // The same key again replaces the blob (no random suffix, overwrite allowed).
    store.put(key, chunks(&[b"three"]), None).await.unwrap();
    assert_eq!(fake.blob(key).unwrap().bytes, b"three");
    assert_eq!(fake.pathnames(), vec![key.to_string()]);

    // Delete by key (pathname) and by blob URL; a missing blob counts as deleted.
    fake.insert("other/1.png", b"png");
    let keys = vec![
        key.to_string(),
        fake.public_url("other/1.png"),
        "never/existed".to_string(),
    ];
    let report = store.delete(&keys).await;
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(report.deleted, keys);
    assert!(fake.pathnames().is_empty());
}

#[tokio::test]
async fn vercel_rate_limits_and_outages_are_retryable_then_succeed() {
    let fake = FakeVercel::start(VERCEL_TOKEN)
        .await
        .expect("fake Vercel store");
    let store = VercelStore::new(&fake.base_url, VERCEL_TOKEN, http()).unwrap();

    fake.fail_next(Fault::RateLimited {
        retry_after_secs: 3,
    });
    fake.fail_next(Fault::Unavailable);
    let key = "outputs/a.mp4";
    assert_retryable(
        store.put(key, chunks(&[b"v"]), None).await,
        Some(Duration::from_secs(3)),
    );
    assert_retryable(store.put(key, chunks(&[b"v"]), None).await, None);
    store.put(key, chunks(&[b"v"]), None).await.unwrap();
    assert_eq!(fake.blob(key).unwrap().bytes, b"v");

    fake.fail_next(Fault::RateLimited {
        retry_after_secs: 5,
    });
    fake.fail_next(Fault::Unavailable);
    let keys = vec![key.to_string(), "b".to_string()];
    let report = store.delete(&keys).await;
    assert!(report.deleted.is_empty());
    let failed: Vec<_> = report.failed.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(failed, keys);
    for (_, e) in report.failed {
        assert_retryable::<()>(Err(e), Some(Duration::from_secs(5)));
    }
    let report = store.delete(&keys).await;
    assert!(report.failed.iter().all(|(_, e)| e.is_retryable()) && report.failed.len() == 2);
    let report = store.delete(&keys).await;
    assert!(report.is_complete(), "{report:?}");
    assert!(fake.blob(key).is_none());
    assert_eq!(fake.requests().len(), 6);
}

#[tokio::test]
async fn vercel_bad_token_is_permanent_and_never_shown() {
    let fake = FakeVercel::start(VERCEL_TOKEN)
        .await
        .expect("fake Vercel store");
    let store = VercelStore::new(&fake.base_url, "vercel_blob_rw_WRONG_leakcheck", http()).unwrap();
    let err = store.put("k", chunks(&[b"x"]), None).await;
    let message = err.as_ref().unwrap_err().to_string();
    assert!(!message.contains("leakcheck"), "{message}");
    assert_permanent(err, "forbidden");
    let report = store.delete(&["k".to_string()]).await;
    assert_eq!(report.failed.len(), 1);
    assert!(!report.failed[0].1.is_retryable());
    assert!(fake.requests().is_empty());
}

#[tokio::test]
async fn supabase_delete_counts_already_gone_objects_as_deleted() {
    let fake = FakeSupabase::start(SUPABASE_KEY)
        .await
        .expect("fake Supabase store");
    let url = fake.url.clone();
    for k in ["u/1.png", "u/2.png", "u/keep.png"] {
        fake.insert(k, b"x");
    }
    let store = SupabaseStore::new(&url, "uploads", SUPABASE_KEY, http()).unwrap();
    assert!(!format!("{store:?}").contains(SUPABASE_KEY));
    let keys: Vec<String> = ["u/1.png", "u/2.png", "u/gone.png", "u/also-gone.png"]
        .map(String::from)
        .to_vec();
    let report = store.delete(&keys).await;
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(report.deleted, keys);
    assert_eq!(fake.keys(), vec!["u/keep.png"]);
}

#[tokio::test]
async fn supabase_partial_failure_reports_the_failed_batch() {
    let fake = FakeSupabase::start(SUPABASE_KEY)
        .await
        .expect("fake Supabase store");
    let url = fake.url.clone();
    let keys: Vec<String> = (0..1500).map(|i| format!("refs/{i}.jpg")).collect();
    for k in &keys {
        fake.insert(k, b"x");
    }
    fake.fail_call(
        2,
        fake_supabase::Fault::Unavailable {
            retry_after_secs: None,
        },
    );
    let store = SupabaseStore::new(&url, "uploads", SUPABASE_KEY, http()).unwrap();
    let report = store.delete(&keys).await;
    assert_eq!(report.deleted, keys[..1000].to_vec());
    let failed: Vec<_> = report.failed.iter().map(|(k, _)| k.clone()).collect();
    assert_eq!(failed, keys[1000..].to_vec());
    assert!(report.failed.iter().all(|(_, e)| e.is_retryable()));
    assert_eq!(fake.keys().len(), 500);
    // The retention job retries the failed keys.
    let again = store.delete(&failed).await;
    assert!(again.is_complete());
    assert!(fake.keys().is_empty());
}

#[tokio::test]
async fn supabase_put_upserts_and_bad_key_is_permanent() {
    let fake = FakeSupabase::start(SUPABASE_KEY)
        .await
        .expect("fake Supabase store");
    let url = fake.url.clone();
    let store = SupabaseStore::new(&url, "outputs", SUPABASE_KEY, http()).unwrap();
    let stored = store
        .put("g/1.mp4", chunks(&[b"first"]), Some("video/mp4"))
        .await
        .unwrap();
    store
        .put("g/1.mp4", chunks(&[b"second!"]), None)
        .await
        .unwrap();
    assert_eq!(
        stored.url,
        format!("{url}/storage/v1/object/public/outputs/g/1.mp4")
    );
    assert_eq!(stored.size, 5);
    assert_eq!(fake.object("g/1.mp4").unwrap(), b"second!");

    let wrong = SupabaseStore::new(&url, "outputs", "not-the-key", http()).unwrap();
    assert_permanent(wrong.put("g/2.mp4", chunks(&[b"x"]), None).await, "403");
    assert!(!wrong.delete(&["g/1.mp4".into()]).await.failed[0]
        .1
        .is_retryable());
}

#[tokio::test]
async fn supabase_share_urls_are_signed_and_expire() {
    let fake = FakeSupabase::start(SUPABASE_KEY)
        .await
        .expect("fake Supabase store");
    let url = fake.url.clone();
    let store = SupabaseStore::new(&url, "outputs", SUPABASE_KEY, http()).unwrap();
    store
        .put("exports/abc.json", chunks(&[b"{}"]), None)
        .await
        .unwrap();
    let shared = store
        .share_url("exports/abc.json", Duration::from_secs(3600))
        .await
        .unwrap()
        .expect("Supabase signs URLs");
    assert_eq!(
        shared,
        format!("{url}/storage/v1/object/sign/outputs/exports/abc.json?token=fake-jwt-3600")
    );
    assert_permanent(
        store
            .share_url("exports/missing.json", Duration::from_secs(60))
            .await,
        "404",
    );
}
