//! A fake Vercel Blob API on loopback, for the Vercel store's scenarios.
//!
//! It checks what the real API checks (the bearer token, `x-api-version`, overwriting only
//! with `x-allow-overwrite: 1`, a random suffix unless `x-add-random-suffix: 0`), keeps blobs
//! in memory, implements `PUT /{pathname}` and `POST /delete`, and answers the next requests
//! with faults queued by the test (`rate_limited` with `retry-after`, `service_unavailable`,
//! or a hold until the test releases the request).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{post, put};
use axum::{Json, Router};
use serde_json::json;
use tokio::sync::Semaphore;

use super::Arrivals;

/// The API version the fake accepts.
pub const API_VERSION: &str = "9";

/// An answer the fake gives instead of serving a request.
#[derive(Debug, Clone)]
pub enum Fault {
    /// 429 `rate_limited` with `retry-after: <secs>`.
    RateLimited {
        /// Seconds in the `retry-after` header.
        retry_after_secs: u64,
    },
    /// 503 `service_unavailable`.
    Unavailable,
    /// Waits until the test calls [`FakeVercel::release`], then serves the request.
    Hold,
}

/// A stored blob.
#[derive(Debug, Clone, PartialEq)]
pub struct Blob {
    /// The stored body.
    pub bytes: Vec<u8>,
    /// The `content-type` it was uploaded with.
    pub content_type: String,
}

struct Inner {
    token: String,
    base_url: String,
    blobs: Mutex<HashMap<String, Blob>>,
    faults: Mutex<VecDeque<Fault>>,
    requests: Mutex<Vec<String>>,
    /// The `urls` of every `POST /delete` that passed the auth check, in order.
    deletes: Mutex<Vec<Vec<String>>>,
    /// How many entries `deletes` has: the signal [`FakeVercel::wait_for_delete_requests`]
    /// waits on instead of polling.
    delete_count: Arrivals,
    gate: Semaphore,
}

/// A running fake; it stops with the test's runtime.
#[derive(Clone)]
pub struct FakeVercel {
    /// What to configure as `storage.vercel.base_url`.
    pub base_url: String,
    inner: Arc<Inner>,
}

impl FakeVercel {
    /// Starts the fake on 127.0.0.1, accepting `token`.
    pub async fn start(token: &str) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr: SocketAddr = listener.local_addr()?;
        let base_url = format!("http://{addr}");
        let inner = Arc::new(Inner {
            token: token.to_string(),
            base_url: base_url.clone(),
            blobs: Mutex::default(),
            faults: Mutex::default(),
            requests: Mutex::default(),
            deletes: Mutex::default(),
            delete_count: Arrivals::default(),
            gate: Semaphore::new(0),
        });
        let app = Router::new()
            .route("/delete", post(delete))
            .route("/{*pathname}", put(put_blob))
            .layer(DefaultBodyLimit::disable())
            .with_state(inner.clone());
        tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, app).await {
                tracing::error!(error = %err, "fake Vercel store stopped");
            }
        });
        Ok(Self { base_url, inner })
    }

    /// Answers the next request (after the auth check) with `fault`.
    pub fn fail_next(&self, fault: Fault) {
        crate::sync::lock(&self.inner.faults).push_back(fault);
    }

    /// Lets one held request (or the next one to be held) through.
    pub fn release(&self) {
        self.inner.gate.add_permits(1);
    }

    /// The blob at `pathname`.
    pub fn blob(&self, pathname: &str) -> Option<Blob> {
        crate::sync::lock(&self.inner.blobs).get(pathname).cloned()
    }

    /// Stores a blob directly.
    pub fn insert(&self, pathname: &str, bytes: &[u8]) {
        crate::sync::lock(&self.inner.blobs).insert(
            pathname.to_string(),
            Blob {
                bytes: bytes.to_vec(),
                content_type: "application/octet-stream".into(),
            },
        );
    }

    /// Removes a blob directly (deleted out of band).
    pub fn remove(&self, pathname: &str) -> bool {
        crate::sync::lock(&self.inner.blobs)
            .remove(pathname)
            .is_some()
    }

    /// Pathnames stored, sorted.
    pub fn pathnames(&self) -> Vec<String> {
        let mut p: Vec<_> = crate::sync::lock(&self.inner.blobs)
            .keys()
            .cloned()
            .collect();
        p.sort();
        p
    }

    /// "METHOD path" of every request that passed the auth check, in order.
    pub fn requests(&self) -> Vec<String> {
        crate::sync::lock(&self.inner.requests).clone()
    }

    /// The `urls` of every `POST /delete` that passed the auth check, in order.
    pub fn deletes(&self) -> Vec<Vec<String>> {
        crate::sync::lock(&self.inner.deletes).clone()
    }

    /// Waits until at least `n` delete requests have reached the fake (as counted by
    /// [`FakeVercel::deletes`], held ones included), woken by the fake itself rather than
    /// by polling; panics after `within`.
    pub async fn wait_for_delete_requests(&self, n: usize, within: Duration) {
        let what = "delete request(s) to reach the fake Vercel store";
        self.inner.delete_count.wait_for(n, within, what).await;
    }

    /// The public URL the fake gives a pathname.
    pub fn public_url(&self, pathname: &str) -> String {
        format!("{}/public/{pathname}", self.base_url)
    }
}

