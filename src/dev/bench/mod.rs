//! `genq bench`: benchmarks on a throwaway database of the configured server (created,
//! migrated, dropped afterwards), printing throughput, latency percentiles and memory.
//! Scenarios: `queue` (the engine alone, no-op jobs), `generation` (the whole pipeline
//! against the in-process fake provider), `webhooks` (signed callbacks at a fixed rate),
//! `retention`, `events` (open live event streams: memory and commit-to-event latency),
//! `recovery` (a Postgres crash restart, on a private cluster), `chaos`
//! (daemon processes killed and Postgres crash-restarted under load, on a private cluster),
//! `fairness` (a heavy user and light ones on one provider account, fairness on and off),
//! `fair-claim` (claim throughput with fairness on and off on deep backlogs), `console`
//! (page times of the operator console on a large jobs table) and `soak` (a steady mixed
//! load for minutes to an hour, on a private cluster: bloat, autovacuum, pickup over time).

pub mod chaos;
pub mod console;
pub mod events;
pub mod fair_claim;
pub mod fairness;
pub mod generation;
pub mod pg_cluster;
pub mod queue;
pub mod recovery;
pub mod retention;
pub mod soak;
pub mod webhooks;

use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, ValueEnum};
use sqlx::{Connection, PgConnection};

use crate::config::Config;
use crate::db;

/// Which benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Scenario {
    /// No-op jobs: bulk enqueue, processing throughput, pickup latency.
    Queue,
    /// Generations in flight against the fake provider: RSS, connections, overhead.
    Generation,
    /// Signed Replicate callbacks at a fixed rate to the daemon's webhook endpoint.
    Webhooks,
    /// Due blobs deleted from a local store, inputs scrubbed, one account erasure.
    Retention,
    /// Open event streams on one `genq run` process: its extra memory, and the time from a
    /// change's commit to its event at a fixed rate of changes.
    Events,
    /// A Postgres crash restart (a private cluster) under generations in flight and plain
    /// jobs: time to the first claim, to every generation moving again, parked retries.
    Recovery,
    /// `genq run` processes SIGKILLed and Postgres crash-restarted under a mixed load, on a
    /// private cluster: time to full recovery and the invariants afterwards.
    Chaos,
    /// One heavy user against many light ones on one provider account, fairness on and
    /// off side by side: light users' time to submit and to success, heavy throughput,
    /// provider utilisation.
    Fairness,
    /// Claim throughput with fairness on and off on the same backlogs (one key with many
    /// jobs, many keys with a few each), and their ratio.
    FairClaim,
    /// The operator console's pages on `--jobs` jobs (use 1000000): p50/p95 per page.
    Console,
    /// A steady mixed load at `--rate` jobs/s for `--duration` (5m, 60m) on a private
    /// cluster, pruning on: per minute pickup p50/p99, rate, `genq.jobs` size, dead tuples,
    /// autovacuum runs; a first-vs-last summary.
    Soak,
}

/// `genq bench` options.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// What to measure.
    #[arg(long, value_enum, default_value_t = Scenario::Queue)]
    pub scenario: Scenario,
    /// queue: no-op jobs to enqueue and process.
    #[arg(long, default_value_t = 100_000)]
    pub jobs: usize,
    /// queue: jobs each daemon runs at once.
    #[arg(long, default_value_t = 1000)]
    pub concurrency: u32,
    /// queue: daemons (in this process, each with its own pool and worker id).
    #[arg(long, default_value_t = 1)]
    pub daemons: usize,
    /// queue: most jobs per claim statement.
    #[arg(long, default_value_t = 1000)]
    pub claim_batch: u32,
    /// queue: after the run with the bench's settings, drain the same number of jobs with
    /// the shipped defaults (`Config::default()`: concurrency 50, claim batch 500, the
    /// claim-ahead buffer), then with those defaults without the buffer, and print the
    /// ratios to the first run.
    #[arg(long)]
    pub compare_defaults: bool,
    /// queue: rounds of the bulk-enqueue comparison (each round runs every path once, in a
    /// rotated order, after a checkpoint); medians are compared.
    #[arg(long, default_value_t = 3)]
    pub enqueue_rounds: usize,
    /// queue: jobs enqueued one at a time for the pickup-latency measurement.
    #[arg(long, default_value_t = 200)]
    pub latency_samples: usize,
    /// generation: generations enqueued at once; retention: finished generations to scrub.
    #[arg(long, default_value_t = 10_000)]
    pub generations: usize,
    /// generation, recovery, fairness: the fake provider's render time (default 10s;
    /// fairness: 5s).
    #[arg(long, value_parser = humantime::parse_duration)]
    pub render_time: Option<std::time::Duration>,
    /// generation, recovery, fairness: renders each fake provider account runs at once
    /// (the rest wait in its queue); unlimited when absent (fairness: 20).
    #[arg(long)]
    pub account_concurrency: Option<usize>,
    /// generation: generation jobs the daemon runs at once.
    #[arg(long, default_value_t = 16)]
    pub generation_concurrency: u32,
    /// generation: the daemon's database pool size.
    #[arg(long, default_value_t = 20)]
    pub pool: u32,
    /// console: requests per page.
    #[arg(long, default_value_t = 50)]
    pub requests: usize,
    /// webhooks: callbacks per second; soak: jobs enqueued per second.
    #[arg(long, default_value_t = 500.0)]
    pub rate: f64,
    /// soak: completed, cancelled and discarded jobs are pruned this long after they
    /// finished (the daemon's `[prune]` ages, shortened so the first prune window ends early).
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    pub prune_after: std::time::Duration,
    /// events: event streams to open (one generation each, four per user).
    #[arg(long, default_value_t = 10_000)]
    pub streams: usize,
    /// events: generation changes committed per second.
    #[arg(long, default_value_t = 200.0)]
    pub changes_per_sec: f64,
    /// webhooks, events, soak: how long to send for.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: std::time::Duration,
    /// webhooks: most callbacks in flight at once.
    #[arg(long, default_value_t = 256)]
    pub max_in_flight: usize,
    /// retention: due blobs to delete (files in a temporary local store).
    #[arg(long, default_value_t = 20_000)]
    pub blobs: usize,
    /// retention: blobs of the erased user.
    #[arg(long, default_value_t = 1000)]
    pub erasure_blobs: usize,
    /// retention: retention jobs the daemon runs at once.
    #[arg(long, default_value_t = 4)]
    pub retention_concurrency: u32,
    /// retention: blobs per delete job.
    #[arg(long, default_value_t = 100)]
    pub retention_batch: u32,
    /// queue: the daemons and the bench's own statements go through this pooler URL
    /// (PgBouncer/Supavisor in transaction mode; its database name is replaced by the
    /// benchmark's) with `database.pooler = "transaction"`; creating and migrating the
    /// benchmark database stays on the direct URL.
    #[arg(long, value_name = "URL")]
    pub pooler_url: Option<String>,
    /// Keep the benchmark database afterwards (it is dropped by default).
    #[arg(long)]
    pub keep_db: bool,
    /// The fairness and fair-claim scenarios' options.
    #[command(flatten)]
    pub fairness: fairness::FairnessArgs,
    /// The chaos scenario's options.
    #[command(flatten)]
    pub chaos: chaos::ChaosArgs,
}

