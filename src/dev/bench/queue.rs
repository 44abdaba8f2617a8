//! `genq bench` (queue scenario): measures the engine on a throwaway database.
//!
//! 1. bulk enqueue: N no-op jobs, 100k per statement, four ways side by side, each into an
//!    empty table: a SQL caller's JSON document (`genq.enqueue_many(jsonb)`, as the
//!    TypeScript client sends it), the typed arrays of `genq.enqueue_many(text[], ...)`
//!    (`enqueue_many_bound`), the Rust client (`enqueue_many_in`: a binary COPY into
//!    `genq.jobs`, its intake trigger included), and, as the reference all are measured
//!    against, a raw `COPY` into a scratch table with `genq.jobs`' columns, defaults,
//!    constraints and indexes (no trigger);
//! 2. processing: D daemons (each its own pool and worker id, as separate processes would
//!    be) drain them; the rate is N over the time from start to the last `finished_at`;
//! 3. pickup latency: jobs enqueued one at a time into an idle daemon; latency is the
//!    claim time minus the enqueue time, both read from Postgres' clock.

use std::time::{Duration, Instant};

use super::{peak_rss_mib, percentile, BenchArgs};
use crate::config::{Config, QueueConfig};
use crate::daemon::{Daemon, Registry};
use crate::queue::enqueue::{enqueue_many_bound, enqueue_many_in};
use crate::queue::{Client, NewJob};

/// Jobs per bulk statement.
const BULK_CHUNK: usize = 100_000;

/// The scratch table of the COPY reference: `genq.jobs`' columns, defaults (identity
/// included), check constraints and indexes, and no rows.
const COPY_TABLE: &str = "CREATE TABLE public.bench_copy (LIKE genq.jobs INCLUDING ALL)";

/// Seconds `work` took.
async fn timed(work: impl std::future::Future<Output = anyhow::Result<()>>) -> anyhow::Result<f64> {
    let started = Instant::now();
    work.await?;
    Ok(started.elapsed().as_secs_f64())
}

/// The reference: the jobs' columns written as COPY text (built in the timing, as the
/// enqueue paths serialise theirs) and copied into [`COPY_TABLE`], which is dropped after.
async fn copy_reference(conn: &mut sqlx::PgConnection, jobs: &[NewJob]) -> anyhow::Result<f64> {
    crate::db::query(COPY_TABLE).execute(&mut *conn).await?;
    let secs = timed(async {
        for chunk in jobs.chunks(BULK_CHUNK) {
            let mut text = String::with_capacity(chunk.len() * 48);
            for job in chunk {
                let payload = job.payload.to_string().replace('\\', "\\\\");
                text.push_str(&format!(
                    "{}\t{}\t{}\t{}\t{}\n",
                    job.kind, payload, job.queue, job.priority, job.max_attempts
                ));
            }
            let mut copy = conn
                .copy_in_raw(
                    "COPY public.bench_copy (kind, payload, queue, priority, max_attempts) FROM STDIN",
                )
                .await?;
            copy.send(text.into_bytes()).await?;
            copy.finish().await?;
        }
        Ok(())
    })
    .await?;
    crate::db::query("DROP TABLE public.bench_copy")
        .execute(&mut *conn)
        .await?;
    Ok(secs)
}

/// The bulk-enqueue paths the bench compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bulk {
    /// `Client::enqueue_many` / `enqueue_many_in`: COPY for these batches.
    Client = 0,
    /// `genq.enqueue_many(text[], jsonb[], ...)`, bound arrays.
    Arrays = 1,
    /// `genq.enqueue_many(jsonb)`, one JSON document (the TypeScript client's path).
    Json = 2,
    /// The reference: a raw COPY into a scratch copy of the table.
    RawCopy = 3,
}

impl Bulk {
    const ALL: [Bulk; 4] = [Bulk::Client, Bulk::Arrays, Bulk::Json, Bulk::RawCopy];

