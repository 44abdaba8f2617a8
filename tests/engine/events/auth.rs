//! Who may open which stream: the owner only (another user's generation answers exactly
//! like a missing one), tokens limited by `gen`, expired and forged tokens (wrong key,
//! `alg: none`, HS256 signed with the Supabase public key) refused with 401, Supabase ES256
//! tokens verified against a JWKS served on loopback, CORS for the allowed origin only, and
//! events off without a verifier.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use genq::dev::sse::{mint_token, SseReader};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use ring::signature::{EcdsaKeyPair, KeyPair, ECDSA_P256_SHA256_FIXED_SIGNING};
use serde_json::{json, Value};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use uuid::Uuid;

use super::{next, Live, SECRET};
use crate::common::generation::GenEnv;
use crate::common::{RunningBinary, TestDb};

const STUDIO: &str = "https://studio.example.com";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// An ES256 key pair as a Supabase project holds it: the private key (PKCS#8) and its JWK.
struct SupabaseKey {
    pkcs8: Vec<u8>,
    jwk: Value,
    public: Vec<u8>,
}

impl SupabaseKey {
    fn generate(kid: &str) -> Self {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng)
            .unwrap();
        let public = pair.public_key().as_ref().to_vec();
        let jwk = json!({"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": kid,
            "x": b64(&public[1..33]), "y": b64(&public[33..65])});
        Self {
            pkcs8: pkcs8.as_ref().to_vec(),
            jwk,
            public,
        }
    }

    fn sign(&self, kid: &str, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid.into());
        jsonwebtoken::encode(&header, claims, &EncodingKey::from_ec_der(&self.pkcs8)).unwrap()
    }
}

