//! `genq privacy ...`: what an operator or a support engineer needs to keep the privacy
//! promises and prove it: the backlog (due, overdue), recent deletions, and the erasure,
//! export and delete-a-generation requests the backend would otherwise make in SQL.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Subcommand;
use serde::Serialize;
use sqlx::PgPool;

use crate::config::Config;
use crate::retention::backlog::{self, Backlog};
use crate::retention::{erasure, export_archive};

/// `genq privacy ...`.
#[derive(Debug, Subcommand)]
pub enum PrivacyCommand {
    /// Due and overdue items by kind, deletions in the last 24 h by role, pending erasures
    /// and exports, and the invariant audit (genq.check_retention). Exit status 3 when
    /// anything is overdue or an invariant is broken.
    Status {
        /// Print JSON instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Request the erasure of a user's data (genq.request_erasure); prints the request id.
    Erase {
        /// The product's user id.
        user: String,
        /// Wait until a daemon has completed it (up to this long, e.g. 5m).
        #[arg(long, value_parser = humantime::parse_duration, value_name = "TIMEOUT")]
        wait: Option<Duration>,
    },
    /// Request a JSON export of a user's data (genq.request_export); prints the request id.
    Export {
        /// The product's user id.
        user: String,
        /// Wait until the archive is written (up to this long) and print where it is.
        #[arg(long, value_parser = humantime::parse_duration, value_name = "TIMEOUT")]
        wait: Option<Duration>,
    },
    /// Delete one generation from a user's history now (genq.delete_generation).
    DeleteGeneration {
        /// The generation's id.
        id: uuid::Uuid,
    },
}

/// Deletions and scrubs of the last 24 h, by subject, role and outcome.
const RECENT: &str = r#"
SELECT subject, coalesce(role::text, ''), outcome, count(*)
  FROM genq.deletion_log WHERE at > now() - interval '24 hours'
 GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
"#;

const PENDING_EXPORTS: &str =
    "SELECT count(*) FROM genq.export_requests WHERE completed_at IS NULL";
const ERASURES_DONE: &str = "SELECT count(*) FROM genq.erasure_requests
  WHERE completed_at > now() - interval '24 hours'";

/// `genq privacy status --json`.
#[derive(Debug, Serialize)]
struct Status {
    backlog: Vec<Backlog>,
    deleted_last_24h: Vec<Recent>,
    erasures_completed_last_24h: i64,
    exports_pending: i64,
    overdue: i64,
    violations: Vec<crate::retention::Violation>,
}

#[derive(Debug, Serialize)]
struct Recent {
    subject: String,
    role: String,
    outcome: String,
    count: i64,
}

/// Runs a `genq privacy` command.
pub async fn run(
    config: Config,
    pool: PgPool,
    command: PrivacyCommand,
) -> anyhow::Result<ExitCode> {
    match command {
        PrivacyCommand::Status { json } => status(&config, &pool, json).await,
        PrivacyCommand::Erase { user, wait } => {
            let mut conn = pool.acquire().await?;
            let id = erasure::request(&mut conn, &user)
                .await
                .context("genq.request_erasure failed")?;
            drop(conn);
            let r = erasure::get(&pool, id).await?.context("request vanished")?;
            println!(
                "erasure request {id} for {user}: due {}",
                r.due_at.to_rfc3339()
            );
            if let Some(timeout) = wait {
                let (completed_at, subject) = poll(timeout, "the erasure", || async {
                    Ok(erasure::get(&pool, id)
                        .await?
                        .and_then(|r| r.completed_at.map(|at| (at, r.subject))))
                })
                .await?;
                println!(
                    "completed {}; records kept under {}",
                    completed_at.to_rfc3339(),
                    subject.unwrap_or_default()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        PrivacyCommand::Export { user, wait } => {
            let mut conn = pool.acquire().await?;
            let id = export_archive::request(&mut conn, &user)
                .await
                .context("genq.request_export failed")?;
            drop(conn);
            println!("export request {id} for {user}");
            if let Some(timeout) = wait {
                let r = poll(timeout, "the export", || async {
                    Ok(export_archive::get(&pool, id)
                        .await?
                        .filter(|r| r.completed_at.is_some()))
                })
                .await?;
                println!(
                    "written to {} ({}:{}), deleted after {}",
                    r.url.unwrap_or_default(),
                    r.store.unwrap_or_default(),
                    r.key.unwrap_or_default(),
                    r.expires_at.map_or("never".into(), |t| t.to_rfc3339())
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        PrivacyCommand::DeleteGeneration { id } => {
            let state: String = crate::retention::delete_generation(&pool, id)
                .await
                .with_context(|| format!("genq.delete_generation({id}) failed"))?;
            println!("generation {id} ({state}) deleted: input scrubbed, its blobs due now");
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn status(config: &Config, pool: &PgPool, json: bool) -> anyhow::Result<ExitCode> {
    let backlog = backlog::backlog(pool, config.retention.overdue_after).await?;
    let recent: Vec<(String, String, String, i64)> =
        crate::db::query_as(RECENT).fetch_all(pool).await?;
    let exports_pending: i64 = crate::db::query_scalar(PENDING_EXPORTS)
        .fetch_one(pool)
        .await?;
    let erasures_done: i64 = crate::db::query_scalar(ERASURES_DONE)
        .fetch_one(pool)
        .await?;
    let overdue: i64 = backlog.iter().map(|b| b.overdue).sum();
    let violations = crate::retention::check(pool).await?;
    let broken = overdue > 0 || !violations.is_empty();
    if json {
        let status = Status {
            backlog,
            deleted_last_24h: recent
                .into_iter()
                .map(|(subject, role, outcome, count)| Recent {
                    subject,
                    role,
                    outcome,
                    count,
                })
                .collect(),
            erasures_completed_last_24h: erasures_done,
            exports_pending,
            overdue,
            violations,
        };
        println!("{}", serde_json::to_string_pretty(&status)?);
    } else {
        println!(
            "{:<14} {:>8} {:>8}  oldest due (overdue = due for more than {})",
            "KIND",
            "DUE",
            "OVERDUE",
            humantime::format_duration(config.retention.overdue_after)
        );
        for b in &backlog {
            println!(
                "{:<14} {:>8} {:>8}  {}",
                b.kind,
                b.due,
                b.overdue,
                b.oldest_due_at.map_or("-".into(), |t| t.to_rfc3339())
            );
        }
        println!("\ndeleted in the last 24 h:");
        if recent.is_empty() {
            println!("  nothing");
        }
        for (subject, role, outcome, count) in &recent {
            let what = if role.is_empty() {
                subject.clone()
            } else {
                format!("{subject} {role}")
            };
            println!("  {what:<20} {outcome:<11} {count:>8}");
        }
        println!(
            "\nerasures completed in the last 24 h: {erasures_done}; exports pending: {exports_pending}"
        );
        if overdue > 0 {
            println!("\nOVERDUE: {overdue} item(s) past their deletion date (see docs/privacy.md)");
        } else {
            println!("\nnothing overdue");
        }
        if violations.is_empty() {
            println!("invariants (genq.check_retention): ok");
        } else {
            println!("INVARIANTS BROKEN (genq.check_retention):");
            for v in &violations {
                println!("  {}: {}", v.invariant, v.detail);
            }
        }
    }
    Ok(if broken {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}

/// Polls `check` every 250 ms until it yields a value, failing after `timeout`.
async fn poll<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await? {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            bail!("{what} did not complete within {timeout:?} (is a daemon running the retention queue?)");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}
