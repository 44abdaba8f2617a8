//! The operator console: who may see it (login, sessions, the public listener), CSRF and
//! the read-only role on every action, the audit, and the pages' filters and bad inputs.
//! The browser end-to-end run is in `browser.rs`.

mod actions;
mod browser;
mod pages;

use reqwest::StatusCode;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::common::console::{audit, location, Browser, ConsoleEnv, ADMIN, READONLY};
use crate::common::TestDb;

/// Every action the console serves, with a valid form.
pub const ACTIONS: &[(&str, &[(&str, &str)])] = &[
    ("/console/queues/default/pause", &[("reason", "x")]),
    ("/console/queues/default/resume", &[]),
    ("/console/queues/default/drain", &[]),
    ("/console/queues/default/cap", &[("max_running", "3")]),
    ("/console/jobs/1/retry", &[]),
    ("/console/jobs/1/cancel", &[]),
    (
        "/console/jobs/bulk",
        &[("action", "retry"), ("state", "discarded")],
    ),
    (
        "/console/generations/00000000-0000-0000-0000-000000000001/cancel",
        &[],
    ),
    ("/console/providers/fal/open", &[("minutes", "10")]),
    ("/console/providers/fal/close", &[]),
    ("/console/webhooks/1/redrive", &[]),
];

/// Every page, for the auth checks.
const PAGES: &[&str] = &[
    "/console/",
    "/console/jobs",
    "/console/jobs/1",
    "/console/jobs/bulk?action=retry&state=discarded",
    "/console/queues/default/drain",
    "/console/generations",
    "/console/audit",
    "/console/providers",
    "/console/fairness",
    "/console/credits?user=u1&check=1",
    "/console/privacy?check=1",
    "/console/webhooks?show=orphans",
];

#[sqlx::test(migrations = false)]
async fn pages_and_actions_need_a_session(po: PgPoolOptions, co: PgConnectOptions) {
    let env = ConsoleEnv::start(TestDb::new(po, co).await).await;
    let anon = env.anonymous();
    for path in PAGES {
        let r = anon.get(path).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "GET {path}");
        assert_eq!(location(&r), "/console/login", "GET {path}");
    }
    for (path, fields) in ACTIONS {
        let r = anon.post(path, fields).await;
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "POST {path}");
        assert_eq!(location(&r), "/console/login");
    }
    // A made-up cookie is no session either.
    let mut forged = env.anonymous();
    forged.cookie = Some("genq_console=00ff".into());
    assert_eq!(
        forged.get("/console/").await.status(),
        StatusCode::SEE_OTHER
    );
    let login = anon.get("/console/login").await;
    assert_eq!(login.status(), StatusCode::OK);
    assert!(login.text().await.unwrap().contains("name=\"token\""));
    let paused: i64 = sqlx::query_scalar("SELECT count(*) FROM genq.queues WHERE paused")
        .fetch_one(&env.db.pool)
        .await
        .unwrap();
    assert_eq!(paused, 0, "no anonymous action took effect");
    env.stop().await;
}

#[sqlx::test(migrations = false)]
async fn a_wrong_token_is_refused_and_audited(po: PgPoolOptions, co: PgConnectOptions) {
    let env = ConsoleEnv::start(TestDb::new(po, co).await).await;
    let mut b = env.anonymous();
    for wrong in ["", "console-admin-token-012345678", "nope"] {
        let r = b.login(wrong).await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "token {wrong:?}");
        assert!(r.headers().get("set-cookie").is_none());
        assert!(r.text().await.unwrap().contains("wrong token"));
    }
    let rows = audit(&env.db).await;
    assert_eq!(rows.len(), 3);
    assert!(rows
        .iter()
        .all(|(actor, action, _, _)| actor == "anonymous" && action == "login.refused"));
    env.stop().await;
}

#[sqlx::test(migrations = false)]
async fn the_session_cookie_is_httponly_strict_and_secure_behind_tls(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let env = ConsoleEnv::start(TestDb::new(po, co).await).await;
    let b = Browser::new(&env.base());
    let plain = b
        .http
        .post(format!("{}/console/login", env.base()))
        .form(&[("token", ADMIN)])
        .send()
        .await
        .unwrap();
    let cookie = plain.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.starts_with("genq_console="), "{cookie}");
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/console"] {
        assert!(cookie.contains(flag), "{cookie} lacks {flag}");
    }
    assert!(!cookie.contains("Secure"), "plain HTTP: {cookie}");
    let tls = b
        .http
        .post(format!("{}/console/login", env.base()))
        .header("x-forwarded-proto", "https")
        .form(&[("token", ADMIN)])
        .send()
        .await
        .unwrap();
    assert!(tls.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("; Secure"));
    // The id is stored hashed: the cookie's value is not in the table.
    let id = cookie
        .split(';')
        .next()
        .unwrap()
        .trim_start_matches("genq_console=");
    let stored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM genq.console_sessions WHERE encode(id_hash, 'hex') = $1",
    )
    .bind(id)
    .fetch_one(&env.db.pool)
    .await
    .unwrap();
    assert_eq!(stored, 0);
    env.stop().await;
}

#[sqlx::test(migrations = false)]
async fn the_secure_cookie_setting_forces_secure(po: PgPoolOptions, co: PgConnectOptions) {
    let env = ConsoleEnv::with(TestDb::new(po, co).await, Some(ADMIN), None, true).await;
    let mut b = env.anonymous();
    let r = b.login(ADMIN).await;
    assert!(r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("; Secure"));
    env.stop().await;
}

