//! The `genq` command line. Every subcommand has `--help`.

pub mod privacy;

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};
use sqlx::PgPool;

use crate::config::Config;
use crate::daemon::{Daemon, Registry};
use crate::dev::{bench, demo};
use crate::queue::{job_control, queue_control, Client, NewJob};
use crate::{db, http};

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
        /// HTTP address for /metrics, /healthz, /readyz and /admin (overrides http.bind).
        #[arg(long, value_name = "ADDR")]
        http: Option<String>,
        /// HTTP address of the public listener, which serves only /webhooks/* (overrides
        /// http.public_bind). Without one, /webhooks/* is served on the --http address.
        #[arg(long, value_name = "ADDR")]
        http_public: Option<String>,
    },
    /// Apply pending migrations (schema genq) and exit.
    Migrate,
    /// Enqueue one job through genq.enqueue and print its id.
    Enqueue(EnqueueArgs),
    /// Pause, resume, drain, limit and list queues across every daemon.
    Queue {
        /// What to do.
        #[command(subcommand)]
        command: QueueCommand,
    },
    /// Inspect and control single jobs.
    Job {
        /// What to do.
        #[command(subcommand)]
        command: JobCommand,
    },
    /// Retention and privacy: backlog and recent deletions, account erasure, data export,
    /// deleting one generation.
    Privacy {
        /// What to do.
        #[command(subcommand)]
        command: privacy::PrivacyCommand,
    },
    /// Benchmark on a throwaway database: the queue engine (no-op jobs) or the generation pipeline.
    Bench(Box<bench::BenchArgs>),
    /// Local demo: a fake provider and a daemon; credits granted, generations run in the
    /// three provider dialects (one refused), final states, balances and the ledger printed.
    Demo(demo::DemoArgs),
    /// Serve fal-, BytePlus- and Replicate-shaped APIs on loopback, with scripted faults.
    FakeProvider(crate::dev::fake_provider::FakeProviderArgs),
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

