//! Test fixtures: a migrated fresh database, a fast-ticking config, daemons, the real
//! binary, and waiting helpers, so each test reads as a scenario.
#![allow(dead_code)]

use std::collections::HashMap;
use std::future::Future;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use genq::config::{Config, QueueConfig};
use genq::queue::job_control::{self as control, JobRow};
use genq::{Daemon, DaemonHandle, JobState, NewJob, Registry};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

/// A fresh, migrated database (one per test, from `#[sqlx::test]`).
pub struct TestDb {
    pub pool: PgPool,
    pub options: PgConnectOptions,
}

impl TestDb {
    /// Migrates the test database and opens a small pool for the test's own queries.
    pub async fn new(pool_options: PgPoolOptions, options: PgConnectOptions) -> Self {
        let prefix = role_prefix_for(options.get_database().expect("a test database"));
        genq::db::migrate(&options, &prefix).await.expect("migrate");
        let pool = pool_options
            .max_connections(5)
            .connect_with(options.clone())
            .await
            .expect("connect");
        let db = Self { pool, options };
        if daemons_as_worker() {
            privileges::worker_login(&db).await;
        }
        db
    }

    /// Starts a daemon on this database: as the superuser the test connects as, or, with
    /// `GENQ_TEST_DAEMON_AS_WORKER=1`, as a login granted only the database's worker role
    /// (to show its grants suffice for every scenario).
    pub fn daemon(&self, config: Config, registry: Registry) -> DaemonHandle {
        Daemon::with_connect_options(config, registry, self.daemon_options()).start()
    }

    /// The connect options daemons use (see [`TestDb::daemon`]).
    pub fn daemon_options(&self) -> PgConnectOptions {
        if daemons_as_worker() {
            self.options
                .clone()
                .username(&privileges::worker_login_name(self))
        } else {
            self.options.clone()
        }
    }

    /// Enqueues one job outside any transaction.
    pub async fn enqueue(&self, job: NewJob) -> i64 {
        genq::Client::new(self.pool.clone())
            .enqueue(&job)
            .await
            .expect("enqueue")
    }

    /// Fetches a job.
    pub async fn job(&self, id: i64) -> JobRow {
        control::show(&self.pool, id).await.expect("job exists")
    }

    /// Job counts by state.
    pub async fn counts(&self) -> HashMap<JobState, i64> {
        sqlx::query_as::<_, (JobState, i64)>("SELECT state, count(*) FROM genq.jobs GROUP BY state")
            .fetch_all(&self.pool)
            .await
            .expect("counts")
            .into_iter()
            .collect()
    }

    /// Jobs of `kind` in `state`.
    pub async fn count(&self, kind: &str, state: JobState) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM genq.jobs WHERE kind = $1 AND state = $2")
            .bind(kind)
            .bind(state)
            .fetch_one(&self.pool)
            .await
            .expect("count")
    }

    /// Waits until job `id` is in `state`, and returns it.
    pub async fn wait_for_state(&self, id: i64, state: JobState, within: Duration) -> JobRow {
        wait_until(within, &format!("job {id} to become {state}"), || async {
            self.job(id).await.state == state
        })
        .await;
        self.job(id).await
    }

    /// Panics with every broken money or privacy invariant (`genq.check_ledger()`,
    /// `genq.check_retention()`), if any: the final check of every fault scenario.
    pub async fn assert_invariants(&self) {
        let mut conn = self.pool.acquire().await.expect("connection");
        let ledger = genq::credits::check_ledger(&mut conn)
            .await
            .expect("check_ledger");
        assert!(ledger.is_empty(), "ledger invariants violated: {ledger:#?}");
        let privacy = genq::retention::check(&self.pool)
            .await
            .expect("check_retention");
        assert!(
            privacy.is_empty(),
            "privacy invariants broken: {privacy:#?}"
        );
    }

    /// A URL for this database, for the real binary.
    pub async fn url(&self) -> String {
        let name: String = sqlx::query_scalar("SELECT current_database()")
            .fetch_one(&self.pool)
            .await
            .expect("current_database");
        let base = std::env::var("DATABASE_URL").expect("DATABASE_URL is set for sqlx::test");
        let mut url = url::Url::parse(&base).expect("DATABASE_URL parses");
        url.set_path(&format!("/{name}"));
        url.to_string()
    }
}

