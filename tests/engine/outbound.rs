//! Scenarios: outbound requests to URLs a provider named. An output URL is data from an
//! answer, so a download must never reach an internal service: each scenario points the
//! guarded client at a real listener on loopback (standing in for an internal service or
//! the metadata address) and checks it is refused before any connection, on the first
//! request and on every redirect hop, unless `[outbound] allow_private` opens the range.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use genq::outbound::{AddressPolicy, Guarded, OutboundConfig};
use genq::storage::local::LocalStore;
use genq::storage::{copy_from_url, StorageError};

use crate::storage::assert_permanent;

/// An "internal service" on `ip`: counts every request it receives.
async fn internal_service(ip: &str) -> (SocketAddr, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let app = Router::new().fallback(move || {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
            "internal secret"
        }
    });
    let listener = tokio::net::TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (addr, hits)
}

/// A host on 127.0.0.1 whose `/to?u=<url>` redirects to `<url>`, and `/loop/<n>` redirects
/// to `/loop/<n+1>`.
async fn redirector() -> SocketAddr {
    let app = Router::new()
        .route(
            "/to",
            get(
                |q: axum::extract::Query<std::collections::HashMap<String, String>>| async move {
                    (StatusCode::FOUND, [(header::LOCATION, q["u"].clone())]).into_response()
                },
            ),
        )
        .route(
            "/loop/{n}",
            get(
                |axum::extract::Path(n): axum::extract::Path<u32>| async move {
                    let next = format!("/loop/{}", n + 1);
                    (StatusCode::FOUND, [(header::LOCATION, next)]).into_response()
                },
            ),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

fn guarded(allow: &[&str]) -> Guarded {
    let allow: Vec<String> = allow.iter().map(|s| s.to_string()).collect();
    Guarded::new(AddressPolicy::new(&allow).unwrap(), Duration::from_secs(10)).unwrap()
}

async fn copy(
    client: &Guarded,
    url: &str,
) -> (
    Result<genq::storage::StoredObject, StorageError>,
    Vec<String>,
) {
    let dir = tempfile::tempdir().unwrap();
    let store = LocalStore::new(dir.path()).unwrap();
    let result = copy_from_url(&store, client, url, "outputs/u/g/0.mp4", 1 << 20).await;
    let files = walk(dir.path());
    (result, files)
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path.display().to_string());
        }
    }
    out
}

#[tokio::test]
async fn the_default_config_refuses_loopback_outputs() {
    let (addr, hits) = internal_service("127.0.0.1").await;
    let client = Guarded::from_config(&OutboundConfig::default(), Duration::from_secs(10)).unwrap();
    for url in [
        format!("http://{addr}/admin/export.mp4"),
        format!("http://localhost:{}/admin", addr.port()),
        format!("http://[::ffff:127.0.0.1]:{}/admin", addr.port()),
        format!("http://2130706433:{}/admin", addr.port()),
    ] {
        let (result, files) = copy(&client, &url).await;
        assert_permanent(result, "non-public address");
        assert!(files.is_empty(), "{files:?}");
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "the internal service was reached"
    );
}

#[tokio::test]
async fn metadata_and_private_addresses_are_refused_without_connecting() {
    let client = guarded(&["127.0.0.0/8"]);
    for url in [
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "http://100.100.100.200/latest/meta-data/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://10.0.0.1/",
        "http://192.168.1.1/",
    ] {
        let (result, _) = copy(&client, url).await;
        assert_permanent(result, "non-public address");
    }
    let (result, _) = copy(&client, "file:///etc/passwd").await;
    assert_permanent(result, "not http(s)");
}

#[tokio::test]
async fn a_redirect_to_a_refused_address_is_refused_on_that_hop() {
    // The first host is allowed (127.0.0.1 only); the redirect target is another loopback
    // address (127.0.0.2), which is not.
    let (internal, hits) = internal_service("127.0.0.2").await;
    let hop = redirector().await;
    let client = guarded(&["127.0.0.1/32"]);
    let url = format!(
        "http://{hop}/to?u={}",
        urlencode(&format!("http://{internal}/secret"))
    );
    let (result, _) = copy(&client, &url).await;
    assert_permanent(result, "non-public address");
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "the redirect reached the internal service"
    );

    // With the range allowed, the same redirect is followed.
    let open = guarded(&["127.0.0.0/8"]);
    let (result, files) = copy(&open, &url).await;
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(files.len(), 1);
    assert_eq!(hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn redirect_chains_are_cut_short() {
    let hop = redirector().await;
    let client = guarded(&["127.0.0.0/8"]);
    let (result, files) = copy(&client, &format!("http://{hop}/loop/0")).await;
    assert_permanent(result, "redirects");
    assert!(files.is_empty());
}

fn urlencode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}