impl BenchArgs {
    /// The fake's render time of the generation and recovery scenarios (default 10 s).
    pub fn render_time(&self) -> std::time::Duration {
        self.render_time
            .unwrap_or(std::time::Duration::from_secs(10))
    }
}

/// Runs the chosen scenario and prints the results.
pub async fn run(config: &Config, args: BenchArgs) -> anyhow::Result<ExitCode> {
    if args.scenario == Scenario::Recovery {
        // Restarts its server, so it never uses the configured one.
        recovery::run(config, &args).await?;
        return Ok(ExitCode::SUCCESS);
    }
    if args.scenario == Scenario::Soak {
        // A private cluster: its autovacuum and statistics serve this run alone.
        soak::run(config, &args).await?;
        return Ok(ExitCode::SUCCESS);
    }
    if args.scenario == Scenario::Chaos {
        // Its own private cluster: it restarts Postgres, which the configured one must not see.
        let clean = chaos::measure(&args.chaos).await?;
        return Ok(if clean {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        });
    }
    let admin_options = db::connect_options(&config.database.url, &config.database)?;
    let mut admin = PgConnection::connect_with(&admin_options)
        .await
        .context("cannot connect to the database (check DATABASE_URL)")?;
    let name = format!("genq_bench_{}", std::process::id());
    crate::db::query(&format!("CREATE DATABASE {name}"))
        .execute(&mut admin)
        .await
        .with_context(|| format!("cannot create benchmark database {name}"))?;
    let options = admin_options.clone().database(&name);
    // The throwaway database gets its own roles (roles serve one database each).
    let prefix = name.clone();
    let result = async {
        db::migrate(&options, &prefix).await?;
        match args.scenario {
            Scenario::Queue => match &args.pooler_url {
                Some(url) => {
                    let mut pooled = config.clone();
                    pooled.database.pooler = db::Pooler::Transaction;
                    let options = db::connect_options(url, &pooled.database)?.database(&name);
                    println!(
                        "through a transaction-mode pooler: LISTEN off, polling every {:?}",
                        pooled.worker.poll_interval
                    );
                    queue::measure(&pooled, &args, &options).await
                }
                None => queue::measure(config, &args, &options).await,
            },
            Scenario::Generation => generation::measure(config, &args, &options, &name).await,
            Scenario::Webhooks => webhooks::measure(config, &args, &options).await,
            Scenario::Retention => retention::measure(config, &args, &options).await,
            Scenario::Events => events::measure(config, &args, &options, &name).await,
            Scenario::Console => console::measure(config, &args, &options).await,
            Scenario::Recovery => unreachable!("runs on its own cluster"),
            Scenario::Chaos => unreachable!("chaos runs on its own cluster, above"),
            Scenario::Soak => unreachable!("soak runs on its own cluster, above"),
            Scenario::Fairness => fairness::measure(config, &args, &options).await,
            Scenario::FairClaim => fair_claim::measure(config, &args, &options).await,
        }
    }
    .await;
    if args.keep_db {
        println!("kept database {name}");
    } else {
        crate::db::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .execute(&mut admin)
            .await
            .ok();
        db::drop_roles(&mut admin, &prefix).await.ok();
    }
    result?;
    Ok(ExitCode::SUCCESS)
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
