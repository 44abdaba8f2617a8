//! `genq bench --scenario fair-claim`: does the fair claim keep up with deep backlogs? Two
//! backlogs of no-op jobs in one queue (inserted from `generate_series`), one key with `--one-key-jobs` jobs and
//! `--many-keys` keys with `--jobs-per-key` each, are each drained twice by one daemon
//! (`--concurrency`, `--claim-batch`): with the queue fair and not fair. Prints jobs/s of
//! each and the on/off ratio side by side. The rate is the jobs over the time from the
//! daemon's start to the last `finished_at`, so claims and completions both count, as in
//! `--scenario queue`.

use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::BenchArgs;
use crate::config::{Config, QueueConfig};
use crate::daemon::{Daemon, Registry};

const QUEUE: &str = "bench-fair";

/// Inserts `$2` no-op jobs (numbers `$1..$1+$2-1`) into the bench queue, job `g` under the
/// key `k<g % $3>`, so each key's jobs are spread through the backlog. A plain INSERT from
/// `generate_series`, not `genq.enqueue_many`: a 1,000,000-job backlog goes in in seconds
/// (the JSON path took ~10 s per 100,000 here); the keys are marked waiting by `MARK`, as
/// enqueue would. Both queues get the same rows (a queue that is not fair keeps a key it
/// is given, as `enqueue_many` does).
const ENQUEUE: &str = r#"
INSERT INTO genq.jobs (kind, queue, fairness_key)
SELECT 'noop', 'bench-fair', 'k' || (g % $3)
  FROM generate_series($1, $1 + $2 - 1) g
"#;

/// Marks each of the `$1` keys waiting, as enqueue into a fair queue does per key
/// (`genq.mark_fair_key`), in one statement: one call per key took ~1 ms on the loaded
/// machine (2 minutes for 100,000 keys). Writing `genq.fair_keys` directly is safe here
/// only because nothing else runs on the bench queue meanwhile (no claim to race with).
const MARK: &str = r#"
INSERT INTO genq.fair_keys AS fk (queue, key, vtime, waiting)
SELECT 'bench-fair', 'k' || k, q.fair_clock, true
  FROM generate_series(0, $1 - 1) k, genq.queues q
 WHERE q.name = 'bench-fair'
ON CONFLICT (queue, key) DO UPDATE
   SET waiting = true, vtime = greatest(fk.vtime, EXCLUDED.vtime), updated_at = now()
"#;

const PENDING: &str = "SELECT EXISTS (SELECT 1 FROM genq.jobs \
     WHERE queue = 'bench-fair' AND state IN ('available', 'running', 'retryable'))";

const DONE: &str = "SELECT count(*), max(finished_at) FROM genq.jobs \
     WHERE queue = 'bench-fair' AND state = 'completed'";

/// Runs the fair-claim scenario on a migrated throwaway database.
pub async fn measure(
    config: &Config,
    args: &BenchArgs,
    options: &PgConnectOptions,
) -> anyhow::Result<()> {
    let f = &args.fairness;
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options.clone())
        .await?;
    println!(
        "genq bench --scenario fair-claim: one daemon, concurrency {}, claim batch {}, {} cores \
         (a shared machine: read the figures as indicative)",
        args.concurrency,
        args.claim_batch,
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let backlogs = [
        (
            format!("1 key x {} jobs", f.one_key_jobs),
            f.one_key_jobs,
            1usize,
        ),
        (
            format!("{} keys x {} jobs", f.many_keys, f.jobs_per_key),
            f.many_keys * f.jobs_per_key,
            f.many_keys,
        ),
    ];
    let mut rows = Vec::new();
    for (label, jobs, keys) in &backlogs {
        let on = drain(config, args, options, &pool, *jobs, *keys, true).await?;
        let off = drain(config, args, options, &pool, *jobs, *keys, false).await?;
        rows.push((label.clone(), on, off));
    }
    println!();
    println!(
        "{:<28} {:>16} {:>16} {:>10}",
        "backlog", "fair (jobs/s)", "not fair", "on/off"
    );
    for (label, on, off) in rows {
        println!("{label:<28} {on:>16.0} {off:>16.0} {:>10.2}", on / off);
    }
    pool.close().await;
    Ok(())
}

/// Enqueues the backlog, drains it with one daemon, returns jobs/s.
#[allow(clippy::too_many_arguments)]
async fn drain(
    config: &Config,
    args: &BenchArgs,
    options: &PgConnectOptions,
    pool: &PgPool,
    jobs: usize,
    keys: usize,
    fair: bool,
) -> anyhow::Result<f64> {
    reset(pool, fair).await?;
    let started = Instant::now();
    let mut done = 0usize;
    while done < jobs {
        let n = (jobs - done).min(500_000);
        crate::db::query(ENQUEUE)
            .bind(done as i64)
            .bind(n as i64)
            .bind(keys as i64)
            .execute(pool)
            .await?;
        done += n;
    }
    if fair {
        crate::db::query(MARK)
            .bind(keys as i64)
            .execute(pool)
            .await?;
    }
    // One statement each: VACUUM refuses a multi-command string.
    for table in ["genq.jobs", "genq.fair_keys"] {
        sqlx::raw_sql(&format!("VACUUM ANALYZE {table}"))
            .execute(pool)
            .await?;
    }
    println!(
        "  {} backlog: {jobs} jobs over {keys} key(s) enqueued in {:.1} s",
        if fair { "fair" } else { "not fair" },
        started.elapsed().as_secs_f64()
    );

    let mut daemon_config = config.clone();
    daemon_config.queues.clear();
    daemon_config.queues.insert(
        QUEUE.into(),
        QueueConfig::with_concurrency(args.concurrency),
    );
    super::fairness::set_queue_fair(&mut daemon_config, QUEUE, fair);
    daemon_config.periodic.clear();
    daemon_config.worker.claim_batch = args.claim_batch;
    daemon_config.database.max_connections = 4;
    let t0: chrono::DateTime<chrono::Utc> = crate::db::query_scalar("SELECT clock_timestamp()")
        .fetch_one(pool)
        .await?;
    let daemon =
        Daemon::with_connect_options(daemon_config, Registry::new(), options.clone()).start();
    let wall = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let pending: bool = crate::db::query_scalar(PENDING).fetch_one(pool).await?;
        if !pending {
            break;
        }
        if wall.elapsed() > Duration::from_secs(1800) {
            anyhow::bail!("the backlog did not drain within 30 minutes");
        }
    }
    daemon.shutdown().await;
    let (completed, t1): (i64, Option<chrono::DateTime<chrono::Utc>>) =
        crate::db::query_as(DONE).fetch_one(pool).await?;
    let secs = t1.map_or(f64::NAN, |t1| {
        (t1 - t0).num_microseconds().unwrap_or(1) as f64 / 1e6
    });
    let rate = completed as f64 / secs;
    println!("  drained {completed} in {secs:.2} s: {rate:.0} jobs/s");
    Ok(rate)
}

/// Empties the bench queue and sets whether it is fair before the backlog goes in.
async fn reset(pool: &PgPool, fair: bool) -> anyhow::Result<()> {
    crate::db::query("DELETE FROM genq.jobs WHERE queue = $1")
        .bind(QUEUE)
        .execute(pool)
        .await?;
    super::fairness::set_queue_fair_now(pool, QUEUE, fair).await?;
    Ok(())
}
