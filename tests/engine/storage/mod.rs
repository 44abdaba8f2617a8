//! Scenarios: storage. Every store runs against the real thing or a faithful stand-in on
//! loopback: a temporary directory (local), fake Vercel Blob and Supabase Storage servers
//! (HTTP), a real S3-compatible server (moto), and a file server playing a provider's output
//! URL for `copy_from_url`. No database.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path as FsPath, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use futures::StreamExt;
use genq::storage::config::{LocalConfig, S3Config, VercelConfig};
use genq::storage::local::LocalStore;
use genq::storage::s3::S3Store;
use genq::storage::supabase::SupabaseStore;
use genq::storage::vercel::VercelStore;
use genq::storage::{
    copy_from_url, from_config, BlobStore, ByteStream, StorageConfig, StorageError,
};

use genq::dev::fake_stores::supabase::{self as fake_supabase, FakeSupabase};
use genq::dev::fake_stores::vercel::{FakeVercel, Fault};

// ---------------------------------------------------------------------------------------
// Helpers

/// A body of `chunks`, streamed one by one.
fn chunks(chunks: &[&[u8]]) -> ByteStream {
    let owned: Vec<Result<Bytes, std::io::Error>> = chunks
        .iter()
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    futures::stream::iter(owned).boxed()
}

/// `len` bytes of a non-repeating-looking pattern, streamed in 1 MiB chunks.
fn pattern(len: usize) -> (Vec<u8>, ByteStream) {
    let data: Vec<u8> = (0..len)
        .map(|i| (i % 251) as u8 ^ (i >> 12) as u8)
        .collect();
    let parts: Vec<Result<Bytes, std::io::Error>> = data
        .chunks(1024 * 1024)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    (data, futures::stream::iter(parts).boxed())
}

/// A body that yields `good` and then fails, like a dropped download.
fn failing_after(good: &[u8]) -> ByteStream {
    let items: Vec<Result<Bytes, std::io::Error>> = vec![
        Ok(Bytes::copy_from_slice(good)),
        Err(std::io::Error::other("connection reset by the source")),
    ];
    futures::stream::iter(items).boxed()
}

/// Every file under `dir`, recursively.
fn files_under(dir: &FsPath) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push(path);
        }
    }
    out
}

/// Serves `app` on 127.0.0.1 until the test's runtime ends.
async fn serve(app: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// The guarded client of output downloads, opened to loopback where these hosts listen.
fn guarded() -> genq::outbound::Guarded {
    let policy = genq::outbound::AddressPolicy::new(&["127.0.0.0/8".into()]).unwrap();
    genq::outbound::Guarded::new(policy, Duration::from_secs(30)).unwrap()
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

#[track_caller]
pub(crate) fn assert_permanent<T: std::fmt::Debug>(r: Result<T, StorageError>, contains: &str) {
    match r {
        Err(StorageError::Permanent { message }) => {
            assert!(message.contains(contains), "{message:?} lacks {contains:?}")
        }
        other => panic!("expected a permanent error with {contains:?}, got {other:?}"),
    }
}

#[track_caller]
fn assert_retryable<T: std::fmt::Debug>(r: Result<T, StorageError>, after: Option<Duration>) {
    match r {
        Err(StorageError::Retryable { retry_after, .. }) => assert_eq!(retry_after, after),
        other => panic!("expected a retryable error, got {other:?}"),
    }
}

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

// ---------------------------------------------------------------------------------------
// copy_from_url

const VIDEO: &[u8] = b"\x00\x00\x00\x18ftypmp42 pretend this is a video";

/// A provider's output host: a file, expired outputs, an overloaded host, and bodies over
/// the limit with and without a Content-Length.
async fn output_host() -> String {
    let app = Router::new()
        .route(
            "/out/video.mp4",
            get(|| async { ([("content-type", "video/mp4")], VIDEO) }),
        )
        .route("/out/gone", get(|| async { StatusCode::NOT_FOUND }))
        .route("/out/expired", get(|| async { StatusCode::GONE }))
        .route("/out/signed", get(|| async { StatusCode::FORBIDDEN }))
        .route(
            "/out/busy",
            get(|| async { (StatusCode::SERVICE_UNAVAILABLE, [("retry-after", "4")]) }),
        )
        .route("/out/big", get(|| async { vec![7u8; 4096] }))
        .route(
            "/out/big-chunked",
            get(|| async {
                let parts = (0..8).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![7u8; 512])));
                Body::from_stream(futures::stream::iter(parts))
            }),
        );
    format!("http://{}", serve(app).await)
}

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

// ---------------------------------------------------------------------------------------
// Vercel Blob

const VERCEL_TOKEN: &str = "vercel_blob_rw_STORE123_notarealsecret";