    fn label(self) -> &'static str {
        match self {
            Bulk::Client => "Rust client (COPY into genq.jobs):  ",
            Bulk::Arrays => "SQL, typed arrays (enqueue_many):   ",
            Bulk::Json => "SQL, one JSON document:             ",
            Bulk::RawCopy => "raw COPY, same columns and indexes: ",
        }
    }

    /// Seconds this path takes to enqueue `jobs`, `BULK_CHUNK` per statement.
    async fn run(self, conn: &mut sqlx::PgConnection, jobs: &[NewJob]) -> anyhow::Result<f64> {
        if self == Bulk::RawCopy {
            return copy_reference(conn, jobs).await;
        }
        timed(async {
            for chunk in jobs.chunks(BULK_CHUNK) {
                match self {
                    Bulk::Client => {
                        enqueue_many_in(conn, chunk).await?;
                    }
                    Bulk::Arrays => {
                        enqueue_many_bound(conn, chunk).await?;
                    }
                    // Json (RawCopy returned above).
                    _ => {
                        crate::db::query_scalar::<i64>("SELECT genq.enqueue_many($1::jsonb)")
                            .bind(sqlx::types::Json(chunk))
                            .fetch_one(&mut *conn)
                            .await?;
                    }
                }
            }
            Ok(())
        })
        .await
    }
}

/// Runs the queue scenario on a migrated throwaway database.
pub async fn measure(
    config: &Config,
    args: &BenchArgs,
    options: &sqlx::postgres::PgConnectOptions,
) -> anyhow::Result<()> {
    let pool = crate::db::pool_options(&config.database)
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

    // 1. Bulk enqueue, every path into an empty table, round after round.
    let jobs: Vec<NewJob> = (0..args.jobs)
        .map(|i| NewJob::new("noop", serde_json::json!({ "i": i })))
        .collect();
    let mut conn = pool.acquire().await?;
    let mut secs: [Vec<f64>; 4] = Default::default();
    for round in 0..args.enqueue_rounds.max(1) {
        for k in 0..Bulk::ALL.len() {
            let path = Bulk::ALL[(k + round) % Bulk::ALL.len()];
            crate::db::query("TRUNCATE genq.jobs")
                .execute(&mut *conn)
                .await?;
            // Each path starts after a checkpoint, so none pays for another's (fsync is on).
            let _ = crate::db::query("CHECKPOINT").execute(&mut *conn).await;
            secs[path as usize].push(path.run(&mut conn, &jobs).await?);
        }
    }
    // The jobs processed below: the Rust client's.
    crate::db::query("TRUNCATE genq.jobs")
        .execute(&mut *conn)
        .await?;
    Bulk::Client.run(&mut conn, &jobs).await?;
    drop(conn);
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let medians: Vec<f64> = secs.iter_mut().map(median).collect();
    let copy_secs = medians[Bulk::RawCopy as usize];
    println!(
        "bulk enqueue: {} jobs per path, {} round(s); median (best) of each path, ratio of medians",
        args.jobs,
        args.enqueue_rounds.max(1)
    );
    for path in Bulk::ALL {
        let (mid, best) = (medians[path as usize], secs[path as usize][0]);
        println!(
            "  {} {:>9.0} jobs/s ({:>9.0} best)  {:.3} s  {:.2} of COPY",
            path.label(),
            args.jobs as f64 / mid,
            args.jobs as f64 / best,
            mid,
            copy_secs / mid
        );
    }
    // 2. Processing: the bench's settings, then (--compare-defaults) the shipped defaults
    // with and without the claim-ahead buffer, each on a fresh backlog of the same size.
    let mut tuned = config.clone();
    tuned.queues.clear();
    tuned.queues.insert(
        "default".into(),
        QueueConfig::with_concurrency(args.concurrency),
    );
    tuned.worker.claim_batch = args.claim_batch;
    tuned.database.max_connections = 4;
    let tuned_rate = process(&pool, &tuned, args, options, "bench settings").await?;
    if args.compare_defaults {
        // What `genq run` gets from config/genq.toml: Config::default()'s engine sections
        // (and pool), on the configured server.
        let mut shipped = Config {
            database: config.database.clone(),
            ..Config::default()
        };
        shipped.database.max_connections = Config::default().database.max_connections;
        shipped.queues.clear();
        shipped
            .queues
            .insert("default".into(), QueueConfig::default());
        let mut unbuffered = shipped.clone();
        unbuffered.worker.claim_ahead = 0;
        let mut runs = Vec::new();
        for (label, c) in [
            ("shipped defaults", &shipped),
            ("defaults, claim_ahead 0", &unbuffered),
        ] {
            enqueue_all(&pool, &jobs).await?;
            runs.push((label, process(&pool, c, args, options, label).await?));
        }
        for (label, rate) in runs {
            println!("  ratio {label} / bench settings: {:.2}", rate / tuned_rate);
        }
    }

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
        let rows: Vec<Option<f64>> = crate::db::query_scalar(
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
        "pickup latency: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms  ({} jobs one at a time, {})",
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(f64::NAN),
        latencies.len(),
        if config.database.pooler == crate::db::Pooler::Transaction {
            "polling"
        } else {
            "NOTIFY wake-up"
        }
    );
    if let Some(rss) = peak_rss_mib() {
        println!("peak RSS:       {rss:.1} MiB");
    }
    pool.close().await;
    Ok(())
}

