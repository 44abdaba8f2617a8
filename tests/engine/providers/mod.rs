//! Scenarios: providers. Each adapter against the fake provider in its own dialect: the
//! happy path, each way a provider fails, cancels, webhooks, and the ambiguous submit that
//! must be found again instead of paid twice. No database.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use genq::dev::fake_provider::{self as fake, FakeConfig, FakeOp, FakeServer, FakeStats};
use genq::providers::{
    CancelOutcome, Provider, ProviderError, ProviderKind, Providers, ProvidersConfig, RemoteStatus,
    SubmitRequest, Submitted,
};
use serde_json::{json, Value};
use uuid::Uuid;

mod failures;
mod happy_path;
mod reconcile;
mod webhooks;

/// No test reads a real key: every adapter looks in this (unset) variable.
const NO_KEY_VAR: &str = "GENQ_TEST_PROVIDER_KEY_THAT_IS_NEVER_SET";

struct Setup {
    fake: FakeServer,
    providers: Providers,
    http: reqwest::Client,
}

impl Setup {
    fn get(&self, kind: ProviderKind) -> Arc<dyn Provider> {
        self.providers.get(kind)
    }

    /// Scripts a fault through the control API, as an operator or a benchmark would.
    async fn fault(&self, spec: Value) {
        let r = self
            .http
            .post(format!("{}/_fake/faults", self.fake.url()))
            .json(&spec)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201, "{}", r.text().await.unwrap());
    }

    async fn stats(&self) -> FakeStats {
        self.http
            .get(format!("{}/_fake/stats", self.fake.url()))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }
}

fn providers_config(fake: &FakeServer, timeout: Duration) -> ProvidersConfig {
    let mut cfg = fake.providers_config();
    cfg.request_timeout = timeout;
    for kind in ProviderKind::ALL {
        cfg.endpoint_mut(kind).api_key_env = NO_KEY_VAR.into();
    }
    cfg
}

async fn setup_with(cfg: FakeConfig, timeout: Duration) -> Setup {
    let fake = fake::serve("127.0.0.1:0".parse().unwrap(), cfg)
        .await
        .unwrap();
    let providers = Providers::from_config(&providers_config(&fake, timeout)).unwrap();
    Setup {
        fake,
        providers,
        http: reqwest::Client::new(),
    }
}

/// Jobs take 400 ms (queued for the first 100 ms); calls time out after 2 s.
async fn setup() -> Setup {
    setup_with(render(Duration::from_millis(400)), Duration::from_secs(2)).await
}

/// Jobs take 1 s (queued for the first 250 ms), for checks that must catch a phase.
async fn setup_slow() -> Setup {
    setup_with(render(Duration::from_secs(1)), Duration::from_secs(2)).await
}

fn render(render_time: Duration) -> FakeConfig {
    FakeConfig {
        render_time,
        ..FakeConfig::default()
    }
}

fn model(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::Fal => "fal-ai/kling-video/v2.1/master/image-to-video",
        ProviderKind::BytePlus => "seedance-1-0-pro-250528",
        ProviderKind::Replicate => "kwaivgi/kling-v2.1",
    }
}

/// A generation of `kind` whose callbacks go to a closed port (delivery fails quietly).
fn request(kind: ProviderKind) -> SubmitRequest {
    SubmitRequest {
        generation_id: Uuid::new_v4(),
        model: model(kind).into(),
        input: json!({"prompt": "a cat surfing", "image_url": "https://example.invalid/cat.png", "duration": "5"}),
        webhook_url: Some(format!("http://127.0.0.1:1/webhooks/{kind}")),
    }
}

