//! Storage, the local store and store selection from config.

use super::*;

// ---------------------------------------------------------------------------------------
// Local directory

#[tokio::test]
async fn local_put_streams_to_a_file_and_gives_its_url() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::new(dir.path()).unwrap();
    let stored = store
        .put(
            "outputs/u1/g1/0.mp4",
            chunks(&[b"hello ", b"video ", b"bytes"]),
            Some("video/mp4"),
        )
        .await
        .unwrap();
    assert_eq!(stored.store, "local");
    assert_eq!(stored.key, "outputs/u1/g1/0.mp4");
    assert_eq!(stored.size, 17);
    assert_eq!(stored.content_type.as_deref(), Some("video/mp4"));
    let path = url::Url::parse(&stored.url)
        .unwrap()
        .to_file_path()
        .unwrap();
    assert!(stored.url.starts_with("file:///"), "{}", stored.url);
    assert_eq!(std::fs::read(&path).unwrap(), b"hello video bytes");
    assert_eq!(
        files_under(dir.path()),
        vec![path],
        "no temporary file is left"
    );
}

#[tokio::test]
async fn local_same_key_twice_overwrites() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::new(dir.path()).unwrap();
    let first = store
        .put("k/a.bin", chunks(&[b"first version"]), None)
        .await
        .unwrap();
    let second = store
        .put("k/a.bin", chunks(&[b"second"]), None)
        .await
        .unwrap();
    assert_eq!(first.url, second.url);
    assert_eq!(second.size, 6);
    assert_eq!(
        std::fs::read(store.path_of("k/a.bin").unwrap()).unwrap(),
        b"second"
    );
    assert_eq!(files_under(dir.path()).len(), 1);
}

#[tokio::test]
async fn local_delete_counts_missing_keys_as_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::new(dir.path()).unwrap();
    store.put("a/1", chunks(&[b"x"]), None).await.unwrap();
    let keys = vec!["a/1".to_string(), "a/never-existed".to_string()];
    let report = store.delete(&keys).await;
    assert!(report.is_complete(), "{report:?}");
    assert_eq!(report.deleted, keys);
    assert!(files_under(dir.path()).is_empty());
    // Deleting again is still a success.
    assert!(store.delete(&keys).await.is_complete());
}

#[tokio::test]
async fn local_refuses_keys_that_escape_its_directory() {
    let parent = tempfile::tempdir().unwrap();
    let root = parent.path().join("blobs");
    let store = LocalStore::new(&root).unwrap();
    for key in [
        "../x",
        "a/../../x",
        "/etc/passwd",
        "",
        "a//b",
        "./a",
        "a\\..\\b",
    ] {
        assert_permanent(store.put(key, chunks(&[b"x"]), None).await, "refused");
    }
    std::fs::write(parent.path().join("x"), b"outside").unwrap();
    let report = store.delete(&["../x".to_string()]).await;
    assert!(report.deleted.is_empty());
    assert!(!report.failed[0].1.is_retryable());
    assert!(
        parent.path().join("x").exists(),
        "a file outside the root survives"
    );
    assert!(files_under(&root).is_empty());
}

#[tokio::test]
async fn local_body_failure_leaves_nothing_under_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::new(dir.path()).unwrap();
    store.put("k", chunks(&[b"old"]), None).await.unwrap();
    let err = store.put("k", failing_after(b"partial new"), None).await;
    assert_retryable(err, None);
    assert_eq!(std::fs::read(store.path_of("k").unwrap()).unwrap(), b"old");
    assert_eq!(
        files_under(dir.path()).len(),
        1,
        "the temporary file is removed"
    );
}

#[tokio::test]
async fn from_config_builds_the_configured_store() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = StorageConfig {
        local: LocalConfig {
            dir: dir.path().join("nested/blobs").display().to_string(),
        },
        ..StorageConfig::default()
    };
    let store = from_config(&cfg).unwrap();
    assert_eq!(store.name(), "local");
    assert!(dir.path().join("nested/blobs").is_dir());

    let bad = StorageConfig {
        backend: "ftp".into(),
        ..StorageConfig::default()
    };
    let err = from_config(&bad).err().unwrap().to_string();
    assert!(err.contains("ftp"), "{err}");

    let no_token = StorageConfig {
        backend: "vercel".into(),
        vercel: VercelConfig {
            token_env: "GENQ_TEST_UNSET_BLOB_TOKEN".into(),
            ..VercelConfig::default()
        },
        ..StorageConfig::default()
    };
    let err = from_config(&no_token).err().unwrap().to_string();
    assert!(err.contains("GENQ_TEST_UNSET_BLOB_TOKEN"), "{err}");
}