#[sqlx::test(migrations = false)]
async fn csrf_missing_or_wrong_is_refused(po: PgPoolOptions, co: PgConnectOptions) {
    let env = ConsoleEnv::start(TestDb::new(po, co).await).await;
    let admin = env.login(ADMIN).await;
    // The real token with its last character changed (to one it is not: a token ending in
    // "0" made "wrong" the real one, 1 time in 16).
    let (head, last) = admin.csrf.split_at(admin.csrf.len() - 1);
    let wrong = format!("{head}{}", if last == "0" { "1" } else { "0" });
    for (path, fields) in ACTIONS {
        let missing = admin.post_raw(path, fields).await;
        assert_eq!(
            missing.status(),
            StatusCode::FORBIDDEN,
            "POST {path} without CSRF"
        );
        assert!(missing.text().await.unwrap().contains("CSRF"));
        let mut with_wrong: Vec<(&str, &str)> = vec![("csrf", wrong.as_str())];
        with_wrong.extend_from_slice(fields);
        let r = admin.post_raw(path, &with_wrong).await;
        assert_eq!(
            r.status(),
            StatusCode::FORBIDDEN,
            "POST {path} with a wrong CSRF"
        );
    }
    // Another session's token is wrong for this one.
    let other = env.login(ADMIN).await;
    let mut crossed = admin_clone(&admin);
    crossed.csrf = other.csrf.clone();
    assert_eq!(
        crossed
            .post("/console/queues/default/pause", &[])
            .await
            .status(),
        StatusCode::FORBIDDEN
    );
    let paused: i64 = sqlx::query_scalar("SELECT count(*) FROM genq.queues WHERE paused")
        .fetch_one(&env.db.pool)
        .await
        .unwrap();
    assert_eq!(paused, 0);
    let actions: Vec<String> = audit(&env.db).await.into_iter().map(|r| r.1).collect();
    assert_eq!(actions, ["login", "login"], "refused posts act on nothing");
    env.stop().await;
}

fn admin_clone(b: &Browser) -> Browser {
    let mut c = Browser::new(&b.base);
    c.cookie = b.cookie.clone();
    c.csrf = b.csrf.clone();
    c
}

#[sqlx::test(migrations = false)]
async fn the_readonly_token_sees_everything_and_every_action_is_refused(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let env = ConsoleEnv::start(TestDb::new(po, co).await).await;
    let id = env
        .db
        .enqueue(genq::NewJob::new("console.test", serde_json::json!({})).queue("elsewhere"))
        .await;
    let ro = env.login(READONLY).await;
    let overview = ro.page("/console/").await;
    assert!(overview.contains("readonly"));
    assert!(overview.contains("default"), "queues are listed");
    assert!(
        !overview.contains("/pause\"") && !overview.contains(">Drain<"),
        "no action buttons for a read-only session"
    );
    let job = ro.page(&format!("/console/jobs/{id}")).await;
    assert!(!job.contains("/cancel\""), "no cancel button");
    for (path, fields) in ACTIONS {
        let r = ro.post(path, fields).await;
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "POST {path}");
        assert!(r.text().await.unwrap().contains("read-only"));
    }
    assert_eq!(
        env.db.job(id).await.state,
        genq::JobState::Available,
        "the job was not cancelled"
    );
    // Logging out is allowed.
    let out = ro.post("/console/logout", &[]).await;
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    assert_eq!(ro.get("/console/").await.status(), StatusCode::SEE_OTHER);
    let rows = audit(&env.db).await;
    let actions: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
    assert_eq!(actions, ["login", "logout"]);
    assert!(rows[0].0.starts_with("readonly:"), "{rows:?}");
    env.stop().await;
}

#[sqlx::test(migrations = false)]
async fn the_console_is_absent_on_the_public_listener(po: PgPoolOptions, co: PgConnectOptions) {
    let env = ConsoleEnv::start(TestDb::new(po, co).await).await;
    let public = Browser::new(&env.public_base());
    for path in ["/console/login", "/console/", "/console/assets/console.css"] {
        assert_eq!(
            public.get(path).await.status(),
            StatusCode::NOT_FOUND,
            "{path}"
        );
    }
    let mut p = Browser::new(&env.public_base());
    assert_eq!(p.login(ADMIN).await.status(), StatusCode::NOT_FOUND);
    // ... while the internal one serves it, with its embedded stylesheet.
    let css = env.anonymous().get("/console/assets/console.css").await;
    assert_eq!(css.status(), StatusCode::OK);
    assert!(css.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/css"));
    env.stop().await;
}

#[sqlx::test(migrations = false)]
async fn without_tokens_the_console_is_off(po: PgPoolOptions, co: PgConnectOptions) {
    let env = ConsoleEnv::with(TestDb::new(po, co).await, None, None, false).await;
    let mut b = env.anonymous();
    assert_eq!(
        b.get("/console/login").await.status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(b.get("/console/").await.status(), StatusCode::NOT_FOUND);
    assert_eq!(b.login("").await.status(), StatusCode::NOT_FOUND);
    env.stop().await;
}

#[sqlx::test(migrations = false)]
async fn logout_ends_the_session(po: PgPoolOptions, co: PgConnectOptions) {
    let env = ConsoleEnv::start(TestDb::new(po, co).await).await;
    let admin = env.login(ADMIN).await;
    let r = admin.post("/console/logout", &[]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(r.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .contains("Max-Age=0"));
    assert_eq!(admin.get("/console/").await.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        admin
            .post("/console/queues/default/pause", &[])
            .await
            .status(),
        StatusCode::SEE_OTHER
    );
    let sessions: i64 = sqlx::query_scalar("SELECT count(*) FROM genq.console_sessions")
        .fetch_one(&env.db.pool)
        .await
        .unwrap();
    assert_eq!(sessions, 0);
    env.stop().await;
}
