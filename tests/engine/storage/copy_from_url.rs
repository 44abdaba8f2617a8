//! Storage, copying a provider's output from its URL: streamed in, expired, overloaded or
//! unreachable, and over the size limit.

use super::*;

#[tokio::test]
async fn copy_from_url_streams_the_output_into_the_store() {
    let host = output_host().await;
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::new(dir.path()).unwrap();
    let url = format!("{host}/out/video.mp4?token=secret-signature");
    let stored = copy_from_url(&store, &guarded(), &url, "outputs/u/g/0.mp4", 1 << 20)
        .await
        .unwrap();
    assert_eq!(stored.size, VIDEO.len() as u64);
    assert_eq!(stored.content_type.as_deref(), Some("video/mp4"));
    assert_eq!(
        std::fs::read(store.path_of("outputs/u/g/0.mp4").unwrap()).unwrap(),
        VIDEO
    );
}

#[tokio::test]
async fn copy_from_url_expired_source_is_permanent() {
    let host = output_host().await;
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::new(dir.path()).unwrap();
    for path in ["gone", "expired", "signed"] {
        let url = format!("{host}/out/{path}?sig=do-not-log-me");
        let result = copy_from_url(&store, &guarded(), &url, "k", 1 << 20).await;
        let message = result.as_ref().unwrap_err().message().to_string();
        assert!(!message.contains("do-not-log-me"), "{message}");
        assert_permanent(result, "expired");
    }
    assert!(files_under(dir.path()).is_empty());
}

#[tokio::test]
async fn copy_from_url_overloaded_or_unreachable_source_is_retryable() {
    let host = output_host().await;
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::new(dir.path()).unwrap();
    let busy = copy_from_url(
        &store,
        &guarded(),
        &format!("{host}/out/busy"),
        "k",
        1 << 20,
    )
    .await;
    assert_retryable(busy, Some(Duration::from_secs(4)));
    // A port nothing listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/x", closed.local_addr().unwrap());
    drop(closed);
    assert_retryable(
        copy_from_url(&store, &guarded(), &url, "k", 1 << 20).await,
        None,
    );
}

#[tokio::test]
async fn copy_from_url_over_the_limit_is_permanent_and_leaves_nothing() {
    let host = output_host().await;
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::new(dir.path()).unwrap();
    // Declared too large (Content-Length): refused before anything is written.
    let r = copy_from_url(
        &store,
        &guarded(),
        &format!("{host}/out/big"),
        "a/big",
        1000,
    )
    .await;
    assert_permanent(r, "max_object_bytes");
    // Streamed without a length: cut off while writing, the partial file removed.
    let r = copy_from_url(
        &store,
        &guarded(),
        &format!("{host}/out/big-chunked"),
        "a/big",
        1000,
    )
    .await;
    assert_permanent(r, "max_object_bytes");
    assert!(
        files_under(dir.path()).is_empty(),
        "{:?}",
        files_under(dir.path())
    );
    // At the limit exactly is fine.
    let ok = copy_from_url(
        &store,
        &guarded(),
        &format!("{host}/out/big-chunked"),
        "a/big",
        4096,
    )
    .await
    .unwrap();
    assert_eq!(ok.size, 4096);
}
