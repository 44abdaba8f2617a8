//! `genq bench --scenario soak`: a steady mixed load for a long time, to show whether
//! `genq.jobs` bloats, autovacuum keeps up and pickup latency holds (issue 17). Runs on a
//! private cluster ([`PgCluster`](pg_cluster::PgCluster): stock settings but `fsync = off`),
//! so autovacuum works for this database alone and its counters are this run's.
//!
//! Every 100 ms a batch of `rate / 10` jobs of kind `soak` is enqueued (one
//! `enqueue_many` statement): 85 % succeed at once, 5 % fail once and 3 % twice before
//! succeeding (the production backoff), 5 % snooze 3 s first, 2 % are discarded. One daemon
//! with the shipped defaults (concurrency 50, claim batch 500, lease 30 s, heartbeat 5 s)
//! works them, and its own periodic `genq.prune` job (every minute, as in production)
//! deletes finished jobs `--prune-after` (default 2 min) after they finished. Once a minute
//! one row is printed from Postgres' own figures ([`sample`]); a summary compares the
//! first and the last minutes.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use serde::Deserialize;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use super::pg_cluster;
use super::BenchArgs;
use crate::config::{Config, QueueConfig};
use crate::daemon::{Daemon, JobContext, JobError, Registry, Worker};
use crate::db;
use crate::queue::enqueue::enqueue_many_in;
use crate::queue::NewJob;

/// The soak's job kind.
pub const KIND: &str = "soak";

/// One minute's figures: the window's jobs from `genq.jobs`, its size and counters from
/// the statistics views. Pickup = `attempted_at - run_at` of first attempts begun in the
/// window (a snoozed or retried job's later attempts are left out: their `run_at` is the
/// end of the delay, and `attempt` > 1).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Sample {
    /// Soak jobs finished (completed or discarded) in the window.
    pub finished: i64,
    /// First attempts begun in the window.
    pub first_attempts: i64,
    /// Pickup percentiles of those (ms); NULL without any.
    pub pickup_p50_ms: Option<f64>,
    /// See `pickup_p50_ms`.
    pub pickup_p99_ms: Option<f64>,
    /// `pg_relation_size('genq.jobs')`: the heap's main fork.
    pub heap_bytes: i64,
    /// `pg_indexes_size('genq.jobs')`: all its indexes.
    pub index_bytes: i64,
    /// `pg_stat_user_tables` of `genq.jobs` (estimates kept by the server).
    pub live_tup: i64,
    /// See `live_tup`.
    pub dead_tup: i64,
    /// Autovacuum runs on `genq.jobs` so far.
    pub autovacuum_count: i64,
    /// Autoanalyze runs on `genq.jobs` so far.
    pub autoanalyze_count: i64,
    /// Rows updated so far, and of those HOT (no new index entries).
    pub tup_upd: i64,
    /// See `tup_upd`.
    pub tup_hot_upd: i64,
}

/// One scan of `genq.jobs` for the window `[$1, $2)` and kind `$3`, plus its statistics.
const SAMPLE: &str = r#"
WITH w AS (
    SELECT count(*) FILTER (WHERE finished_at >= $1 AND finished_at < $2) AS finished,
           count(*) FILTER (WHERE first) AS first_attempts,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY pickup_ms) FILTER (WHERE first) AS p50,
           percentile_cont(0.99) WITHIN GROUP (ORDER BY pickup_ms) FILTER (WHERE first) AS p99
      FROM (SELECT finished_at,
                   attempt = 1 AND attempted_at >= $1 AND attempted_at < $2 AS first,
                   extract(epoch FROM attempted_at - run_at)::float8 * 1000 AS pickup_ms
              FROM genq.jobs WHERE kind = $3) j
)
SELECT w.finished, w.first_attempts, w.p50 AS pickup_p50_ms, w.p99 AS pickup_p99_ms,
       pg_relation_size(s.relid) AS heap_bytes, pg_indexes_size(s.relid) AS index_bytes,
       s.n_live_tup AS live_tup, s.n_dead_tup AS dead_tup,
       s.autovacuum_count, s.autoanalyze_count,
       s.n_tup_upd AS tup_upd, s.n_tup_hot_upd AS tup_hot_upd
  FROM w, pg_stat_user_tables s
 WHERE s.relid = 'genq.jobs'::regclass
