//! The console in a real headless browser: Debian's chromium driven through chromedriver
//! by fantoccini, against the real binary (with the fake provider). Logs in, sees a paused
//! queue and resumes it, watches a job finish, retries a discarded job, cancels a rendering
//! generation, and saves a screenshot of each page to `target/console-screenshots/`.
//! Without chromedriver the test is skipped with a printed reason, except in CI
//! (`CI=true`), where its absence fails.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use genq::credits::GenerationState;
use genq::{JobState, NewJob};
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::common::console::ADMIN;
use crate::common::generation::GenEnv;
use crate::common::{free_port, wait_until, RunningBinary, TestDb};

fn chromedriver() -> Option<PathBuf> {
    let found = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists());
    if found.is_none() {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        assert!(
            !ci,
            "CI is set but chromedriver is missing: apt-get install -y chromium chromium-driver"
        );
        eprintln!("SKIPPED the_console_works_in_a_real_browser: no chromedriver (apt-get install -y chromium chromium-driver)");
    }
    found
}

struct Driver(Child);

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn browser(driver: &PathBuf) -> (Driver, Client) {
    let port = free_port();
    let child = Command::new(driver)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start chromedriver");
    let driver = Driver(child);
    let url = format!("http://127.0.0.1:{port}");
    wait_until(
        Duration::from_secs(20),
        "chromedriver to listen",
        || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        },
    )
    .await;
    let mut caps = serde_json::Map::new();
    let mut chrome = json!({
        "args": ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                 "--window-size=1280,1000"]
    });
    if std::path::Path::new("/usr/bin/chromium").exists() {
        chrome["binary"] = json!("/usr/bin/chromium");
    }
    caps.insert("goog:chromeOptions".into(), chrome);
    // chromedriver is on loopback: plain HTTP, no TLS stack (and no second rustls provider).
    let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&url)
        .await
        .expect("a chromedriver session");
    (driver, client)
}

struct Shots {
    dir: PathBuf,
    n: u32,
}

