//! Console fixtures: the internal and public listeners of an in-process daemon with the
//! admin and read-only tokens, and a logged-in client that carries the session cookie and
//! the CSRF token like a browser would.

use genq::http::console::ConsoleSettings;
use genq::http::{self, AdminToken, HttpServer, HttpState, Routes};
use genq::{DaemonHandle, Registry};
use reqwest::redirect::Policy;
use reqwest::{Response, StatusCode};

use super::{fast_config, TestDb};

pub const ADMIN: &str = "console-admin-token-0123456789";
pub const READONLY: &str = "console-readonly-token-0123456789";

/// A daemon and its two listeners.
pub struct ConsoleEnv {
    pub db: TestDb,
    pub daemon: Option<DaemonHandle>,
    pub internal: Option<HttpServer>,
    pub public: Option<HttpServer>,
}

impl ConsoleEnv {
    /// Both tokens configured.
    pub async fn start(db: TestDb) -> Self {
        Self::with(db, Some(ADMIN), Some(READONLY), false).await
    }

    pub async fn with(
        db: TestDb,
        admin: Option<&str>,
        readonly: Option<&str>,
        secure_cookie: bool,
    ) -> Self {
        let daemon = db.daemon(fast_config(), Registry::new());
        let state = HttpState {
            daemon: daemon.control(),
            admin_token: admin.and_then(AdminToken::new),
            webhooks: None,
            events: None,
            console: ConsoleSettings {
                readonly_token: readonly.and_then(AdminToken::new),
                secure_cookie,
            },
        };
        let internal = http::serve_routes("127.0.0.1:0", state.clone(), Routes::Internal)
            .await
            .unwrap();
        let public = http::serve_routes("127.0.0.1:0", state, Routes::Public)
            .await
            .unwrap();
        Self {
            db,
            daemon: Some(daemon),
            internal: Some(internal),
            public: Some(public),
        }
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.internal.as_ref().unwrap().addr)
    }

    pub fn public_base(&self) -> String {
        format!("http://{}", self.public.as_ref().unwrap().addr)
    }

    /// A client that is not logged in.
    pub fn anonymous(&self) -> Browser {
        Browser::new(&self.base())
    }

    /// A client logged in with `token`.
    pub async fn login(&self, token: &str) -> Browser {
        let mut b = self.anonymous();
        let r = b.login(token).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "login with a good token");
        b.refresh_csrf().await;
        b
    }

    pub async fn stop(mut self) {
        for s in [self.internal.take(), self.public.take()]
            .into_iter()
            .flatten()
        {
            s.stop().await;
        }
        if let Some(d) = self.daemon.take() {
            d.shutdown().await;
        }
    }
}

/// A minimal browser: no redirects followed, one cookie, the page's CSRF token.
pub struct Browser {
    pub base: String,
    pub http: reqwest::Client,
    pub cookie: Option<String>,
    pub csrf: String,
}

impl Browser {
    pub fn new(base: &str) -> Self {
        Self {
            base: base.to_string(),
            http: reqwest::Client::builder()
                .redirect(Policy::none())
                .build()
                .unwrap(),
            cookie: None,
            csrf: String::new(),
        }
    }

    /// Posts the login form; keeps the cookie it sets.
    pub async fn login(&mut self, token: &str) -> Response {
        let r = self
            .http
            .post(format!("{}/console/login", self.base))
            .form(&[("token", token)])
            .send()
            .await
            .unwrap();
        if let Some(c) = r.headers().get("set-cookie") {
            let c = c.to_str().unwrap();
            self.cookie = Some(c.split(';').next().unwrap().to_string());
        }
        r
    }

    pub async fn get(&self, path: &str) -> Response {
        let mut req = self.http.get(format!("{}{path}", self.base));
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c);
        }
        req.send().await.unwrap()
    }

    /// A page's body, asserting 200.
    pub async fn page(&self, path: &str) -> String {
        let r = self.get(path).await;
        assert_eq!(r.status(), StatusCode::OK, "GET {path}");
        r.text().await.unwrap()
    }

    /// Posts `fields` plus the session's CSRF token.
    pub async fn post(&self, path: &str, fields: &[(&str, &str)]) -> Response {
        let mut all: Vec<(&str, &str)> = vec![("csrf", self.csrf.as_str())];
        all.extend_from_slice(fields);
        self.post_raw(path, &all).await
    }

    /// Posts exactly `fields` (no CSRF token added).
    pub async fn post_raw(&self, path: &str, fields: &[(&str, &str)]) -> Response {
        let mut req = self.http.post(format!("{}{path}", self.base)).form(fields);
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c);
        }
        req.send().await.unwrap()
    }

    /// Reads the CSRF token from the overview's logout form.
    pub async fn refresh_csrf(&mut self) {
        let page = self.page("/console/").await;
        self.csrf = csrf_of(&page).expect("a CSRF field on the overview");
    }
}

/// The value of the first `name="csrf"` field of a page.
pub fn csrf_of(page: &str) -> Option<String> {
    let at = page.find("name=\"csrf\" value=\"")? + "name=\"csrf\" value=\"".len();
    let rest = &page[at..];
    Some(rest[..rest.find('"')?].to_string())
}

/// Where a redirect points.
pub fn location(r: &Response) -> String {
    r.headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default()
}

/// Audit rows (action, target, affected) oldest first.
pub async fn audit(db: &TestDb) -> Vec<(String, String, Option<String>, i64)> {
    sqlx::query_as(
        "SELECT actor, action, target, affected_count FROM genq.console_audit ORDER BY id",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap()
}
