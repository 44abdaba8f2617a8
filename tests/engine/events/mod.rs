//! Live events (Server-Sent Events on the public listener) through the real binary with a
//! real HTTP client: a generation's changes in order and its final state after reconnects
//! ([`stream`]), who may read what and CORS ([`auth`]), streams that outlive the LISTEN
//! connection ([`listen`]), and the lean HTTP path streams take ([`edge`]).

mod auth;
mod edge;
mod listen;
mod stream;

use std::time::Duration;

use genq::dev::sse::{mint_token, SseEvent, SseReader};
use reqwest::StatusCode;
use uuid::Uuid;

use crate::common::generation::GenEnv;
use crate::common::{free_port, wait_until, RunningBinary};

/// The secret the "backend" shares with genq.
pub const SECRET: &str = "events-test-secret-with-enough-bytes";

/// A daemon (the real binary) with events on its public listener, the fake provider and an
/// output store behind it.
pub struct Live {
    pub env: GenEnv,
    pub daemon: RunningBinary,
    /// `http://<public listener>`.
    pub public: String,
}

impl Live {
    /// `genq run` on `env`'s database and fake provider, with the events secret and `extra`.
    pub async fn start(env: GenEnv, extra: &[(&str, &str)]) -> Self {
        Self::start_on(env, None, extra).await
    }

    /// Like [`Live::start`], reaching the database at `url` instead of the test's own.
    pub async fn start_on(env: GenEnv, url: Option<String>, extra: &[(&str, &str)]) -> Self {
        let url = match url {
            Some(u) => u,
            None => env.db.url().await,
        };
        let public = format!("127.0.0.1:{}", free_port());
        let fal = env.fake.providers_config().fal.base_url;
        let dir = env.blobs.path().to_string_lossy().into_owned();
        let mut vars: Vec<(&str, &str)> = vec![
            ("GENQ_HTTP_PUBLIC_BIND", public.as_str()),
            ("GENQ_EVENTS_JWT_SECRET", SECRET),
            ("GENQ_PROVIDERS_FAL_BASE_URL", fal.as_str()),
            ("FAL_KEY", "fake-fal-key"),
            ("GENQ_PROVIDERS_WEBHOOK_BASE_URL", "http://127.0.0.1:9"),
            ("GENQ_PROVIDERS_REQUEST_TIMEOUT", "2s"),
            ("GENQ_OUTBOUND_ALLOW_PRIVATE", "127.0.0.0/8"),
            ("GENQ_STORAGE_LOCAL_DIR", dir.as_str()),
        ];
        vars.extend_from_slice(extra);
        let daemon = RunningBinary::start(&url, &vars).await;
        wait_until(Duration::from_secs(10), "the public listener", || async {
            tokio::net::TcpStream::connect(public.as_str())
                .await
                .is_ok()
        })
        .await;
        Self {
            env,
            daemon,
            public: format!("http://{public}"),
        }
    }

    /// A backend token for `user`, valid for a minute.
    pub fn token(&self, user: &str) -> String {
        mint_token(SECRET.as_bytes(), user, None, 60)
    }

    /// `GET path` on the public listener with `token` in the query and `Last-Event-ID`.
    pub async fn get(&self, path: &str, token: &str, last: Option<&str>) -> reqwest::Response {
        let mut request = self
            .daemon
            .http
            .get(format!("{}{path}", self.public))
            .query(&[("token", token)]);
        if let Some(last) = last {
            request = request.header("last-event-id", last);
        }
        request.send().await.unwrap()
    }

    /// An open event stream (asserting 200 and the content type).
    pub async fn stream(&self, path: &str, token: &str, last: Option<&str>) -> SseReader {
        let response = self.get(path, token, last).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(response.headers()["content-type"], "text/event-stream");
        SseReader::new(response)
    }

    /// A generation of `user` inserted directly (no job: nothing but the test moves it).
    pub async fn insert_generation(&self, user: &str) -> Uuid {
        sqlx::query_scalar(
            "INSERT INTO genq.generations (user_id, provider, model, input, cost, idempotency_key)
             VALUES ($1, 'fal', 'fal-ai/test', '{}', 0, gen_random_uuid()::text) RETURNING id",
        )
        .bind(user)
        .fetch_one(&self.env.db.pool)
        .await
        .unwrap()
    }
}

/// The next event, which must come within 30 s.
pub async fn next(reader: &mut SseReader, what: &str) -> SseEvent {
    reader
        .next_within(Duration::from_secs(30))
        .await
        .unwrap_or_else(|| panic!("no event: {what}"))
}

/// Events of `reader` until one of generation `id` in state `state`.
pub async fn until_state(reader: &mut SseReader, id: Uuid, state: &str) -> Vec<SseEvent> {
    let mut seen = Vec::new();
    loop {
        let event = next(reader, &format!("{id} reaching {state}; got {seen:?}")).await;
        let done = event.json()["id"] == id.to_string() && event.json()["state"] == state;
        seen.push(event);
        if done {
            return seen;
        }
    }
}