#[tokio::test]
async fn vercel_put_overwrites_and_delete_takes_the_keys_back() {
    let fake = FakeVercel::start(VERCEL_TOKEN).await;
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
    let fake = FakeVercel::start(VERCEL_TOKEN).await;
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
    let fake = FakeVercel::start(VERCEL_TOKEN).await;
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

// ---------------------------------------------------------------------------------------
// Supabase Storage

const SUPABASE_KEY: &str = "service-role-key-for-tests";

#[tokio::test]
async fn supabase_delete_counts_already_gone_objects_as_deleted() {
    let fake = FakeSupabase::start(SUPABASE_KEY).await;
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
    let fake = FakeSupabase::start(SUPABASE_KEY).await;
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
    let fake = FakeSupabase::start(SUPABASE_KEY).await;
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
    let fake = FakeSupabase::start(SUPABASE_KEY).await;
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

// ---------------------------------------------------------------------------------------
// S3-compatible: a real moto server

/// A moto S3 server on a free loopback port, stopped when dropped.
struct Moto {
    child: Child,
    endpoint: String,
}

impl Moto {
    /// Starts `moto_server`. Without it the test is skipped, loudly, except in CI (`CI` set),
    /// where a missing server is a failure: `.ci/run` installs it.
    async fn start() -> Option<Self> {
        let on_path = std::env::var_os("PATH").is_some_and(|paths| {
            std::env::split_paths(&paths).any(|dir| dir.join("moto_server").is_file())
        });
        if !on_path {
            if std::env::var_os("CI").is_some() {
                panic!("moto_server is not installed (pip install 'moto[server]')");
            }
            eprintln!(
                "\n*** SKIPPED: S3 store test needs moto_server (pip install 'moto[server]') ***\n"
            );
            return None;
        }
        let port = {
            let probe = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let child = Command::new("moto_server")
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start moto_server");
        let moto = Self {
            child,
            endpoint: format!("http://127.0.0.1:{port}"),
        };
        let started = Instant::now();
        loop {
            if http().get(&moto.endpoint).send().await.is_ok() {
                return Some(moto);
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "moto_server did not answer on {} within 60 s",
                moto.endpoint
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn create_bucket(&self, bucket: &str) {
        let r = http()
            .put(format!("{}/{bucket}", self.endpoint))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "create bucket: {}", r.status());
    }

    /// A signed client of our own, to check what the store wrote.
    fn client(&self, bucket: &str) -> object_store::aws::AmazonS3 {
        object_store::aws::AmazonS3Builder::new()
            .with_endpoint(&self.endpoint)
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_bucket_name(bucket)
            .with_access_key_id("testing")
            .with_secret_access_key("testing")
            .build()
            .unwrap()
    }

    /// The object's bytes and content type, or None if it does not exist (read with a
    /// separate, signed client: moto refuses anonymous reads of private objects).
    async fn object(&self, bucket: &str, key: &str) -> Option<(Vec<u8>, String)> {
        use object_store::{Attribute, ObjectStore};
        let client = self.client(bucket);
        match client.get(&key.into()).await {
            Err(object_store::Error::NotFound { .. }) => None,
            Err(e) => panic!("get {key}: {e}"),
            Ok(got) => {
                let ct = got
                    .attributes
                    .get(&Attribute::ContentType)
                    .map(|v| v.to_string());
                Some((got.bytes().await.unwrap().to_vec(), ct.unwrap_or_default()))
            }
        }
    }

    /// The object's ETag; a multipart upload's ends in `-<parts>`.
    async fn etag(&self, bucket: &str, key: &str) -> String {
        use object_store::ObjectStore;
        let client = self.client(bucket);
        client
            .head(&key.into())
            .await
            .unwrap()
            .e_tag
            .unwrap_or_default()
    }

    /// The bucket's unfinished multipart uploads, as S3's XML listing.
    async fn multipart_uploads(&self, bucket: &str) -> String {
        let r = http()
            .get(format!("{}/{bucket}?uploads", self.endpoint))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "list uploads: {}", r.status());
        let text = r.text().await.unwrap();
        assert!(text.contains("<ListMultipartUploadsResult"), "{text}");
        text
    }

    /// S3Store for `bucket`, with credentials through the configured environment variables.
    fn store(&self, bucket: &str, public_base_url: &str) -> S3Store {
        std::env::set_var("GENQ_TEST_S3_KEY_ID", "testing");
        std::env::set_var("GENQ_TEST_S3_SECRET", "testing");
        S3Store::from_config(&S3Config {
            bucket: bucket.into(),
            region: "us-east-1".into(),
            endpoint: self.endpoint.clone(),
            access_key_id_env: "GENQ_TEST_S3_KEY_ID".into(),
            secret_access_key_env: "GENQ_TEST_S3_SECRET".into(),
            virtual_hosted_style: false,
            public_base_url: public_base_url.into(),
        })
        .unwrap()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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