/// Whether daemons log in as a worker member (`GENQ_TEST_DAEMON_AS_WORKER=1`).
pub fn daemons_as_worker() -> bool {
    std::env::var("GENQ_TEST_DAEMON_AS_WORKER").is_ok_and(|v| v == "1")
}

/// The role prefix of a test database: roles are cluster-wide and serve one database each,
/// so every test database gets its own (derived from its name, which sqlx derives from the
/// test's path, so a test reuses its roles from run to run).
pub fn role_prefix_for(database: &str) -> String {
    let name = database
        .trim_start_matches("_sqlx_test_")
        .to_ascii_lowercase();
    let tail: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .take(24)
        .collect();
    format!("gq_{tail}")
}

/// A config that ticks fast: short leases, heartbeats, polls and backoff.
pub fn fast_config() -> Config {
    let mut c = Config::default();
    c.database.max_connections = 4;
    c.worker.lease = Duration::from_secs(2);
    c.worker.heartbeat = Duration::from_millis(300);
    c.worker.rescue_interval = Duration::from_millis(200);
    c.worker.poll_interval = Duration::from_millis(100);
    c.worker.shutdown_grace = Duration::from_secs(5);
    c.backoff.base = Duration::from_millis(50);
    c.backoff.max = Duration::from_secs(2);
    c.backoff.jitter = 0.0;
    c.queues
        .insert("default".into(), QueueConfig::with_concurrency(20));
    c
}