"#;

/// The genq tables with the most churn, for the summary.
const CHURN: &str = r#"
SELECT relname::text, n_live_tup, n_dead_tup, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del,
       autovacuum_count, pg_total_relation_size(relid)
  FROM pg_stat_user_tables
 WHERE schemaname = 'genq' AND n_tup_upd + n_tup_del > 0
 ORDER BY n_tup_upd + n_tup_del DESC
 LIMIT 8
"#;

const NOW: &str = "SELECT clock_timestamp()";

/// A row of [`CHURN`]: name, live, dead, inserted, updated, HOT-updated, deleted,
/// autovacuums, total size.
type ChurnRow = (String, i64, i64, i64, i64, i64, i64, i64, i64);

/// Samples the window `[from, to)` (Postgres' clock) of kind `kind`.
pub async fn sample(
    pool: &PgPool,
    kind: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Sample, sqlx::Error> {
    db::query_as(SAMPLE)
        .bind(from)
        .bind(to)
        .bind(kind)
        .fetch_one(pool)
        .await
}

/// A soak job's payload: fail `fail` times, snooze until `snooze_until_ms` (Unix ms),
/// or be discarded.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SoakArgs {
    fail: i32,
    snooze_until_ms: Option<i64>,
    discard: bool,
}

/// The soak worker: does nothing but what its payload asks for.
pub struct Soak;

impl Worker for Soak {
    type Args = SoakArgs;

    fn kind(&self) -> &str {
        KIND
    }

    async fn work(&self, ctx: JobContext, args: SoakArgs) -> Result<(), JobError> {
        if args.discard {
            return Err(JobError::permanent("soak: discarded on purpose"));
        }
        if ctx.attempt <= args.fail {
            return Err(JobError::retry(format!(
                "soak: failure {} of {}",
                ctx.attempt, args.fail
            )));
        }
        if let Some(until) = args.snooze_until_ms {
            let left = until - Utc::now().timestamp_millis();
            if left > 0 {
                return Err(JobError::snooze(Duration::from_millis(left as u64)));
            }
        }
        Ok(())
    }
}

/// The `n`-th job of the run: the mix described in the module docs.
fn job(n: u64, now_ms: i64) -> NewJob {
    let payload = match n % 100 {
        0..=1 => serde_json::json!({ "discard": true }),
        2..=6 => serde_json::json!({ "fail": 1 }),
        7..=9 => serde_json::json!({ "fail": 2 }),
        10..=14 => serde_json::json!({ "snooze_until_ms": now_ms + 3000 }),
        _ => serde_json::json!({}),
    };
    NewJob::new(KIND, payload)
}

/// Runs the soak on its own private cluster.
pub async fn run(config: &Config, args: &BenchArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.duration >= Duration::from_secs(60),
        "the soak prints one row a minute: give --duration of at least 1m (e.g. 5m or 60m)"
    );
    pg_cluster::with_migrated(&config.database, |cluster, options| async move {
        measure(config, args, &options, cluster.port()).await
    })
    .await
}