/// Serves `{"keys": [jwk]}` on loopback, counting fetches.
async fn serve_jwks(jwk: Value) -> (String, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let app = axum::Router::new().route(
        "/auth/v1/.well-known/jwks.json",
        axum::routing::get(move || {
            let jwks = json!({"keys": [jwk.clone()]});
            counted.fetch_add(1, Ordering::SeqCst);
            async move { axum::Json(jwks) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/auth/v1/.well-known/jwks.json"), hits)
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

async fn status_and_body(response: reqwest::Response) -> (StatusCode, String) {
    (response.status(), response.text().await.unwrap())
}

#[sqlx::test(migrations = false)]
async fn only_the_owner_reads_and_bad_tokens_are_refused(po: PgPoolOptions, co: PgConnectOptions) {
    let key = SupabaseKey::generate("key-1");
    let (jwks_url, fetches) = serve_jwks(key.jwk.clone()).await;
    let env = GenEnv::new(TestDb::new(po, co).await, Duration::from_secs(600)).await;
    let live = Live::start(
        env,
        &[
            ("GENQ_EVENTS_SUPABASE_JWKS_URL", jwks_url.as_str()),
            ("GENQ_EVENTS_ALLOWED_ORIGINS", STUDIO),
        ],
    )
    .await;
    let id = live.insert_generation("alice").await;
    let path = format!("/v1/generations/{id}/events");

    // The owner reads it; the token may sit in the Authorization header too.
    let response = live
        .daemon
        .http
        .get(format!("{}{path}", live.public))
        .bearer_auth(live.token("alice"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let mut reader = SseReader::new(response);
    assert_eq!(
        next(&mut reader, "alice's generation").await.json()["id"],
        id.to_string()
    );

    // Someone else's generation, a missing one, a malformed id and one the token does not
    // list: one and the same answer.
    let bob = live.token("bob");
    let missing = format!("/v1/generations/{}/events", Uuid::new_v4());
    let limited = mint_token(SECRET.as_bytes(), "alice", Some(&[Uuid::new_v4()]), 60);
    let answers = [
        status_and_body(live.get(&path, &bob, None).await).await,
        status_and_body(live.get(&missing, &bob, None).await).await,
        status_and_body(live.get("/v1/generations/nope/events", &bob, None).await).await,
        status_and_body(live.get(&path, &limited, None).await).await,
    ];
    for answer in &answers {
        assert_eq!(answer, &answers[0]);
    }
    assert_eq!(answers[0].0, StatusCode::NOT_FOUND);
    // A token listing the generation reads it.
    let listed = mint_token(SECRET.as_bytes(), "alice", Some(&[id]), 60);
    assert_eq!(
        live.get(&path, &listed, None).await.status(),
        StatusCode::OK
    );

    // No token: 401 with a Bearer challenge.
    let none = live
        .daemon
        .http
        .get(format!("{}{path}", live.public))
        .send()
        .await
        .unwrap();
    assert_eq!(none.status(), StatusCode::UNAUTHORIZED);
    assert!(none.headers()["www-authenticate"]
        .to_str()
        .unwrap()
        .starts_with("Bearer"));

    // Expired, wrong key, alg none, HS256 signed with the public key, Supabase tokens with
    // the wrong audience, an unknown kid, or signed by another key under the known kid.
    let hs = |claims: Value, secret: &[u8]| {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(secret),
        )
        .unwrap()
    };
    let alice = |aud: &str| json!({"sub": "alice", "exp": now() + 60, "aud": aud});
    let impostor = SupabaseKey::generate("key-1");
    let forged = [
        mint_token(SECRET.as_bytes(), "alice", None, -3600),
        mint_token(b"not-the-shared-secret", "alice", None, 60),
        format!(
            "{}.{}.",
            b64(br#"{"alg":"none","typ":"JWT"}"#),
            b64(alice("authenticated").to_string().as_bytes())
        ),
        hs(alice("authenticated"), &key.public),
        hs(alice("authenticated"), key.jwk.to_string().as_bytes()),
        key.sign("key-1", &alice("anon")),
        key.sign(
            "key-1",
            &json!({"sub": "alice", "exp": now() - 3600, "aud": "authenticated"}),
        ),
        key.sign("key-unknown", &alice("authenticated")),
        impostor.sign("key-1", &alice("authenticated")),
        "garbage".to_string(),
    ];
    for token in &forged {
        let response = live.get(&path, token, None).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{token}");
        let challenge = response.headers()["www-authenticate"].to_str().unwrap();
        assert!(
            challenge.contains(r#"error="invalid_token""#),
            "{challenge}"
        );
        let body = response.text().await.unwrap();
        assert!(!body.contains(token.as_str()), "the token is not echoed");
    }
    // The unknown kid made at most one early refetch (rate-limited), after the first fetch.
    assert!(fetches.load(Ordering::SeqCst) <= 2, "{fetches:?}");

    // A Supabase user's own ES256 access token opens their stream.
    let supabase = key.sign("key-1", &alice("authenticated"));
    let mut reader = live.stream(&path, &supabase, None).await;
    assert_eq!(
        next(&mut reader, "via Supabase").await.json()["user_id"],
        "alice"
    );
    let mut user = live.stream("/v1/users/me/events", &supabase, None).await;
    assert_eq!(
        next(&mut user, "alice's stream").await.json()["id"],
        id.to_string()
    );

    // CORS: the studio's origin may open streams (preflight and the stream itself); others
    // get no CORS headers, so their pages cannot read the answer.
    let preflight = |origin: &'static str| {
        live.daemon
            .http
            .request(reqwest::Method::OPTIONS, format!("{}{path}", live.public))
            .header("origin", origin)
            .header("access-control-request-method", "GET")
            .header(
                "access-control-request-headers",
                "authorization, last-event-id",
            )
            .send()
    };
    let allowed = preflight(STUDIO).await.unwrap();
    assert!(allowed.status().is_success(), "{}", allowed.status());
    assert_eq!(allowed.headers()["access-control-allow-origin"], STUDIO);
    assert!(allowed
        .headers()
        .get("access-control-allow-credentials")
        .is_none());
    let refused = preflight("https://evil.example.com").await.unwrap();
    assert!(refused
        .headers()
        .get("access-control-allow-origin")
        .is_none());
    let stream = live
        .daemon
        .http
        .get(format!("{}{path}", live.public))
        .query(&[("token", live.token("alice"))])
        .header("origin", STUDIO)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), StatusCode::OK);
    assert_eq!(stream.headers()["access-control-allow-origin"], STUDIO);
}

#[sqlx::test(migrations = false)]
async fn events_are_off_without_a_token_verifier(po: PgPoolOptions, co: PgConnectOptions) {
    let db = TestDb::new(po, co).await;
    let daemon = RunningBinary::start(&db.url().await, &[]).await;
    let token = mint_token(SECRET.as_bytes(), "alice", None, 60);
    for path in [
        "/v1/users/me/events",
        "/v1/generations/00000000-0000-0000-0000-000000000000/events",
    ] {
        let response = daemon
            .http
            .get(daemon.url(path))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
    }
}
