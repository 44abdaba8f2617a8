//! `genq bench` (queue scenario): measures the engine on a throwaway database.
//!
//! 1. bulk enqueue: N no-op jobs, 100k per statement, three ways side by side, each into an
//!    empty table: a SQL caller's JSON document (`genq.enqueue_many(jsonb)`, as the
//!    TypeScript client sends it), the Rust client (`enqueue_many_in`: typed arrays), and,
//!    as the reference either is measured against, a raw `COPY` into a scratch table with
//!    `genq.jobs`' columns, defaults, constraints and indexes;
//! 2. processing: D daemons (each its own pool and worker id, as separate processes would
//!    be) drain them; the rate is N over the time from start to the last `finished_at`;
//! 3. pickup latency: jobs enqueued one at a time into an idle daemon; latency is the
//!    claim time minus the enqueue time, both read from Postgres' clock.

use std::time::{Duration, Instant};

use super::{peak_rss_mib, percentile, BenchArgs};
use crate::config::{Config, QueueConfig};
use crate::daemon::{Daemon, Registry};
use crate::queue::enqueue::enqueue_many_in;
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

    // 1. Bulk enqueue.
    let jobs: Vec<NewJob> = (0..args.jobs)
        .map(|i| NewJob::new("noop", serde_json::json!({ "i": i })))
        .collect();
    let mut conn = pool.acquire().await?;
    // The SQL path first; its jobs are then removed so the Rust client's start from the
    // same empty table (and are the ones processed below).
    let sql_secs = timed(async {
        for chunk in jobs.chunks(BULK_CHUNK) {
            crate::db::query_scalar::<i64>("SELECT genq.enqueue_many($1::jsonb)")
                .bind(sqlx::types::Json(chunk))
                .fetch_one(&mut *conn)
                .await?;
        }
        Ok(())
    })
    .await?;
    crate::db::query("TRUNCATE genq.jobs")
        .execute(&mut *conn)
        .await?;
    let rust_secs = timed(async {
        for chunk in jobs.chunks(BULK_CHUNK) {
            enqueue_many_in(&mut conn, chunk).await?;
        }
        Ok(())
    })
    .await?;
    let copy_secs = copy_reference(&mut conn, &jobs).await?;
    drop(conn);
    let rate = |secs: f64| args.jobs as f64 / secs;
    for (name, secs) in [
        ("bulk enqueue (Rust client):          ", rust_secs),
        ("bulk enqueue (SQL genq.enqueue_many):", sql_secs),
        ("raw COPY, same columns and indexes:  ", copy_secs),
    ] {
        println!(
            "{name} {:>10.0} jobs/s  ({} jobs in {:.3} s, {:.2} of COPY)",
            rate(secs),
            args.jobs,
            secs,
            copy_secs / secs
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