impl Shots {
    fn new() -> Self {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
        let dir = target.join("console-screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        Self { dir, n: 0 }
    }

    async fn take(&mut self, c: &Client, name: &str) {
        self.n += 1;
        let png = c.screenshot().await.expect("screenshot");
        let path = self.dir.join(format!("{:02}-{name}.png", self.n));
        std::fs::write(&path, png).unwrap();
        eprintln!("screenshot: {}", path.display());
    }
}

async fn text(c: &Client) -> String {
    c.find(Locator::Css("body"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Submits the form posting to `action` (its one button) and waits for the action's notice.
async fn press(c: &Client, action: &str) {
    c.find(Locator::Css(&format!("form[action='{action}'] button")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Css("div.notice"))
        .await
        .unwrap();
}

/// Reloads `url` until the element `#state` reads `want`.
async fn wait_for_state(c: &Client, url: &str, want: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        c.goto(url).await.unwrap();
        let state = c
            .find(Locator::Id("state"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if state.contains(want) {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{url} never showed {want} (last: {state})"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

#[sqlx::test(migrations = false)]
async fn the_console_works_in_a_real_browser(po: PgPoolOptions, co: PgConnectOptions) {
    let Some(driver_path) = chromedriver() else {
        return;
    };
    let env = GenEnv::new(TestDb::new(po, co).await, Duration::from_secs(60)).await;
    let db = &env.db;
    let dir = tempfile::tempdir().unwrap();
    let config_path = dir.path().join("genq.toml");
    std::fs::write(&config_path, toml::to_string(&env.config).unwrap()).unwrap();
    let url = db.url().await;
    let config_env = config_path.to_string_lossy().into_owned();
    let daemon = RunningBinary::start(
        &url,
        &[
            ("GENQ_ADMIN_TOKEN", ADMIN),
            ("GENQ_CONFIG", config_env.as_str()),
        ],
    )
    .await;
    // The scene: a paused queue holding a job, a discarded job, a rendering generation.
    genq::queue::queue_control::pause(
        &db.pool,
        genq::queue::queue_control::Target::One("default"),
        Some("e2e maintenance"),
    )
    .await
    .unwrap();
    let waiting = db
        .enqueue(NewJob::new("noop", json!({"e2e": "waiting"})))
        .await;
    let discarded = db
        .enqueue(NewJob::new("noop", json!({"e2e": "discarded"})))
        .await;
    sqlx::query("UPDATE genq.jobs SET state = 'discarded', finished_at = now(), errors = '[{\"error\": \"e2e: made to fail\", \"attempt\": 1}]' WHERE id = $1")
        .bind(discarded)
        .execute(&db.pool)
        .await
        .unwrap();
    env.grant("e2e-user", 50).await;
    let generation = env.request("e2e-user", "byteplus", 10).await;
    wait_until(
        Duration::from_secs(20),
        "the generation to be submitted",
        || async { env.generation(generation).await.state == GenerationState::Submitted },
    )
    .await;

    let (_driver, c) = browser(&driver_path).await;
    let mut shots = Shots::new();
    let base = daemon.base.clone();

    // Log in.
    c.goto(&format!("{base}/console/")).await.unwrap();
    assert!(c
        .current_url()
        .await
        .unwrap()
        .path()
        .ends_with("/console/login"));
    shots.take(&c, "login").await;
    c.find(Locator::Id("token"))
        .await
        .unwrap()
        .send_keys(ADMIN)
        .await
        .unwrap();
    c.find(Locator::Css("form[action='/console/login'] button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .at_most(Duration::from_secs(20))
        .for_element(Locator::Id("queue-default"))
        .await
        .unwrap();

    // See the paused queue, resume it.
    let row = c
        .find(Locator::Id("queue-default"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        row.contains("paused") && row.contains("e2e maintenance"),
        "{row}"
    );
    shots.take(&c, "overview-paused").await;
    press(&c, "/console/queues/default/resume").await;
    assert!(text(&c).await.contains("queue default resumed"));
    shots.take(&c, "overview-resumed").await;

    // Watch the waiting job finish.
    wait_for_state(&c, &format!("{base}/console/jobs/{waiting}"), "completed").await;
    shots.take(&c, "job-completed").await;

    // Retry the discarded job from the filtered list.
    c.goto(&format!("{base}/console/jobs?state=discarded"))
        .await
        .unwrap();
    shots.take(&c, "jobs-discarded").await;
    c.find(Locator::LinkText(&discarded.to_string()))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert!(text(&c).await.contains("e2e: made to fail"));
    press(&c, &format!("/console/jobs/{discarded}/retry")).await;
    wait_for_state(&c, &format!("{base}/console/jobs/{discarded}"), "completed").await;
    shots.take(&c, "job-retried").await;
    assert_eq!(db.job(discarded).await.state, JobState::Completed);

    // Cancel the rendering generation.
    c.goto(&format!("{base}/console/generations"))
        .await
        .unwrap();
    shots.take(&c, "generations").await;
    c.goto(&format!("{base}/console/generations/{generation}"))
        .await
        .unwrap();
    press(&c, &format!("/console/generations/{generation}/cancel")).await;
    wait_for_state(
        &c,
        &format!("{base}/console/generations/{generation}"),
        "cancelled",
    )
    .await;
    assert!(text(&c).await.contains("release"), "the hold was released");
    shots.take(&c, "generation-cancelled").await;

    // The audit shows every action.
    c.goto(&format!("{base}/console/audit")).await.unwrap();
    let audit = text(&c).await;
    for action in ["login", "queue.resume", "job.retry", "generation.cancel"] {
        assert!(audit.contains(action), "audit lacks {action}");
    }
    shots.take(&c, "audit").await;
    c.goto(&format!("{base}/console/queues/default/drain"))
        .await
        .unwrap();
    shots.take(&c, "drain").await;

    c.close().await.unwrap();
    assert!(daemon.stop().await, "the daemon exits cleanly");
    env.assert_ledger_clean().await;
}