/// Polls `check` every 25 ms until it is true; panics after `within` naming `what`.
pub async fn wait_until<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(
            Instant::now() < deadline,
            "timed out after {within:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Counts handler invocations per job id, shared across daemons in one test.
#[derive(Clone, Default)]
pub struct Runs(Arc<Mutex<HashMap<i64, u32>>>);

impl Runs {
    pub fn record(&self, id: i64) -> u32 {
        let mut m = self.0.lock().unwrap();
        let n = m.entry(id).or_default();
        *n += 1;
        *n
    }
    pub fn get(&self, id: i64) -> u32 {
        self.0.lock().unwrap().get(&id).copied().unwrap_or(0)
    }
    pub fn snapshot(&self) -> HashMap<i64, u32> {
        self.0.lock().unwrap().clone()
    }
}

/// The real `genq` binary with this database.
pub fn genq_command(url: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_genq"));
    let database = url::Url::parse(url).expect("database URL parses");
    cmd.env("DATABASE_URL", url)
        .env(
            "GENQ_DATABASE_ROLE_PREFIX",
            role_prefix_for(database.path().trim_start_matches('/')),
        )
        .env("GENQ_CONFIG", "/dev/null")
        .env("GENQ_LOG", "info")
        .env_remove("GENQ_LOG_FORMAT");
    cmd
}

/// Runs the binary to completion; returns (exit success, stdout, stderr).
pub fn genq_output(url: &str, args: &[&str]) -> (bool, String, String) {
    let out = genq_command(url).args(args).output().expect("run genq");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Starts `genq run` in the background with extra environment.
pub fn spawn_daemon(url: &str, env: &[(&str, &str)]) -> Child {
    let mut cmd = genq_command(url);
    cmd.args(["run", "--migrate"])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn genq run")
}

/// The payloads of the notifications `listener` receives until none arrives for `wait`.
pub async fn notifications(
    listener: &mut sqlx::postgres::PgListener,
    wait: Duration,
) -> Vec<String> {
    let mut got = Vec::new();
    while let Ok(n) = tokio::time::timeout(wait, listener.recv()).await {
        got.push(n.expect("listener connection").payload().to_string());
    }
    got
}

/// Enqueues `batches` (`enqueue_many_in`, in order) in a transaction that is rolled back, then
/// in one that commits, and returns the queues woken after the commit, sorted. Asserts that
/// every job counted as inserted, that nothing was woken before commit or on rollback, and
/// that the rollback left neither jobs nor queue rows.
pub async fn bulk_wakeups(
    db: &TestDb,
    listener: &mut sqlx::postgres::PgListener,
    batches: &[Vec<genq::NewJob>],
) -> Vec<String> {
    let total: usize = batches.iter().map(Vec::len).sum();
    let queues: Vec<String> = batches.iter().flatten().map(|j| j.queue.clone()).collect();
    for commit in [false, true] {
        let mut tx = db.pool.begin().await.unwrap();
        let mut inserted = 0;
        for batch in batches {
            inserted += genq::queue::enqueue::enqueue_many_in(&mut tx, batch)
                .await
                .unwrap();
        }
        assert_eq!(inserted, total as i64, "every job inserted");
        assert!(
            notifications(listener, Duration::from_millis(300))
                .await
                .is_empty(),
            "nothing before commit"
        );
        if commit {
            tx.commit().await.unwrap();
        } else {
            tx.rollback().await.unwrap();
            assert!(
                notifications(listener, Duration::from_millis(500))
                    .await
                    .is_empty(),
                "nothing on rollback"
            );
            let left: (i64, i64) = sqlx::query_as(
                "SELECT (SELECT count(*) FROM genq.jobs),
                        (SELECT count(*) FROM genq.queues WHERE name = ANY($1))",
            )
            .bind(&queues)
            .fetch_one(&db.pool)
            .await
            .unwrap();
            assert_eq!(left, (0, 0), "a rollback leaves no jobs and no queue rows");
        }
    }
    let mut woken = notifications(listener, Duration::from_millis(1000)).await;
    woken.sort();
    woken
}

pub mod console;
pub mod fair_keys;
pub mod pgbouncer;
pub mod privileges;
pub mod prom;
pub mod proxy;

/// A free loopback port (bound, then released) for a daemon's HTTP server.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A `genq run` process with its HTTP server, stopped (SIGTERM) on drop.
pub struct RunningBinary {
    pub child: Child,
    pub base: String,
    pub http: reqwest::Client,
}

impl RunningBinary {
    /// Starts `genq run --migrate` on `url` with HTTP on a free port, and waits for /healthz.
    pub async fn start(url: &str, env: &[(&str, &str)]) -> Self {
        let port = free_port();
        let bind = format!("127.0.0.1:{port}");
        let mut all: Vec<(&str, &str)> = vec![
            ("GENQ_HTTP_BIND", bind.as_str()),
            ("GENQ_WORKER_POLL_INTERVAL", "100ms"),
            ("GENQ_METRICS_SAMPLE_INTERVAL", "200ms"),
        ];
        all.extend_from_slice(env);
        let child = spawn_daemon(url, &all);
        let me = Self {
            child,
            base: format!("http://{bind}"),
            http: reqwest::Client::new(),
        };
        wait_until(Duration::from_secs(20), "the daemon's /healthz", || async {
            me.http
                .get(me.url("/healthz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
        })
        .await;
        me
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Sends SIGTERM and waits for exit; returns whether it exited 0.
    pub async fn stop(mut self) -> bool {
        terminate(&mut self.child).await
    }
}

/// SIGTERM, then wait up to 20 s for the exit status.
pub async fn terminate(child: &mut Child) -> bool {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.success();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

impl Drop for RunningBinary {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs the binary to completion without blocking the test's runtime (whose single
/// thread also drives any in-process daemon of the test).
pub async fn genq_run_async(url: &str, args: &[&str]) -> std::process::Output {
    let mut cmd = genq_command(url);
    cmd.args(args);
    tokio::task::spawn_blocking(move || cmd.output().expect("run genq"))
        .await
        .expect("join")
}
pub mod generation;
pub mod retention;
pub mod retention_audit;
pub mod retention_faults;