/// `genq queue ...`.
#[derive(Debug, Subcommand)]
pub enum QueueCommand {
    /// Per queue: paused or not, counts by state, oldest available age, completed in the last minute.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Stop every daemon from claiming jobs of a queue (running jobs carry on; enqueueing still works).
    Pause {
        /// Queue name.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        queue: Option<String>,
        /// Pause every queue.
        #[arg(long)]
        all: bool,
        /// Why (shown in `queue list` and metrics dashboards).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Let daemons claim from a paused queue again.
    Resume {
        /// Queue name.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        queue: Option<String>,
        /// Resume every queue.
        #[arg(long)]
        all: bool,
    },
    /// Pause a queue, then wait until none of its jobs runs. Exit status 0 if drained in
    /// time, 3 if jobs were still running at the timeout. The queue stays paused.
    Drain {
        /// Queue name.
        queue: String,
        /// How long to wait (e.g. 90s, 5m).
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        timeout: Duration,
        /// Pause reason.
        #[arg(long)]
        reason: Option<String>,
    },
    /// Cap the running jobs of a queue across the whole fleet (`none` removes the cap).
    Limit {
        /// Queue name.
        queue: String,
        /// The cap, or `none`.
        #[arg(allow_hyphen_values = true)]
        max_running: String,
    },
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
    // Commands that print their own report log only warnings unless asked for more.
    let quiet = matches!(cli.command, Command::Demo(_) | Command::Bench(_));
    crate::telemetry::init(if quiet { "warn" } else { "info,sqlx=warn" });
    let config = Config::load(cli.config.as_deref())?;
    match cli.command {
        Command::Run {
            migrate,
            http,
            http_public,
        } => {
            let mut config = config;
            if let Some(bind) = http {
                config.http.bind = bind;
            }
            if let Some(bind) = http_public {
                config.http.public_bind = bind;
            }
            run(config, migrate).await
        }
        Command::Queue { command } => queue(config, command).await,
        Command::Migrate => {
            refuse_pooled_migration(&config)?;
            let options = db::connect_options(&config.database.url, &config.database)?;
            db::migrate(&options, &config.database.role_prefix)
                .await
                .context("migration failed")?;
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
        Command::Privacy { command } => {
            let pool = connect(&config).await?;
            privacy::run(config, pool, command).await
        }
        Command::Bench(args) => bench::run(&config, *args).await,
        Command::Demo(args) => demo::run(&config, args).await,
        Command::FakeProvider(args) => {
            crate::dev::fake_provider::run_cli(args.port, args.config()).await?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn connect(config: &Config) -> anyhow::Result<PgPool> {
    let options = db::connect_options(&config.database.url, &config.database)?;
    let pool = db::pool_options(&config.database)
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

/// Migrations hold a session-level advisory lock and set `search_path` on their connection:
/// through a transaction-mode pooler both would land on whatever server connection is
/// free. They run on a direct connection instead.
fn refuse_pooled_migration(config: &Config) -> anyhow::Result<()> {
    if config.database.pooler == db::Pooler::Transaction {
        bail!(
            "migrations need a direct connection, not a transaction-mode pooler (database.pooler = \"transaction\"): \
             run `genq migrate` with the database's direct URL and GENQ_DATABASE_POOLER=none"
        );
    }
    Ok(())
}

async fn run(config: Config, migrate: bool) -> anyhow::Result<ExitCode> {
    // Before anything starts: a SIGTERM that comes while the daemon is starting (it may
    // already claim jobs) must drain it, not kill the process by the default action.
    let mut stop = Signals::install()?;
    let options = db::connect_options(&config.database.url, &config.database)?;
    let admin_token = http::AdminToken::from_env_or_file(&config.admin.token_file)?;
    if admin_token.is_none() {
        tracing::info!("admin API disabled (no GENQ_ADMIN_TOKEN or admin.token_file)");
    }
    let console = http::console::ConsoleSettings {
        readonly_token: http::AdminToken::readonly_from_env_or_file(
            &config.admin.readonly_token_file,
        )?,
        secure_cookie: config.admin.console_secure_cookie,
    };
    if migrate {
        refuse_pooled_migration(&config)?;
        migrate_with_retry(&options, &config.database.role_prefix).await?;
    }
    let bind = config.http.bind.clone();
    let public_bind = config.http.public_bind.clone();
    let mut registry = Registry::new();
    crate::app::register_product(&mut registry, &config)?;
    if config.retention.hash_key().is_none() {
        tracing::warn!(variable = %config.retention.hash_key_env,
            "no erasure hash key: account erasures will delete data but cannot complete");
    }
    warn_unhandled_periodic(&config, &registry);
    let webhooks = Arc::new(
        http::webhooks::Webhooks::from_config(&config.webhooks)
            .context("cannot set up webhook verification")?,
    );
    let events_config = config.events.clone();
    let outbound = config.outbound.clone();
    let pooler = config.database.pooler;
    let listen_options = db::session_options(options.clone(), &config.database);
    let handle = Daemon::with_connect_options(config, registry, options).start();
    let events = match crate::events::Events::start(
        &events_config,
        &outbound,
        pooler,
        handle.pool().clone(),
        listen_options,
    ) {
        Ok(events) => events,
        Err(e) => {
            handle.shutdown().await;
            return Err(e.context("cannot set up live events ([events])"));
        }
    };
    if events.is_none() {
        tracing::info!("live events disabled (no [events] token secret or Supabase JWKS)");
    }
    let state = http::HttpState {
        daemon: handle.control(),
        admin_token,
        webhooks: Some(webhooks),
        events: events.clone(),
        console,
    };
    let servers = match serve_listeners(&bind, &public_bind, state).await {
        Ok(s) => s,
        Err(e) => {
            handle.shutdown().await;
            return Err(e);
        }
    };
    stop.wait().await;
    // A second signal hands back what still runs at once instead of waiting out the grace.
    let control = handle.control();
    let hurry = tokio::spawn(async move {
        stop.wait().await;
        control.hurry();
    });
    // Open event streams never end on their own: end them so the servers can stop.
    if let Some(events) = &events {
        events.stop();
    }
    let report = handle.shutdown().await;
    hurry.abort();
    for server in servers {
        server.stop().await;
    }
    tracing::info!(?report, "exiting");
    Ok(ExitCode::SUCCESS)
}

/// The internal listener, and the public one when `public_bind` is set (webhooks move there).
async fn serve_listeners(
    bind: &str,
    public_bind: &str,
    state: http::HttpState,
) -> anyhow::Result<Vec<http::HttpServer>> {
    if public_bind.is_empty() {
        return Ok(vec![http::serve(bind, state).await?]);
    }
    let internal = http::serve_routes(bind, state.clone(), http::Routes::Internal).await?;
    match http::serve_routes(public_bind, state, http::Routes::Public).await {
        Ok(public) => Ok(vec![internal, public]),
        Err(e) => {
            internal.stop().await;
            Err(e)
        }
    }
}

/// A periodic job whose kind no handler serves would be discarded at every slot.
fn warn_unhandled_periodic(config: &Config, registry: &Registry) {
    for p in &config.periodic {
        if !registry.contains(&p.kind) && !crate::daemon::builtin::is_builtin(&p.kind) {
            tracing::warn!(name = %p.name, kind = %p.kind,
                "periodic job has no handler in this binary: its jobs will be discarded as unknown");
        }
    }
}

async fn queue(config: Config, command: QueueCommand) -> anyhow::Result<ExitCode> {
    let pool = connect(&config).await?;
    match command {
        QueueCommand::List { json } => {
            let queues = queue_control::list(&pool).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&queues)?);
            } else {
                print_queues(&queues);
            }
        }
        QueueCommand::Pause { queue, all, reason } => {
            let paused =
                queue_control::pause(&pool, target(&queue, all), reason.as_deref()).await?;
            match (&queue, paused.is_empty()) {
                (Some(q), _) => {
                    println!("queue {q} paused: no daemon claims from it (running jobs carry on)")
                }
                (None, true) => println!("every queue was already paused"),
                (None, false) => println!("paused: {}", paused.join(", ")),
            }
        }
        QueueCommand::Resume { queue, all } => {
            let resumed = queue_control::resume(&pool, target(&queue, all)).await?;
            match (&queue, resumed.is_empty()) {
                (Some(q), true) => println!("queue {q} was not paused"),
                (Some(q), false) => println!("queue {q} resumed"),
                (None, _) => println!(
                    "resumed: {}",
                    if resumed.is_empty() {
                        "none".into()
                    } else {
                        resumed.join(", ")
                    }
                ),
            }
        }
        QueueCommand::Drain {
            queue,
            timeout,
            reason,
        } => {
            println!(
                "pausing {queue} and waiting up to {} for its running jobs",
                humantime::format_duration(timeout)
            );
            let result = queue_control::drain(
                &pool,
                &queue,
                reason.as_deref(),
                timeout,
                Duration::from_secs(1),
                |n| println!("  {n} job(s) of {queue} still running"),
            )
            .await?;
            if result.drained {
                println!("queue {queue} drained in {:.1}s; it stays paused (`genq queue resume {queue}` to undo)", result.waited_secs);
            } else {
                println!(
                    "timed out after {:.1}s: {} job(s) of {queue} still running; the queue stays paused",
                    result.waited_secs, result.running
                );
                return Ok(ExitCode::from(3));
            }
        }
        QueueCommand::Limit { queue, max_running } => {
            let cap = match max_running.as_str() {
                "none" | "off" => None,
                n => Some(n.parse::<i32>().ok().filter(|n| *n >= 0).with_context(|| {
                    format!("max_running must be a number of 0 or more, or `none` (got {n:?})")
                })?),
            };
            queue_control::set_max_running(&pool, &queue, cap).await?;
            match cap {
                Some(n) => println!("queue {queue}: at most {n} running across all daemons"),
                None => println!("queue {queue}: no fleet-wide cap"),
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn target(queue: &Option<String>, all: bool) -> queue_control::Target<'_> {
    match (queue, all) {
        (Some(q), false) => queue_control::Target::One(q.as_str()),
        _ => queue_control::Target::All,
    }
}

fn print_queues(queues: &[queue_control::QueueInfo]) {
    println!(
        "{:<20} {:<8} {:>9} {:>9} {:>8} {:>9} {:>10} {:>8} {:>8} {:>12}  PAUSE REASON",
        "QUEUE",
        "STATE",
        "AVAILABLE",
        "SCHEDULED",
        "RUNNING",
        "RETRYABLE",
        "OLDEST",
        "DONE/1m",
        "CAP",
        "KEYS WAITING",
    );
    for q in queues {
        let oldest = q.oldest_available_age_secs.map_or("-".to_string(), |s| {
            humantime::format_duration(Duration::from_secs(s.max(0.0) as u64)).to_string()
        });
        println!(
            "{:<20} {:<8} {:>9} {:>9} {:>8} {:>9} {:>10} {:>8} {:>8} {:>12}  {}",
            q.name,
            if q.paused { "paused" } else { "active" },
            q.available,
            q.scheduled,
            q.running,
            q.retryable,
            oldest,
            q.completed_last_minute,
            q.max_running.map_or("-".to_string(), |n| n.to_string()),
            q.keys_waiting.map_or("-".to_string(), |n| n.to_string()),
            q.pause_reason.as_deref().unwrap_or("")
        );
    }
}

/// A daemon may start before its database: keep trying for a minute on transient errors.
async fn migrate_with_retry(
    options: &sqlx::postgres::PgConnectOptions,
    role_prefix: &str,
) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let mut delays = crate::daemon::error_backoff();
    loop {
        match db::migrate(options, role_prefix).await {
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

/// SIGTERM and SIGINT, caught from the moment this is created.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(Self {
            term: signal(SignalKind::terminate())?,
            int: signal(SignalKind::interrupt())?,
        })
    }

    async fn wait(&mut self) {
        tokio::select! {
            _ = self.term.recv() => tracing::info!("SIGTERM received"),
            _ = self.int.recv() => tracing::info!("SIGINT received"),
        }
    }
}

async fn job(config: Config, command: JobCommand) -> anyhow::Result<ExitCode> {
    let pool = connect(&config).await?;
    let row = match command {
        JobCommand::Show { id } => job_control::show(&pool, id).await?,
        JobCommand::Retry { id } => job_control::retry(&pool, id).await?,
        JobCommand::Cancel { id } => {
            let (row, from) = job_control::cancel(&pool, id).await?;
            eprintln!("job {id} cancelled (was {from})");
            row
        }
    };
    println!("{}", serde_json::to_string_pretty(&row)?);
    Ok(ExitCode::SUCCESS)
}