async fn enqueue_all(pool: &sqlx::PgPool, jobs: &[NewJob]) -> anyhow::Result<()> {
    let mut conn = pool.acquire().await?;
    for chunk in jobs.chunks(BULK_CHUNK) {
        enqueue_many_in(&mut conn, chunk).await?;
    }
    Ok(())
}

/// Drains the no-op backlog with `--daemons` daemons configured by `config` and prints the
/// rate: jobs completed over the time from just before the daemons start to the last
/// `finished_at`. Returns the rate.
async fn process(
    pool: &sqlx::PgPool,
    config: &Config,
    args: &BenchArgs,
    options: &sqlx::postgres::PgConnectOptions,
    label: &str,
) -> anyhow::Result<f64> {
    // Simple protocol, never inside a transaction (also through a pooler).
    sqlx::raw_sql("VACUUM ANALYZE genq.jobs")
        .execute(pool)
        .await?;
    let before: i64 = crate::db::query_scalar(
        "SELECT count(*) FROM genq.jobs WHERE state = 'completed' AND kind = 'noop'",
    )
    .fetch_one(pool)
    .await?;
    let t0: chrono::DateTime<chrono::Utc> = crate::db::query_scalar("SELECT clock_timestamp()")
        .fetch_one(pool)
        .await?;
    let daemons: Vec<_> = (0..args.daemons)
        .map(|_| {
            Daemon::with_connect_options(config.clone(), Registry::new(), options.clone()).start()
        })
        .collect();
    let wall = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let pending: bool = crate::db::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM genq.jobs WHERE state IN ('available', 'running', 'retryable') AND kind = 'noop')",
        )
        .fetch_one(pool)
        .await?;
        if !pending {
            break;
        }
        if wall.elapsed() > Duration::from_secs(600) {
            anyhow::bail!("processing did not finish within 10 minutes");
        }
    }
    let t1: chrono::DateTime<chrono::Utc> =
        crate::db::query_scalar("SELECT max(finished_at) FROM genq.jobs WHERE kind = 'noop'")
            .fetch_one(pool)
            .await?;
    for d in daemons {
        d.shutdown().await;
    }
    let completed: i64 = crate::db::query_scalar(
        "SELECT count(*) FROM genq.jobs WHERE state = 'completed' AND kind = 'noop'",
    )
    .fetch_one(pool)
    .await?;
    let completed = completed - before;
    let secs = (t1 - t0).num_microseconds().unwrap_or(1) as f64 / 1e6;
    let rate = completed as f64 / secs;
    let q = &config.queues["default"];
    println!(
        "processing:     {rate:>10.0} jobs/s  ({completed} completed in {secs:.3} s; {label}: concurrency {}, claim batch {}, claim_ahead {}, pool {})",
        q.concurrency, config.worker.claim_batch, config.worker.claim_ahead, config.database.max_connections
    );
    Ok(rate)
}
