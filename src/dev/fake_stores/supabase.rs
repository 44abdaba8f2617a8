//! A fake Supabase Storage API on loopback, for the Supabase store's scenarios.
//!
//! It checks the service key (as `apikey` and bearer token), keeps objects in memory (one
//! namespace, whatever the bucket), implements upserting uploads
//! (`POST /storage/v1/object/{bucket}/{key}`) and bulk delete
//! (`DELETE /storage/v1/object/{bucket}` with `prefixes`, the answer listing the objects it
//! removed and leaving out those that were not there), and answers chosen delete calls with
//! faults: a 503 (with or without `retry-after`), a 500 after removing part of the batch,
//! or a hold until the test releases the call.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, post};
use axum::{Json, Router};
use serde_json::json;
use tokio::sync::Semaphore;

use super::Arrivals;

/// What the fake does with one delete call instead of (or before) serving it.
#[derive(Debug, Clone)]
pub enum Fault {
    /// 503, with `retry-after: <secs>` if given; nothing is removed.
    Unavailable {
        /// Seconds in the `retry-after` header, if any.
        retry_after_secs: Option<u64>,
    },
    /// Removes the first `removed` objects the call names, then answers 500, as a
    /// server that fails midway would: the caller cannot tell which were removed.
    PartialThen500 {
        /// How many of the named objects are removed before the 500.
        removed: usize,
    },
    /// Waits until the test calls [`FakeSupabase::release`], then serves the call.
    Hold,
}

struct Inner {
    key: String,
    objects: Mutex<BTreeMap<String, Vec<u8>>>,
    /// The `prefixes` of every authorized delete call, in order.
    deletes: Mutex<Vec<Vec<String>>>,
    /// How many entries `deletes` has: the signal [`FakeSupabase::wait_for_delete_calls`]
    /// waits on instead of polling.
    delete_count: Arrivals,
    /// Faults by delete call number (1-based).
    faults: Mutex<HashMap<usize, Fault>>,
    gate: Semaphore,
}

/// A running fake; it stops with the test's runtime.
#[derive(Clone)]
pub struct FakeSupabase {
    /// What to configure as `storage.supabase.url`.
    pub url: String,
    inner: Arc<Inner>,
}

impl FakeSupabase {
    /// Starts the fake on 127.0.0.1, accepting `service_key`.
    pub async fn start(service_key: &str) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let inner = Arc::new(Inner {
            key: service_key.to_string(),
            objects: Mutex::default(),
            deletes: Mutex::default(),
            delete_count: Arrivals::default(),
            faults: Mutex::default(),
            gate: Semaphore::new(0),
        });
        let app = Router::new()
            .route("/storage/v1/object/{bucket}", delete(remove))
            .route("/storage/v1/object/{bucket}/{*key}", post(upload))
            .route("/storage/v1/object/sign/{bucket}/{*key}", post(sign))
            .layer(DefaultBodyLimit::disable())
            .with_state(inner.clone());
        tokio::spawn(async move {
            if let Err(err) = axum::serve(listener, app).await {
                tracing::error!(error = %err, "fake Supabase store stopped");
            }
        });
        Ok(Self { url, inner })
    }

    /// Answers delete call number `call` (1-based, counting authorized calls) with `fault`.
    pub fn fail_call(&self, call: usize, fault: Fault) {
        crate::sync::lock(&self.inner.faults).insert(call, fault);
    }

    /// Lets one held call (or the next one to be held) through.
    pub fn release(&self) {
        self.inner.gate.add_permits(1);
    }

    /// Stores an object directly.
    pub fn insert(&self, key: &str, bytes: &[u8]) {
        crate::sync::lock(&self.inner.objects).insert(key.to_string(), bytes.to_vec());
    }

    /// Removes an object directly (deleted out of band).
    pub fn remove(&self, key: &str) -> bool {
        crate::sync::lock(&self.inner.objects).remove(key).is_some()
    }

    /// The object's bytes.
    pub fn object(&self, key: &str) -> Option<Vec<u8>> {
        crate::sync::lock(&self.inner.objects).get(key).cloned()
    }

    /// Keys stored, sorted.
    pub fn keys(&self) -> Vec<String> {
        crate::sync::lock(&self.inner.objects)
            .keys()
            .cloned()
            .collect()
    }

    /// The keys (`prefixes`) of every authorized delete call so far, in order.
    pub fn delete_calls(&self) -> Vec<Vec<String>> {
        crate::sync::lock(&self.inner.deletes).clone()
    }

    /// Waits until at least `n` authorized delete calls have reached the fake (as counted
    /// by [`FakeSupabase::delete_calls`]), woken by the fake rather than by polling; panics
    /// after `within`.
    pub async fn wait_for_delete_calls(&self, n: usize, within: Duration) {
        let what = "delete call(s) to reach the fake Supabase store";
        self.inner.delete_count.wait_for(n, within, what).await;
    }
}

