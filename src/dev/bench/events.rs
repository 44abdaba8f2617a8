//! `genq bench --scenario events`: the capacity of live event streams. One `genq run`
//! process of this binary (so its memory is measured alone) with events on; `--streams`
//! generations (four per user), one open `/v1/generations/{id}/events` stream each, held by
//! this process; the daemon's resident memory (VmRSS) before and after the streams open;
//! then `--changes-per-sec` progress updates for `--duration`, each in its own transaction,
//! and for each the time from just before its COMMIT was sent to its event arriving on its
//! stream (p50/p99/max; an upper bound: it includes the COMMIT round trip).
//! `GENQ_BENCH_WRAP=heaptrack` starts the daemon under that wrapper (a heap profiler; the
//! RSS printed is then the wrapper's).

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::sync::Semaphore;
use uuid::Uuid;

use super::{percentile, BenchArgs};
use crate::config::Config;
use crate::dev::sse::{mint_token, SseReader};

const CREATE: &str = r#"
INSERT INTO genq.generations (user_id, provider, model, input, cost, idempotency_key)
SELECT 'bench-user-' || (g / 4), 'fal', 'fal-ai/bench', '{}', 0, 'bench:' || g
  FROM generate_series(0, $1 - 1) g
RETURNING id, user_id
"#;

const CHANGE: &str = r#"
UPDATE genq.generations SET progress = jsonb_build_object('phase', 'running', 'percent', $2::int)
 WHERE id = $1
RETURNING version
"#;

/// Streams opened at once.
const OPENING: usize = 256;

type Arrivals = Arc<Mutex<HashMap<(usize, i64), Instant>>>;

/// Runs the events scenario on a migrated throwaway database `name`.
pub async fn measure(
    config: &Config,
    args: &BenchArgs,
    options: &PgConnectOptions,
    name: &str,
) -> anyhow::Result<()> {
    let n = args.streams.max(1);
    report_fd_limit(n);
    let pool = PgPoolOptions::new()
        .max_connections(16)
        .connect_with(options.clone())
        .await?;
    let rows: Vec<(Uuid, String)> = crate::db::query_as(CREATE)
        .bind(n as i64)
        .fetch_all(&pool)
        .await?;
    println!("created {n} generations for {} users", n.div_ceil(4));

    let secret = Uuid::new_v4().to_string();
    let port = free_port()?;
    let mut daemon = spawn_daemon(config, name, port, &secret, n)?;
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()?;
    wait_healthy(&client, &base).await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = rss_mib(daemon.id()).unwrap_or(f64::NAN);

    let arrivals: Arrivals = Arc::default();
    let opened = Instant::now();
    let gate = Arc::new(Semaphore::new(OPENING));
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::unbounded_channel::<bool>();
    for (i, (id, user)) in rows.iter().enumerate() {
        let permit = gate.clone().acquire_owned().await?;
        let url = format!("{base}/v1/generations/{id}/events");
        let token = mint_token(secret.as_bytes(), user, None, 3600);
        let (client, arrivals, ready) = (client.clone(), arrivals.clone(), ready_tx.clone());
        tokio::spawn(async move {
            let response = client.get(&url).query(&[("token", token)]).send().await;
            let mut reader = match response {
                Ok(r) if r.status().is_success() => SseReader::new(r),
                _ => {
                    let _ = ready.send(false);
                    return;
                }
            };
            // The first event is the current state: the stream is open.
            let first = reader.next().await.is_some();
            drop(permit);
            let _ = ready.send(first);
            while let Some(event) = reader.next().await {
                if let Some(version) = event.id.and_then(|v| v.parse::<i64>().ok()) {
                    crate::sync::lock(&arrivals).insert((i, version), Instant::now());
                }
            }
        });
    }
    let (mut open, mut failed) = (0usize, 0usize);
    while open + failed < n {
        match ready_rx.recv().await {
            Some(true) => open += 1,
            Some(false) => failed += 1,
            None => break,
        }
    }
    let open_secs = opened.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let rss_after = rss_mib(daemon.id()).unwrap_or(f64::NAN);
    let extra = rss_after - rss_before;
    println!(
        "streams open: {open} ({failed} failed) in {open_secs:.1} s; daemon RSS {rss_before:.1} MiB -> {rss_after:.1} MiB: +{extra:.1} MiB ({:.1} KiB per stream)",
        extra * 1024.0 / open.max(1) as f64
    );

    let sent = drive_changes(&pool, &rows, args).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let arrived = crate::sync::lock(&arrivals).clone();
    let mut latencies: Vec<f64> = sent
        .iter()
        .filter_map(|(key, at)| arrived.get(key).map(|got| (*got - *at).as_secs_f64() * 1e3))
        .collect();
    latencies.sort_by(f64::total_cmp);
    let rss_end = rss_mib(daemon.id()).unwrap_or(f64::NAN);
    println!(
        "changes: {} committed, {} delivered, {} missing; commit -> event p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; daemon RSS at the end {rss_end:.1} MiB",
        sent.len(),
        latencies.len(),
        sent.len() - latencies.len(),
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(f64::NAN),
    );
    stop(&mut daemon);
    Ok(())
}

