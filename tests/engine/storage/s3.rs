//! Storage, the S3 store against a real S3-compatible server (moto).

use super::*;

#[tokio::test]
async fn s3_put_single_and_multipart_then_delete() {
    let Some(moto) = Moto::start().await else {
        return;
    };
    moto.create_bucket("genq-test").await;
    let store = moto.store("genq-test", "");

    let small = store
        .put(
            "outputs/small.png",
            chunks(&[b"tiny ", b"image"]),
            Some("image/png"),
        )
        .await
        .unwrap();
    assert_eq!((small.store.as_str(), small.size), ("s3", 10));
    assert_eq!(small.url, "s3://genq-test/outputs/small.png");
    let (bytes, ct) = moto.object("genq-test", "outputs/small.png").await.unwrap();
    assert_eq!(
        (bytes.as_slice(), ct.as_str()),
        (&b"tiny image"[..], "image/png")
    );

    // 20 MiB: three 8 MiB parts, streamed.
    let (data, body) = pattern(20 * 1024 * 1024 + 123);
    let big = store
        .put("outputs/big.mp4", body, Some("video/mp4"))
        .await
        .unwrap();
    assert_eq!(big.size, data.len() as u64);
    let (bytes, ct) = moto.object("genq-test", "outputs/big.mp4").await.unwrap();
    assert!(
        bytes == data,
        "multipart object differs ({} bytes)",
        bytes.len()
    );
    assert_eq!(ct, "video/mp4");
    let etag = moto.etag("genq-test", "outputs/big.mp4").await;
    assert!(
        etag.trim_matches('"').ends_with("-3"),
        "three parts: {etag}"
    );

    // Again under the same key: replaced.
    store
        .put("outputs/big.mp4", chunks(&[b"v2"]), None)
        .await
        .unwrap();
    assert_eq!(
        moto.object("genq-test", "outputs/big.mp4").await.unwrap().0,
        b"v2"
    );

    let keys = vec![
        "outputs/small.png".to_string(),
        "outputs/big.mp4".to_string(),
        "outputs/already-gone".to_string(),
    ];
    let report = store.delete(&keys).await;
    assert!(report.is_complete(), "{report:?}");
    let deleted: HashSet<_> = report.deleted.into_iter().collect();
    assert_eq!(deleted, keys.iter().cloned().collect());
    assert!(moto
        .object("genq-test", "outputs/small.png")
        .await
        .is_none());
    assert!(moto.object("genq-test", "outputs/big.mp4").await.is_none());
    assert!(
        store.delete(&keys).await.is_complete(),
        "deleting again is fine"
    );
}

#[tokio::test]
async fn s3_share_urls_are_presigned_and_expire() {
    let Some(moto) = Moto::start().await else {
        return;
    };
    moto.create_bucket("genq-test").await;
    let store = moto.store("genq-test", "");
    store
        .put("exports/abc.json", chunks(&[b"{\"a\":1}"]), None)
        .await
        .unwrap();
    let shared = store
        .share_url("exports/abc.json", Duration::from_secs(30 * 24 * 3600))
        .await
        .unwrap()
        .expect("S3 presigns URLs");
    assert!(shared.contains("X-Amz-Signature="), "{shared}");
    // Capped at SigV4's 7 days.
    assert!(shared.contains("X-Amz-Expires=604800"), "{shared}");
    let body = http().get(&shared).send().await.unwrap();
    assert!(body.status().is_success(), "{}", body.status());
    assert_eq!(body.bytes().await.unwrap().as_ref(), b"{\"a\":1}");
}

#[tokio::test]
async fn s3_failed_stream_aborts_and_leaves_nothing() {
    let Some(moto) = Moto::start().await else {
        return;
    };
    moto.create_bucket("genq-test").await;
    let store = moto.store("genq-test", "https://cdn.example/media/");

    // Past one part, then the source fails: the multipart upload is aborted.
    let mut good = vec![1u8; 9 * 1024 * 1024];
    good[0] = 2;
    assert_retryable(
        store
            .put("outputs/cut.mp4", failing_after(&good), None)
            .await,
        None,
    );
    assert!(moto.object("genq-test", "outputs/cut.mp4").await.is_none());
    let uploads = moto.multipart_uploads("genq-test").await;
    assert!(
        !uploads.contains("<UploadId>"),
        "no multipart upload left: {uploads}"
    );

    let stored = store.put("a b/c.png", chunks(&[b"x"]), None).await.unwrap();
    assert_eq!(stored.url, "https://cdn.example/media/a%20b/c.png");
}

#[tokio::test]
async fn s3_missing_bucket_and_bad_keys_are_permanent() {
    let Some(moto) = Moto::start().await else {
        return;
    };
    let store = moto.store("no-such-bucket", "");
    assert_permanent(store.put("k", chunks(&[b"x"]), None).await, "S3");
    assert_permanent(store.put("../k", chunks(&[b"x"]), None).await, "refused");
    // A wrong bucket name must not make deletions look done.
    let report = store.delete(&["k".to_string()]).await;
    assert!(report.deleted.is_empty(), "{report:?}");
    assert!(!report.failed[0].1.is_retryable());
}
