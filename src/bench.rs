//! `genq bench`: measures the engine on a throwaway database of the configured server.
//!
//! 1. bulk enqueue: N no-op jobs through `genq.enqueue_many`, 100k per call;
//! 2. processing: D daemons (each its own pool and worker id, as separate processes would
//!    be) drain them; the rate is N over the time from start to the last `finished_at`;
//! 3. pickup latency: jobs enqueued one at a time into an idle daemon; latency is the
//!    claim time minus the enqueue time, both read from Postgres' clock.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection};

use crate::config::{Config, QueueConfig};
use crate::daemon::{Daemon, Registry};
use crate::db;
use crate::queue::enqueue::enqueue_many_in;
use crate::queue::{Client, NewJob};

/// `genq bench` options.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// No-op jobs to enqueue and process.
    #[arg(long, default_value_t = 100_000)]
    pub jobs: usize,
    /// Jobs each daemon runs at once.
    #[arg(long, default_value_t = 1000)]
    pub concurrency: u32,
    /// Daemons (in this process, each with its own pool and worker id).
    #[arg(long, default_value_t = 1)]
    pub daemons: usize,
    /// Most jobs per claim statement.
    #[arg(long, default_value_t = 1000)]
    pub claim_batch: u32,
    /// Jobs enqueued one at a time for the pickup-latency measurement.
    #[arg(long, default_value_t = 200)]
    pub latency_samples: usize,
    /// Keep the benchmark database afterwards (it is dropped by default).
    #[arg(long)]
    pub keep_db: bool,
}

/// Runs the benchmark and prints the results.
pub async fn run(config: &Config, args: BenchArgs) -> anyhow::Result<ExitCode> {
    let admin_options = db::connect_options(&config.database.url, &config.database)?;
    let mut admin = PgConnection::connect_with(&admin_options)
        .await
        .context("cannot connect to the database (check DATABASE_URL)")?;
    let name = format!("genq_bench_{}", std::process::id());
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .with_context(|| format!("cannot create benchmark database {name}"))?;
    let options = admin_options.clone().database(&name);
    let result = measure(config, &args, &options).await;
    if args.keep_db {
        println!("kept database {name}");
    } else {
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut admin)
            .await
            .ok();
    }
    result?;
    Ok(ExitCode::SUCCESS)
}

async fn measure(
    config: &Config,
    args: &BenchArgs,
    options: &sqlx::postgres::PgConnectOptions,
) -> anyhow::Result<()> {
    db::migrate(options).await?;
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .connect_with(options.clone())
        .await?;
    println!(
        "genq bench: {} no-op jobs, {} daemon(s), concurrency {}, claim batch {}, {} cores",
        args.jobs,
        args.daemons,
        args.concurrency,
        args.claim_batch,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    // 1. Bulk enqueue.
    let jobs: Vec<NewJob> = (0..args.jobs)
        .map(|i| NewJob::new("noop", serde_json::json!({ "i": i })))
        .collect();
    let started = Instant::now();
    let mut conn = pool.acquire().await?;
    for chunk in jobs.chunks(100_000) {
        enqueue_many_in(&mut conn, chunk).await?;
    }
    drop(conn);
    let enqueue_secs = started.elapsed().as_secs_f64();
    println!(
        "bulk enqueue:   {:>10.0} jobs/s  ({} jobs in {:.3} s)",
        args.jobs as f64 / enqueue_secs,
        args.jobs,
        enqueue_secs
    );
    sqlx::query("VACUUM ANALYZE genq.jobs")
        .execute(&pool)
        .await?;

    // 2. Processing.
    let mut daemon_config = config.clone();
    daemon_config.queues.clear();
    daemon_config.queues.insert(
        "default".into(),
        QueueConfig::with_concurrency(args.concurrency),
    );
    daemon_config.worker.claim_batch = args.claim_batch;
    daemon_config.database.max_connections = 4;
    let t0: chrono::DateTime<chrono::Utc> = sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(&pool)
        .await?;
    let daemons: Vec<_> = (0..args.daemons)
        .map(|_| {
            Daemon::with_connect_options(daemon_config.clone(), Registry::new(), options.clone())
                .start()
        })
        .collect();
    let wall = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let pending: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM genq.jobs WHERE state IN ('available', 'running', 'retryable') AND kind = 'noop')",
        )
        .fetch_one(&pool)
        .await?;
        if !pending {
            break;
        }
        if wall.elapsed() > Duration::from_secs(600) {
            anyhow::bail!("processing did not finish within 10 minutes");
        }
    }
    let t1: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT max(finished_at) FROM genq.jobs WHERE kind = 'noop'")
            .fetch_one(&pool)
            .await?;
    for d in daemons {
        d.shutdown().await;
    }
    let completed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM genq.jobs WHERE state = 'completed' AND kind = 'noop'",
    )
    .fetch_one(&pool)
    .await?;
    let secs = (t1 - t0).num_microseconds().unwrap_or(1) as f64 / 1e6;
    println!(
        "processing:     {:>10.0} jobs/s  ({} completed in {:.3} s)",
        completed as f64 / secs,
        completed,
        secs
    );

    // 3. Pickup latency into an idle daemon.
    let mut latency_config = config.clone();
    latency_config.queues.clear();
    latency_config
        .queues
        .insert("latency".into(), QueueConfig::with_concurrency(10));
    let daemon =
        Daemon::with_connect_options(latency_config, Registry::new(), options.clone()).start();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let client = Client::new(pool.clone());
    let mut ids = Vec::with_capacity(args.latency_samples);
    for _ in 0..args.latency_samples {
        ids.push(
            client
                .enqueue(&NewJob::new("noop", serde_json::json!({})).queue("latency"))
                .await?,
        );
        tokio::time::sleep(Duration::from_millis(15)).await;
    }
    let wait = Instant::now();
    let mut latencies: Vec<f64> = loop {
        let rows: Vec<Option<f64>> = sqlx::query_scalar(
            "SELECT extract(epoch FROM attempted_at - created_at)::float8 * 1000 FROM genq.jobs WHERE id = ANY($1) AND state = 'completed'",
        )
        .bind(&ids)
        .fetch_all(&pool)
        .await?;
        if rows.len() == ids.len() || wait.elapsed() > Duration::from_secs(30) {
            break rows.into_iter().flatten().collect();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    daemon.shutdown().await;
    latencies.sort_by(f64::total_cmp);
    println!(
        "pickup latency: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms  ({} jobs one at a time, NOTIFY wake-up)",
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(f64::NAN),
        latencies.len()
    );
    if let Some(rss) = peak_rss_mib() {
        println!("peak RSS:       {rss:.1} MiB");
    }
    pool.close().await;
    Ok(())
}

/// The `q` quantile of sorted values (nearest rank).
pub fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Peak resident memory of this process, from /proc (Linux).
pub fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}
