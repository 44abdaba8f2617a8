//! `genq bench --scenario recovery`: how fast a daemon recovers from a Postgres crash. A
//! private cluster ([`PgCluster`]) is started, a daemon runs generations in flight against
//! the in-process fake provider (the three dialects in turn) plus no-op and sleep jobs, and
//! Postgres is stopped in immediate mode (every backend killed, crash recovery on start) and
//! started again; the provider blips at the same time (its next 30 status reads answer 502).
//! Printed: the outage, the time from Postgres back to the first claim of each
//! queue, the time for each in-flight generation to make progress again (a job of it claimed,
//! or it ended) and how late that was past its own schedule, retryable jobs parked beyond
//! their normal backoff, and the ledger check.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use uuid::Uuid;

use super::generation::{grant_credits, pipeline_config, print_ledger, serve_fake, ENQUEUE};
use super::pg_cluster::{self, PgCluster};
use super::{percentile, BenchArgs};
use crate::config::{Config, QueueConfig};
use crate::daemon::{Daemon, Registry};
use crate::dev::fake_provider::{FakeOp, FaultKind, FaultSpec};
use crate::jobs::generation::Pipeline;
use crate::providers::ProviderKind;

/// Status reads the provider answers with 502 when Postgres restarts.
const BLIP_STATUS_READS: u32 = 30;

/// No-op jobs, and sleep jobs of 50..550 ms, all in the default queue.
const ENQUEUE_PLAIN: &str = r#"
SELECT genq.enqueue_many(jsonb_agg(CASE WHEN g % 25 = 0
    THEN jsonb_build_object('kind', 'sleep', 'payload', jsonb_build_object('ms', 50 + g % 500))
    ELSE jsonb_build_object('kind', 'noop') END))
  FROM generate_series(1, $1) g
"#;

/// Each unfinished generation and when its next step is due: the earliest `run_at` of its
/// pending jobs, or now for one running.
const IN_FLIGHT: &str = r#"
SELECT g.id, min(CASE WHEN j.state = 'running' THEN now() ELSE j.run_at END)
  FROM genq.generations g
  JOIN genq.jobs j ON (j.payload ->> 'generation_id')::uuid = g.id
 WHERE g.state NOT IN ('succeeded', 'failed', 'cancelled')
   AND j.kind IN ('generation.submit', 'generation.poll')
   AND j.state IN ('available', 'running', 'retryable')
 GROUP BY g.id
"#;

/// Generations that moved since `$1`: one of their jobs was claimed, or they ended.
const MOVED_SINCE: &str = r#"
SELECT (payload ->> 'generation_id')::uuid FROM genq.jobs
 WHERE kind IN ('generation.submit', 'generation.poll') AND attempted_at >= $1
UNION
SELECT id FROM genq.generations WHERE finished_at >= $1
"#;

/// First claim per queue since `$1`, but the generation queue: exact for jobs claimed once
/// (no-op, sleep); a poll job claimed again moves its `attempted_at`, so generations are
/// measured by [`MOVED_SINCE`] sampling instead.
const FIRST_CLAIMS: &str = r#"
SELECT queue, min(attempted_at) FROM genq.jobs
 WHERE attempted_at >= $1 AND queue <> 'generation'
 GROUP BY queue ORDER BY queue
"#;

/// Retryable jobs whose `run_at` lies beyond their failure-count backoff (with jitter and a
/// second of slack) after their last error: parked. `$1` base, `$2` max, `$3` jitter (s).
const PARKED: &str = r#"
SELECT count(*) FILTER (WHERE run_at > (errors -> -1 ->> 'at')::timestamptz
           + make_interval(secs => least($2, $1 * 2 ^ greatest(failures - 1, 0)) * (1 + $3) + 1)),
       count(*)
  FROM genq.jobs WHERE state = 'retryable' AND jsonb_array_length(errors) > 0
"#;