/// Polls until the request ends; returns the end and every status seen on the way.
async fn run_to_end(p: &dyn Provider, s: &Submitted) -> (RemoteStatus, Vec<RemoteStatus>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut seen = Vec::new();
    loop {
        let status = p.status(&s.request_id, &s.meta).await.expect("status");
        if status.is_final() {
            return (status, seen);
        }
        seen.push(status);
        assert!(
            Instant::now() < deadline,
            "request {} never ended",
            s.request_id
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn is_permanent(r: &Result<Submitted, ProviderError>) -> bool {
    matches!(r, Err(ProviderError::Permanent { .. }))
}

/// A callback receiver: records (path and query, headers, body) of each POST.
async fn webhook_sink() -> (
    String,
    Arc<Mutex<Vec<(String, axum::http::HeaderMap, Value)>>>,
) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let app = axum::Router::new().fallback(
        move |uri: axum::http::Uri, headers: axum::http::HeaderMap, body: axum::body::Bytes| {
            let record = record.clone();
            async move {
                let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
                record
                    .lock()
                    .unwrap()
                    .push((uri.to_string(), headers, body));
                "ok"
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

/// One webhook as received: path and query, headers, raw body.
#[derive(Clone, Debug)]
struct Hook {
    uri: String,
    headers: axum::http::HeaderMap,
    body: bytes::Bytes,
}

impl Hook {
    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .unwrap_or_else(|| panic!("no {name} in {:?}", self.headers))
            .to_str()
            .unwrap()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A callback receiver on loopback keeping raw bodies, for signature checks.
async fn raw_webhook_sink() -> (String, Arc<Mutex<Vec<Hook>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let app = axum::Router::new().fallback(
        move |uri: axum::http::Uri, headers: axum::http::HeaderMap, body: bytes::Bytes| {
            let record = record.clone();
            async move {
                record.lock().unwrap().push(Hook {
                    uri: uri.to_string(),
                    headers,
                    body,
                });
                "ok"
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

/// Waits until `n` webhooks have arrived; returns them all.
async fn hooks(seen: &Arc<Mutex<Vec<Hook>>>, n: usize) -> Vec<Hook> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = seen.lock().unwrap().clone();
        if got.len() >= n {
            return got;
        }
        assert!(
            Instant::now() < deadline,
            "only {} webhooks of {n}",
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

impl Setup {
    /// Submits a job of `kind` whose webhook goes to `sink`; returns its request id.
    async fn submit_to(&self, kind: ProviderKind, sink: &str) -> String {
        let mut req = request(kind);
        req.webhook_url = Some(format!("{sink}/webhooks/{kind}"));
        self.get(kind).submit(&req).await.unwrap().request_id
    }

    /// POSTs to the control API, expecting 200; returns the answer.
    async fn control(&self, path: &str, body: Value) -> Value {
        let r = self
            .http
            .post(format!("{}{path}", self.fake.url()))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{path}");
        r.json().await.unwrap()
    }

    async fn replay(&self, request_id: &str, times: u32) {
        let answer = self
            .control(
                "/_fake/webhooks/replay",
                json!({"request_id": request_id, "times": times}),
            )
            .await;
        assert_eq!(answer["delivered"], times, "{answer}");
    }

    async fn get_json(&self, path: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path}", self.fake.url()))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }
}

/// The kid of the JWKS key that verifies this fal webhook, if any (as a receiver would:
/// ed25519 over request id, user id, timestamp and the body's SHA-256).
fn fal_verifying_kid(jwks: &Value, hook: &Hook) -> Option<String> {
    use base64::Engine as _;
    use ed25519_dalek::{Signature, Verifier, VerifyingKey};
    let message = genq::providers::signing::fal_message(
        hook.header("x-fal-webhook-request-id"),
        hook.header("x-fal-webhook-user-id"),
        hook.header("x-fal-webhook-timestamp"),
        &hook.body,
    );
    let signature: [u8; 64] = hex::decode(hook.header("x-fal-webhook-signature"))
        .unwrap()
        .try_into()
        .unwrap();
    let signature = Signature::from_bytes(&signature);
    jwks["keys"].as_array().unwrap().iter().find_map(|key| {
        assert_eq!(
            (key["kty"].as_str(), key["crv"].as_str()),
            (Some("OKP"), Some("Ed25519"))
        );
        let x: [u8; 32] = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(key["x"].as_str().unwrap())
            .unwrap()
            .try_into()
            .unwrap();
        let verifying = VerifyingKey::from_bytes(&x).unwrap();
        verifying
            .verify(&message, &signature)
            .is_ok()
            .then(|| key["kid"].as_str().unwrap().to_string())
    })
}

fn timestamp_age(hook: &Hook, header: &str) -> i64 {
    Utc::now().timestamp() - hook.header(header).parse::<i64>().unwrap()
}

/// Whether one of the `webhook-signature` entries is the Standard Webhooks signature of
/// this webhook under `secret`.
fn replicate_verifies(secret: &str, hook: &Hook) -> bool {
    let expected = genq::providers::signing::standard_webhooks_sign(
        secret,
        hook.header("webhook-id"),
        hook.header("webhook-timestamp"),
        &hook.body,
    );
    hook.header("webhook-signature")
        .split(' ')
        .any(|sig| sig == expected)
}
