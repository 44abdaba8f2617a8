//! The `genq` command line. Every subcommand has `--help`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};
use sqlx::PgPool;

use crate::config::Config;
use crate::daemon::{Daemon, Registry};
use crate::queue::{control, Client, NewJob};
use crate::{bench, db, demo};

/// genq: Postgres-backed worker daemon for AI generation products.
#[derive(Debug, Parser)]
#[command(name = "genq", version, about, long_about = None)]
pub struct Cli {
    /// Config file. Defaults to $GENQ_CONFIG, else config/genq.toml if present, else built-in defaults.
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the worker daemon until SIGTERM/SIGINT, then drain gracefully.
    Run {
        /// Apply pending migrations before starting.
        #[arg(long)]
        migrate: bool,
    },
    /// Apply pending migrations (schema genq) and exit.
    Migrate,
    /// Enqueue one job through genq.enqueue and print its id.
    Enqueue(EnqueueArgs),
    /// Inspect and control single jobs.
    Job {
        /// What to do.
        #[command(subcommand)]
        command: JobCommand,
    },
    /// Benchmark the engine on a throwaway database: bulk enqueue, processing, pickup latency.
    Bench(bench::BenchArgs),
    /// Local demo: migrate, start a daemon, enqueue sample jobs, show them complete.
    Demo(demo::DemoArgs),
}

/// `genq enqueue`.
#[derive(Debug, Args)]
pub struct EnqueueArgs {
    /// Job kind, e.g. noop.
    pub kind: String,
    /// JSON payload.
    #[arg(long, default_value = "{}")]
    pub payload: String,
    /// Queue.
    #[arg(long, default_value = "default")]
    pub queue: String,
    /// Earliest start: RFC 3339 time (2026-01-01T12:00:00Z) or a delay from now (30s, 5m).
    #[arg(long, value_name = "TIME")]
    pub run_at: Option<String>,
    /// While a non-final job holds this key, return its id instead of enqueueing.
    #[arg(long)]
    pub unique_key: Option<String>,
    /// Priority; lower runs first.
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub priority: i32,
    /// Attempts before the job is discarded.
    #[arg(long, default_value_t = 20)]
    pub max_attempts: i32,
}

/// `genq job ...`.
#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Print a job as JSON, with its error history.
    Show {
        /// Job id.
        id: i64,
    },
    /// Make a finished or waiting job run again now.
    Retry {
        /// Job id.
        id: i64,
    },
    /// Cancel a job that has not finished; a running attempt is told to stop.
    Cancel {
        /// Job id.
        id: i64,
    },
}

/// Parses the command line and runs it.
pub async fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    let config = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Run { migrate } => run(config, migrate).await,
        Command::Migrate => {
            let options = db::connect_options(&config.database.url, &config.database)?;
            db::migrate(&options).await.context("migration failed")?;
            println!("migrations applied (schema genq)");
            Ok(ExitCode::SUCCESS)
        }
        Command::Enqueue(args) => {
            let job = new_job(args)?;
            let pool = connect(&config).await?;
            let id = Client::new(pool)
                .enqueue(&job)
                .await
                .context("enqueue failed")?;
            println!("{id}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Job { command } => job(config, command).await,
        Command::Bench(args) => bench::run(&config, args).await,
        Command::Demo(args) => demo::run(&config, args).await,
    }
}

async fn connect(config: &Config) -> anyhow::Result<PgPool> {
    let options = db::connect_options(&config.database.url, &config.database)?;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
        .context("cannot connect to the database (check DATABASE_URL)")?;
    Ok(pool)
}

fn new_job(args: EnqueueArgs) -> anyhow::Result<NewJob> {
    let payload: serde_json::Value = serde_json::from_str(&args.payload)
        .with_context(|| format!("--payload is not valid JSON: {}", args.payload))?;
    let mut job = NewJob::new(args.kind, payload)
        .queue(args.queue)
        .priority(args.priority)
        .max_attempts(args.max_attempts);
    if let Some(t) = args.run_at {
        job = job.run_at(parse_time(&t)?);
    }
    if let Some(k) = args.unique_key {
        job = job.unique_key(k);
    }
    Ok(job)
}

fn parse_time(text: &str) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    match humantime::parse_duration(text) {
        Ok(d) => Ok(Utc::now() + chrono::Duration::from_std(d)?),
        Err(_) => bail!("--run-at {text:?} is neither an RFC 3339 time nor a delay like 30s"),
    }
}

async fn run(config: Config, migrate: bool) -> anyhow::Result<ExitCode> {
    let options = db::connect_options(&config.database.url, &config.database)?;
    if migrate {
        migrate_with_retry(&options).await?;
    }
    let handle = Daemon::with_connect_options(config, Registry::new(), options).start();
    wait_for_signal().await?;
    let report = handle.shutdown().await;
    tracing::info!(?report, "exiting");
    Ok(ExitCode::SUCCESS)
}

/// A daemon may start before its database: keep trying for a minute on transient errors.
async fn migrate_with_retry(options: &sqlx::postgres::PgConnectOptions) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut delays = crate::daemon::error_backoff();
    loop {
        match db::migrate(options).await {
            Ok(()) => return Ok(()),
            Err(sqlx::migrate::MigrateError::Execute(e))
                if db::is_transient(&e) && std::time::Instant::now() < deadline =>
            {
                let d = delays.next().unwrap_or(Duration::from_secs(1));
                tracing::warn!(error = %e, retry_in = ?d, "database not reachable for migration");
                tokio::time::sleep(d).await;
            }
            Err(e) => return Err(e).context("migration failed"),
        }
    }
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
    Ok(())
}

async fn job(config: Config, command: JobCommand) -> anyhow::Result<ExitCode> {
    let pool = connect(&config).await?;
    let row = match command {
        JobCommand::Show { id } => control::show(&pool, id).await?,
        JobCommand::Retry { id } => control::retry(&pool, id).await?,
        JobCommand::Cancel { id } => {
            let (row, from) = control::cancel(&pool, id).await?;
            eprintln!("job {id} cancelled (was {from})");
            row
        }
    };
    println!("{}", serde_json::to_string_pretty(&row)?);
    Ok(ExitCode::SUCCESS)
}