async fn measure(
    config: &Config,
    args: &BenchArgs,
    options: &PgConnectOptions,
    port: u16,
) -> anyhow::Result<()> {
    let pool = PgPoolOptions::new()
        .max_connections(3)
        .connect_with(options.clone())
        .await?;
    let mut daemon_config = config.clone();
    daemon_config.queues.clear();
    daemon_config
        .queues
        .insert("default".into(), QueueConfig::default());
    daemon_config.periodic.clear();
    daemon_config.prune.completed_after = args.prune_after;
    daemon_config.prune.discarded_after = args.prune_after;
    let minutes = (args.duration.as_secs() / 60) as usize;
    let per_tick = (args.rate / 10.0).round().max(1.0) as usize;
    let settings: Vec<(String, String)> = db::query_as(
        "SELECT name, setting FROM pg_settings WHERE name IN ('autovacuum_naptime', \
         'autovacuum_vacuum_cost_limit', 'autovacuum_vacuum_cost_delay', 'autovacuum_max_workers', \
         'shared_buffers', 'fsync') ORDER BY name",
    )
    .fetch_all(&pool)
    .await?;
    let reloptions: Option<Vec<String>> =
        db::query_scalar("SELECT reloptions FROM pg_class WHERE oid = 'genq.jobs'::regclass")
            .fetch_one(&pool)
            .await?;
    println!(
        "genq bench --scenario soak: {minutes} min at {} jobs/s ({per_tick} every 100 ms; 85 % succeed, \
         8 % retry once or twice, 5 % snooze 3 s, 2 % discarded); one daemon, concurrency {}, claim batch {}, \
         lease {}, heartbeat {}; prune every {} after {}; private Postgres on port {port}, {} cores",
        per_tick * 10,
        QueueConfig::default().concurrency,
        daemon_config.worker.claim_batch,
        humantime::format_duration(daemon_config.worker.lease),
        humantime::format_duration(daemon_config.worker.heartbeat),
        humantime::format_duration(daemon_config.prune.interval),
        humantime::format_duration(args.prune_after),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let settings: Vec<String> = settings.iter().map(|(n, v)| format!("{n}={v}")).collect();
    println!(
        "server: {}; genq.jobs reloptions: {}",
        settings.join(" "),
        reloptions.unwrap_or_default().join(",")
    );

    let mut registry = Registry::new();
    registry.register(Soak);
    let daemon =
        Daemon::with_connect_options(daemon_config.clone(), registry, options.clone()).start();

    let enqueued = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let enqueuer = tokio::spawn(enqueue_loop(
        pool.clone(),
        per_tick,
        enqueued.clone(),
        stop_rx,
    ));

    println!(
        "{:>3} {:>8} {:>7} {:>8} {:>8} {:>8} {:>8} {:>9} {:>9} {:>4} {:>4} {:>5}",
        "min",
        "enqueued",
        "done/s",
        "p50 ms",
        "p99 ms",
        "heap MB",
        "idx MB",
        "live",
        "dead",
        "av",
        "aa",
        "hot%"
    );
    let start = Instant::now();
    let mut from: DateTime<Utc> = db::query_scalar(NOW).fetch_one(&pool).await?;
    let mut rows: Vec<Sample> = Vec::with_capacity(minutes);
    let mut last: Option<Sample> = None;
    let mut last_enqueued = 0;
    for minute in 1..=minutes {
        let due = start + Duration::from_secs(60 * minute as u64);
        tokio::select! {
            _ = tokio::time::sleep_until(due.into()) => {}
            // Ctrl-C ends the run early with its summary, and the cluster is removed.
            _ = tokio::signal::ctrl_c() => break,
        }
        if enqueuer.is_finished() {
            break;
        }
        let to: DateTime<Utc> = db::query_scalar(NOW).fetch_one(&pool).await?;
        let s = sample(&pool, KIND, from, to).await?;
        let secs = (to - from).num_milliseconds().max(1) as f64 / 1e3;
        let total_enqueued = enqueued.load(Ordering::Relaxed);
        let (av, aa, upd, hot) = match &last {
            Some(l) => (
                s.autovacuum_count - l.autovacuum_count,
                s.autoanalyze_count - l.autoanalyze_count,
                s.tup_upd - l.tup_upd,
                s.tup_hot_upd - l.tup_hot_upd,
            ),
            None => (
                s.autovacuum_count,
                s.autoanalyze_count,
                s.tup_upd,
                s.tup_hot_upd,
            ),
        };
        println!(
            "{minute:>3} {:>8} {:>7.0} {:>8.1} {:>8.1} {:>8.1} {:>8.1} {:>9} {:>9} {av:>4} {aa:>4} {:>5.1}",
            total_enqueued - last_enqueued,
            s.finished as f64 / secs,
            s.pickup_p50_ms.unwrap_or(f64::NAN),
            s.pickup_p99_ms.unwrap_or(f64::NAN),
            mb(s.heap_bytes),
            mb(s.index_bytes),
            s.live_tup,
            s.dead_tup,
            100.0 * hot as f64 / upd.max(1) as f64,
        );
        last_enqueued = total_enqueued;
        from = to;
        last = Some(s.clone());
        rows.push(s);
    }
    let _ = stop_tx.send(true);
    let enqueue_result = enqueuer.await?;
    daemon.shutdown().await;
    enqueue_result?;
    summary(&rows, args, &daemon_config.prune.interval);
    let churn: Vec<ChurnRow> = db::query_as(CHURN).fetch_all(&pool).await?;
    println!("churn by table: name, live, dead, inserted, updated (HOT), deleted, autovacuums, total size");
    for (name, live, dead, ins, upd, hot, del, av, size) in churn {
        println!(
            "  {name:<16} {live:>9} {dead:>9} {ins:>10} {upd:>10} ({hot}) {del:>10} {av:>4} {:>8.1} MB",
            mb(size)
        );
    }
    pool.close().await;
    Ok(())
}

/// Enqueues `per_tick` jobs every 100 ms until told to stop; a late tick is caught up at
/// once (the rate is kept over time, not per tick).
async fn enqueue_loop(
    pool: PgPool,
    per_tick: usize,
    enqueued: Arc<AtomicU64>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut n = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return Ok(()),
        }
        let now_ms = Utc::now().timestamp_millis();
        let batch: Vec<NewJob> = (0..per_tick).map(|i| job(n + i as u64, now_ms)).collect();
        let mut conn = pool.acquire().await?;
        enqueue_many_in(&mut conn, &batch).await?;
        n += per_tick as u64;
        enqueued.store(n, Ordering::Relaxed);
    }
}

