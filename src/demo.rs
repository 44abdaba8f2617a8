//! `genq demo`: the README's first command. Migrates, starts a daemon in this process,
//! enqueues sample jobs (some fail and retry, one fails for good), prints progress and the
//! final state of each job, and exits 0 when every job ended as expected.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use serde::Deserialize;
use sqlx::PgPool;

use crate::config::{Config, QueueConfig};
use crate::daemon::{Daemon, JobContext, JobError, Registry};
use crate::db;
use crate::queue::{Client, NewJob};

/// `genq demo` options.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Sample render jobs to enqueue (besides the no-op and failing ones).
    #[arg(long, default_value_t = 8)]
    pub jobs: usize,
}

const QUEUE: &str = "demo";

#[derive(Debug, Deserialize)]
struct RenderArgs {
    run: String,
    n: usize,
    #[serde(default)]
    fail_attempts: i32,
    #[serde(default)]
    permanent: bool,
}

async fn render(ctx: JobContext, args: RenderArgs) -> Result<(), JobError> {
    tokio::time::sleep(Duration::from_millis(150 + 50 * (args.n as u64 % 5))).await;
    if args.permanent {
        return Err(JobError::permanent(format!(
            "render {} rejected: prompt failed moderation",
            args.n
        )));
    }
    if ctx.attempt <= args.fail_attempts {
        return Err(JobError::retry(format!(
            "render {} of run {}: provider answered 503 (attempt {})",
            args.n, args.run, ctx.attempt
        )));
    }
    Ok(())
}

/// Runs the demo.
pub async fn run(config: &Config, args: DemoArgs) -> anyhow::Result<ExitCode> {
    let options = db::connect_options(&config.database.url, &config.database)?;
    db::migrate(&options)
        .await
        .context("cannot migrate the database (is Postgres running? check DATABASE_URL)")?;
    println!("migrated schema genq on {}", redact(&config.database.url));

    let mut daemon_config = config.clone();
    daemon_config
        .queues
        .insert(QUEUE.into(), QueueConfig::with_concurrency(4));
    daemon_config.backoff.base = Duration::from_millis(300);
    daemon_config.worker.poll_interval = Duration::from_millis(200);
    let mut registry = Registry::new();
    registry.register_fn("demo.render", render);
    let daemon = Daemon::with_connect_options(daemon_config, registry, options.clone()).start();
    println!("daemon {} started", daemon.worker_id());

    let pool = daemon.pool().clone();
    let run_id = format!("{:08x}", rand::random::<u32>());
    let mut jobs = vec![NewJob::new("noop", serde_json::json!({ "run": run_id })).queue(QUEUE)];
    for n in 0..args.jobs {
        let fail_attempts = if n % 3 == 1 { 2 } else { 0 };
        jobs.push(
            NewJob::new(
                "demo.render",
                serde_json::json!({ "run": run_id, "n": n, "fail_attempts": fail_attempts }),
            )
            .queue(QUEUE)
            .max_attempts(5),
        );
    }
    jobs.push(
        NewJob::new(
            "demo.render",
            serde_json::json!({ "run": run_id, "n": args.jobs, "permanent": true }),
        )
        .queue(QUEUE),
    );
    jobs.push(NewJob::new("demo.unknown", serde_json::json!({ "run": run_id })).queue(QUEUE));
    let client = Client::new(pool.clone());
    for job in &jobs {
        client.enqueue(job).await?;
    }
    println!(
        "enqueued {} jobs in queue {QUEUE:?} (run {run_id})",
        jobs.len()
    );

    let started = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(400)).await;
        let counts = state_counts(&pool, &run_id).await?;
        println!("  {:>5.1}s  {counts}", started.elapsed().as_secs_f64());
        if !counts.contains("available")
            && !counts.contains("running")
            && !counts.contains("retryable")
        {
            break;
        }
        if started.elapsed() > Duration::from_secs(60) {
            daemon.shutdown().await;
            anyhow::bail!("demo jobs did not finish within 60 s");
        }
    }

    let rows: Vec<(i64, String, String, i32, serde_json::Value)> = sqlx::query_as(
        "SELECT id, kind, state::text, attempt, errors FROM genq.jobs WHERE payload->>'run' = $1 ORDER BY id",
    )
    .bind(&run_id)
    .fetch_all(&pool)
    .await?;
    println!(
        "\n{:>8}  {:<13} {:<10} {:>8}  last error",
        "job", "kind", "state", "attempts"
    );
    let mut as_expected = true;
    for (id, kind, state, attempt, errors) in &rows {
        let last = errors
            .as_array()
            .and_then(|e| e.last())
            .and_then(|e| e.get("error"))
            .and_then(|e| e.as_str())
            .unwrap_or("");
        println!("{id:>8}  {kind:<13} {state:<10} {attempt:>8}  {last}");
        let expected_final = if kind == "demo.unknown" || last.contains("moderation") {
            "discarded"
        } else {
            "completed"
        };
        as_expected &= state == expected_final;
    }
    daemon.shutdown().await;
    if as_expected {
        println!("\ndemo finished: retried jobs completed, the rejected and the unknown job were discarded with their reasons");
        Ok(ExitCode::SUCCESS)
    } else {
        println!("\ndemo finished with unexpected states");
        Ok(ExitCode::FAILURE)
    }
}

async fn state_counts(pool: &PgPool, run: &str) -> anyhow::Result<String> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT state::text, count(*) FROM genq.jobs WHERE payload->>'run' = $1 GROUP BY 1 ORDER BY 1",
    )
    .bind(run)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .iter()
        .map(|(s, n)| format!("{s}={n}"))
        .collect::<Vec<_>>()
        .join("  "))
}

/// The URL without its password, for printing.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "<unparsable url>".into(),
    }
}