/// `--changes-per-sec` progress updates for `--duration`, round robin over the generations;
/// returns when each COMMIT was sent, by (generation index, new version).
async fn drive_changes(
    pool: &sqlx::PgPool,
    rows: &[(Uuid, String)],
    args: &BenchArgs,
) -> anyhow::Result<Vec<((usize, i64), Instant)>> {
    let total = (args.changes_per_sec * args.duration.as_secs_f64()).ceil() as usize;
    let every = Duration::from_secs_f64(1.0 / args.changes_per_sec.max(0.001));
    let mut ticker = tokio::time::interval(every);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = Vec::with_capacity(total);
    for k in 0..total {
        ticker.tick().await;
        let i = k % rows.len();
        let (id, pool) = (rows[i].0, pool.clone());
        tasks.push(tokio::spawn(async move {
            let mut tx = crate::db::begin(&pool).await?;
            let version: i64 = crate::db::query_scalar(CHANGE)
                .bind(id)
                .bind((k % 100) as i32)
                .fetch_one(&mut *tx)
                .await?;
            let at = Instant::now();
            tx.commit().await?;
            Ok::<_, sqlx::Error>(((i, version), at))
        }));
    }
    let mut sent = Vec::with_capacity(total);
    for task in tasks {
        if let Ok(Ok(s)) = task.await {
            sent.push(s);
        }
    }
    Ok(sent)
}

fn spawn_daemon(
    config: &Config,
    name: &str,
    port: u16,
    secret: &str,
    streams: usize,
) -> anyhow::Result<Child> {
    let mut url = url::Url::parse(&config.database.url).context("database URL")?;
    url.set_path(&format!("/{name}"));
    let exe = std::env::current_exe().context("cannot find this binary")?;
    let mut cmd = match std::env::var("GENQ_BENCH_WRAP") {
        Ok(w) => {
            let mut c = Command::new(w);
            c.arg(exe);
            c
        }
        Err(_) => Command::new(exe),
    };
    cmd.arg("run")
        .env("GENQ_CONFIG", "/dev/null")
        .env("GENQ_DATABASE_URL", url.as_str())
        .env("GENQ_DATABASE_ROLE_PREFIX", name)
        .env("GENQ_HTTP_BIND", format!("127.0.0.1:{port}"))
        .env("GENQ_EVENTS_JWT_SECRET", secret)
        .env("GENQ_EVENTS_MAX_STREAMS", (streams + 100).to_string())
        .env("GENQ_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .context("cannot start the daemon (genq run)")
}

fn stop(child: &mut Child) {
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

async fn wait_healthy(client: &reqwest::Client, base: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(r) = client.get(format!("{base}/healthz")).send().await {
            if r.status().is_success() {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("the daemon did not answer /healthz within 30 s")
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Raises this process's open-file limit to its hard limit (the daemon inherits it) and
/// says when that is still too low for `streams` connections.
fn report_fd_limit(streams: usize) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let soft = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((_, hard)) if setrlimit(Resource::RLIMIT_NOFILE, hard, hard).is_ok() => hard,
        Ok((soft, _)) => soft,
        Err(_) => 0,
    };
    let need = streams as u64 + 1024;
    if soft < need {
        println!(
            "open-file limit {soft} is below the {need} this run needs (raise the hard limit: ulimit -Hn)"
        );
    }
}

/// VmRSS of process `pid`, from /proc (Linux).
fn rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}