/// Runs the recovery scenario on its own private cluster.
pub async fn run(config: &Config, args: &BenchArgs) -> anyhow::Result<()> {
    pg_cluster::with_migrated(&config.database, |cluster, options| async move {
        measure(config, args, &options, &cluster).await
    })
    .await
}

async fn measure(
    config: &Config,
    args: &BenchArgs,
    options: &PgConnectOptions,
    cluster: &Arc<PgCluster>,
) -> anyhow::Result<()> {
    let n = args.generations;
    let fake = serve_fake(args.render_time(), args.account_concurrency).await?;
    let blobs = tempfile::tempdir()?;
    let mut daemon_config = pipeline_config(config, args, &fake, blobs.path());
    daemon_config.queues.insert(
        "default".into(),
        QueueConfig::with_concurrency(args.concurrency),
    );
    // The test pool checks connections before use, so it survives the restart by itself.
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options.clone())
        .await?;
    grant_credits(&pool, n).await?;
    println!(
        "genq bench --scenario recovery: private Postgres on port {}, {n} generations (fal, BytePlus, Replicate \
         in turn, fake render time {}), {} no-op and sleep jobs, one daemon (generation concurrency {}, \
         default {}, pool {}, lease {})",
        cluster.port(),
        humantime::format_duration(args.render_time()),
        args.jobs,
        args.generation_concurrency,
        args.concurrency,
        args.pool,
        humantime::format_duration(daemon_config.worker.lease),
    );
    let backoff = daemon_config.backoff.clone();
    let mut registry = Registry::new();
    Arc::new(Pipeline::from_config(&daemon_config)?).register(&mut registry);
    let daemon = Daemon::with_connect_options(daemon_config, registry, options.clone()).start();
    crate::db::query(ENQUEUE)
        .bind(n as i64)
        .execute(&pool)
        .await?;
    crate::db::query(ENQUEUE_PLAIN)
        .bind(args.jobs as i64)
        .execute(&pool)
        .await?;

    // Crash once every generation is at the provider (or a render time has passed).
    let waited = Instant::now();
    while waited.elapsed() < args.render_time() {
        let queued: i64 = crate::db::query_scalar(
            "SELECT count(*) FROM genq.generations WHERE state IN ('queued', 'submitting')",
        )
        .fetch_one(&pool)
        .await?;
        if queued == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let due: HashMap<Uuid, DateTime<Utc>> = crate::db::query_as::<(Uuid, DateTime<Utc>)>(IN_FLIGHT)
        .fetch_all(&pool)
        .await?
        .into_iter()
        .collect();
    // One provider blip with the restart: real failures, retried on the failure-count
    // backoff (~1 s) however long the poll jobs snoozed before.
    fake.add_fault(FaultSpec {
        provider: None,
        status: Some(502),
        times: BLIP_STATUS_READS,
        ..FaultSpec::new(ProviderKind::Fal, FakeOp::Status, FaultKind::HttpStatus)
    });
    let down = Instant::now();
    let restart = tokio::task::spawn_blocking({
        let cluster = cluster.clone();
        move || {
            cluster.crash()?;
            std::thread::sleep(Duration::from_millis(500));
            cluster.start().context("restarting the private cluster")
        }
    });
    restart.await??;
    let outage = down.elapsed();
    let back_at: DateTime<Utc> = crate::db::query_scalar("SELECT now()")
        .fetch_one(&pool)
        .await?;

    // Sample which in-flight generations moved, until all did (or a minute passed).
    let mut moved: HashMap<Uuid, DateTime<Utc>> = HashMap::new();
    let (mut parked_max, mut retryable_max) = (0i64, 0i64);
    let sampling = Instant::now();
    while (moved.len() < due.len() || sampling.elapsed() < Duration::from_secs(10))
        && sampling.elapsed() < Duration::from_secs(60)
    {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let (parked_now, retryable_now) = parked(&pool, &backoff).await?;
        parked_max = parked_max.max(parked_now);
        retryable_max = retryable_max.max(retryable_now);
        let now: DateTime<Utc> = crate::db::query_scalar("SELECT now()")
            .fetch_one(&pool)
            .await?;
        for id in crate::db::query_scalar::<Uuid>(MOVED_SINCE)
            .bind(back_at)
            .fetch_all(&pool)
            .await?
        {
            moved.entry(id).or_insert(now);
        }
    }
    let first_claims: Vec<(String, DateTime<Utc>)> = crate::db::query_as(FIRST_CLAIMS)
        .bind(back_at)
        .fetch_all(&pool)
        .await?;

    // Let everything finish, then check the money.
    let finishing = Instant::now();
    loop {
        let open: i64 = crate::db::query_scalar(
            "SELECT count(*) FROM genq.generations WHERE state NOT IN ('succeeded', 'failed', 'cancelled')",
        )
        .fetch_one(&pool)
        .await?;
        if open == 0 {
            break;
        }
        anyhow::ensure!(
            finishing.elapsed() < Duration::from_secs(600),
            "{open} generations still open 10 minutes after the restart"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    daemon.shutdown().await;
    fake.stop().await;
    let (succeeded, failed, with_failures): (i64, i64, i64) = crate::db::query_as(
        "SELECT (SELECT count(*) FROM genq.generations WHERE state = 'succeeded'),
                (SELECT count(*) FROM genq.generations WHERE state = 'failed'),
                (SELECT count(*) FROM genq.jobs WHERE failures > 0)",
    )
    .fetch_one(&pool)
    .await?;
    let violations: i64 = crate::db::query_scalar("SELECT count(*) FROM genq.check_ledger()")
        .fetch_one(&pool)
        .await?;

    println!(
        "outage:               {:.0} ms (pg_ctl stop -m immediate, 500 ms down, pg_ctl start with crash recovery)",
        outage.as_secs_f64() * 1000.0
    );
    for (queue, at) in &first_claims {
        println!(
            "first claim after Postgres back: {:>6.0} ms  (queue {queue})",
            (*at - back_at).num_milliseconds()
        );
    }
    let mut after_back = Vec::new();
    let mut late = Vec::new();
    for (id, at) in &moved {
        after_back.push((*at - back_at).num_milliseconds() as f64 / 1000.0);
        let scheduled = due.get(id).copied().unwrap_or(back_at).max(back_at);
        late.push(((*at - scheduled).num_milliseconds().max(0)) as f64 / 1000.0);
    }
    after_back.sort_by(f64::total_cmp);
    late.sort_by(f64::total_cmp);
    println!(
        "in-flight generations moving again: {} of {} (a job of theirs claimed, or ended; sampled every 100 ms)",
        moved.len(),
        due.len()
    );
    println!(
        "  time from Postgres back:  p50 {:.2} s, p99 {:.2} s, max {:.2} s",
        percentile(&after_back, 0.5),
        percentile(&after_back, 0.99),
        after_back.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "  late past own schedule:   p50 {:.2} s, p99 {:.2} s, max {:.2} s  (a poll snoozed until later is not late)",
        percentile(&late, 0.5),
        percentile(&late, 0.99),
        late.last().copied().unwrap_or(f64::NAN)
    );
    println!(
        "retryable jobs parked beyond their backoff: {parked_max} (most at once, sampled for 10 s or more; \
         at most {retryable_max} retryable at once, from the {BLIP_STATUS_READS}-read provider blip)"
    );
    println!(
        "generations:          {succeeded} succeeded, {failed} failed of {n}; jobs with a failure recorded: {with_failures}"
    );
    print_ledger(violations);
    pool.close().await;
    Ok(())
}

async fn parked(
    pool: &PgPool,
    backoff: &crate::config::BackoffConfig,
) -> anyhow::Result<(i64, i64)> {
    Ok(crate::db::query_as(PARKED)
        .bind(backoff.base.as_secs_f64())
        .bind(backoff.max.as_secs_f64())
        .bind(backoff.jitter)
        .fetch_one(pool)
        .await?)
}