fn mb(bytes: i64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn mean(values: impl Iterator<Item = f64>) -> f64 {
    let (sum, n) = values.fold((0.0, 0usize), |(s, n), v| (s + v, n + 1));
    if n == 0 {
        f64::NAN
    } else {
        sum / n as f64
    }
}

/// The end-of-run comparison: first and last windows of 10 minutes (a third of the run
/// when shorter than 30 minutes), and the size after the first prune window.
fn summary(rows: &[Sample], args: &BenchArgs, prune_interval: &Duration) {
    let n = rows.len();
    if n == 0 {
        return;
    }
    let w = if n >= 30 { 10 } else { (n / 3).max(1) };
    let (first, lastw) = (&rows[..w], &rows[n - w..]);
    let p99 = |r: &[Sample]| mean(r.iter().filter_map(|s| s.pickup_p99_ms));
    let p50 = |r: &[Sample]| mean(r.iter().filter_map(|s| s.pickup_p50_ms));
    let dead = |r: &[Sample]| mean(r.iter().map(|s| s.dead_tup as f64));
    println!(
        "summary: pickup p99 (mean of the per-minute p99s) last {w} min {:.1} ms vs first {w} min {:.1} ms: \
         ratio {:.2} (target <= 1.5); p50 {:.1} vs {:.1} ms",
        p99(lastw),
        p99(first),
        p99(lastw) / p99(first),
        p50(lastw),
        p50(first)
    );
    // Jobs finished in minute 0 are due at prune_after and gone by the next prune run.
    let window = (args.prune_after + *prune_interval).as_secs().div_ceil(60) as usize;
    let size = |s: &Sample| mb(s.heap_bytes + s.index_bytes);
    let end = &rows[n - 1];
    match rows.get(window.saturating_sub(1)) {
        Some(after) if window < n => println!(
            "summary: genq.jobs heap+indexes after the first prune window (minute {window}) {:.1} MB, \
             at the end {:.1} MB: ratio {:.2} (flat: <= 1.10); max {:.1} MB",
            size(after),
            size(end),
            size(end) / size(after),
            rows.iter().map(size).fold(0.0, f64::max)
        ),
        _ => println!(
            "summary: the run ends before the first prune window (minute {window}); end size {:.1} MB",
            size(end)
        ),
    }
    println!(
        "summary: dead tuples mean first {w} min {:.0}, last {w} min {:.0}, max {}; \
         autovacuums {}, autoanalyzes {}; HOT updates {:.1} % of {}",
        dead(first),
        dead(lastw),
        rows.iter().map(|s| s.dead_tup).max().unwrap_or(0),
        end.autovacuum_count,
        end.autoanalyze_count,
        100.0 * end.tup_hot_upd as f64 / end.tup_upd.max(1) as f64,
        end.tup_upd
    );
}