fn authorized(inner: &Inner, headers: &HeaderMap) -> bool {
    let get = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    get("apikey") == Some(inner.key.as_str())
        && get("authorization") == Some(&format!("Bearer {}", inner.key))
}

fn error(status: StatusCode, error: &str, message: &str) -> Response {
    let body =
        json!({"statusCode": status.as_u16().to_string(), "error": error, "message": message});
    (status, Json(body)).into_response()
}

async fn remove(
    State(inner): State<Arc<Inner>>,
    Path(bucket): Path<String>,
    headers: HeaderMap,
    Json(body): Json<serde_json::Value>,
) -> Response {
    if !authorized(&inner, &headers) {
        return error(StatusCode::FORBIDDEN, "Unauthorized", "invalid signature");
    }
    let prefixes: Vec<String> = body["prefixes"]
        .as_array()
        .expect("prefixes is an array")
        .iter()
        .map(|p| p.as_str().expect("prefixes are strings").to_string())
        .collect();
    assert!(
        (1..=1000).contains(&prefixes.len()),
        "1 to 1000 prefixes per call"
    );
    let call = {
        let mut deletes = crate::sync::lock(&inner.deletes);
        deletes.push(prefixes.clone());
        deletes.len()
    };
    inner.delete_count.bump();
    let fault = crate::sync::lock(&inner.faults).remove(&call);
    let remove_all = |prefixes: &[String]| -> Vec<serde_json::Value> {
        let mut objects = crate::sync::lock(&inner.objects);
        prefixes
            .iter()
            .filter(|p| objects.remove(p.as_str()).is_some())
            .map(|p| json!({"name": p, "bucket_id": bucket}))
            .collect()
    };
    match fault {
        Some(Fault::Unavailable { retry_after_secs }) => {
            let mut r = error(StatusCode::SERVICE_UNAVAILABLE, "Unavailable", "try again");
            if let Some(secs) = retry_after_secs {
                r.headers_mut()
                    .insert("retry-after", axum::http::HeaderValue::from(secs));
            }
            return r;
        }
        Some(Fault::PartialThen500 { removed }) => {
            remove_all(&prefixes[..removed.min(prefixes.len())]);
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the storage backend failed midway",
            );
        }
        // Held until released; the gate is never closed.
        Some(Fault::Hold) => {
            if let Ok(permit) = inner.gate.acquire().await {
                permit.forget();
            }
        }
        None => {}
    }
    Json(remove_all(&prefixes)).into_response()
}

async fn upload(
    State(inner): State<Arc<Inner>>,
    Path((bucket, key)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if !authorized(&inner, &headers) {
        return error(StatusCode::FORBIDDEN, "Unauthorized", "invalid signature");
    }
    let upsert = headers.get("x-upsert").and_then(|v| v.to_str().ok()) == Some("true");
    let mut objects = crate::sync::lock(&inner.objects);
    if objects.contains_key(&key) && !upsert {
        return error(
            StatusCode::CONFLICT,
            "Duplicate",
            "The resource already exists",
        );
    }
    objects.insert(key.clone(), body.to_vec());
    Json(json!({"Key": format!("{bucket}/{key}"), "Id": "00000000-0000-0000-0000-000000000000"}))
        .into_response()
}

/// `POST /storage/v1/object/sign/{bucket}/{key}` `{expiresIn}`: a signed URL, relative to
/// the Storage API, for an object that exists.
async fn sign(
    State(inner): State<Arc<Inner>>,
    Path((bucket, key)): Path<(String, String)>,
    headers: HeaderMap,
    Json(body): Json<serde_json::Value>,
) -> Response {
    if !authorized(&inner, &headers) {
        return error(StatusCode::FORBIDDEN, "Unauthorized", "invalid signature");
    }
    if !crate::sync::lock(&inner.objects).contains_key(&key) {
        return error(StatusCode::NOT_FOUND, "not_found", "Object not found");
    }
    let expires = body["expiresIn"].as_u64().unwrap_or(0);
    Json(json!({
        "signedURL": format!("/object/sign/{bucket}/{key}?token=fake-jwt-{expires}")
    }))
    .into_response()
}
