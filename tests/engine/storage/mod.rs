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

mod copy_from_url;
mod hosted;
mod local;
mod s3;

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

// ---------------------------------------------------------------------------------------
// Vercel Blob

const VERCEL_TOKEN: &str = "vercel_blob_rw_STORE123_notarealsecret";

// ---------------------------------------------------------------------------------------
// Supabase Storage

const SUPABASE_KEY: &str = "service-role-key-for-tests";

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