fn api_error(status: StatusCode, code: &str, message: &str) -> Response {
    (
        status,
        Json(json!({ "error": { "code": code, "message": message } })),
    )
        .into_response()
}

/// The checks every request passes, then the queued fault: the answer instead of serving,
/// if any (a hold waits for the test, then serves).
async fn refuse(inner: &Inner, headers: &HeaderMap, request: String) -> Option<Response> {
    if let Some(r) = check(inner, headers) {
        return Some(r);
    }
    crate::sync::lock(&inner.requests).push(request);
    let fault = crate::sync::lock(&inner.faults).pop_front();
    match fault {
        None => None,
        Some(Fault::RateLimited { retry_after_secs }) => {
            let mut response = api_error(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "Too many requests",
            );
            response.headers_mut().insert(
                "retry-after",
                axum::http::HeaderValue::from(retry_after_secs),
            );
            Some(response)
        }
        Some(Fault::Unavailable) => Some(api_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "service_unavailable",
            "The blob service is currently not available.",
        )),
        Some(Fault::Hold) => {
            // Held until released; the gate is never closed.
            if let Ok(permit) = inner.gate.acquire().await {
                permit.forget();
            }
            None
        }
    }
}

/// The token and API version checks: the answer if they fail.
fn check(inner: &Inner, headers: &HeaderMap) -> Option<Response> {
    let bearer = format!("Bearer {}", inner.token);
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(bearer.as_str()) {
        return Some(api_error(
            StatusCode::FORBIDDEN,
            "forbidden",
            "Access denied, please provide a valid token for this resource.",
        ));
    }
    if headers.get("x-api-version").and_then(|v| v.to_str().ok()) != Some(API_VERSION) {
        return Some(api_error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "unsupported x-api-version",
        ));
    }
    None
}

async fn put_blob(
    State(inner): State<Arc<Inner>>,
    Path(pathname): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(r) = refuse(&inner, &headers, format!("PUT /{pathname}")).await {
        return r;
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let pathname = if header("x-add-random-suffix") == Some("0") {
        pathname
    } else {
        format!("{pathname}-RaNdOm")
    };
    let content_type = header("x-content-type")
        .unwrap_or("application/octet-stream")
        .to_string();
    let mut blobs = crate::sync::lock(&inner.blobs);
    if blobs.contains_key(&pathname) && header("x-allow-overwrite") != Some("1") {
        return api_error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "This blob already exists, use `allowOverwrite: true` if you want to overwrite it.",
        );
    }
    blobs.insert(
        pathname.clone(),
        Blob {
            bytes: body.to_vec(),
            content_type: content_type.clone(),
        },
    );
    let url = format!("{}/public/{pathname}", inner.base_url);
    Json(json!({
        "url": url,
        "downloadUrl": format!("{url}?download=1"),
        "pathname": pathname,
        "contentType": content_type,
        "contentDisposition": "inline",
    }))
    .into_response()
}

#[derive(serde::Deserialize)]
struct DeleteBody {
    urls: Vec<String>,
}

async fn delete(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    Json(body): Json<DeleteBody>,
) -> Response {
    if check(&inner, &headers).is_none() {
        crate::sync::lock(&inner.deletes).push(body.urls.clone());
        inner.delete_count.bump();
    }
    if let Some(r) = refuse(&inner, &headers, "POST /delete".into()).await {
        return r;
    }
    let prefix = format!("{}/public/", inner.base_url);
    let mut blobs = crate::sync::lock(&inner.blobs);
    for url in body.urls {
        // Blob URLs and pathnames are both accepted; a missing blob is not an error.
        let pathname = url.strip_prefix(&prefix).unwrap_or(&url);
        blobs.remove(pathname);
    }
    StatusCode::OK.into_response()
}
