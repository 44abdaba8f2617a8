//! `genq bench --scenario generation`: many generations in flight at once against the
//! in-process fake provider, with one daemon. Prints total time, peak RSS (of this process,
//! which also hosts the fake), database connections used, the most jobs running at once
//! (a worker slot held per rendering generation would show here as thousands), and the
//! generation overhead: the time genq spends on a generation outside the provider's render,
//! split into processing (the submit job, and the final poll that copies the output and
//! settles) and queue wait (from enqueue to the submit job's start).

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::{peak_rss_mib, percentile, BenchArgs};
use crate::config::{Config, QueueConfig};
use crate::daemon::{Daemon, Registry};
use crate::dev::fake_provider::{self as fake, FakeConfig};
use crate::jobs::generation::Pipeline;
use crate::providers::ProviderKind;

/// Enqueues `$1` generations of cost 1 for users `bench-user-0..99`, the three dialects in turn.
pub(super) const ENQUEUE: &str = r#"
SELECT count(genq.enqueue_generation(
    'bench-user-' || (g % 100),
    (ARRAY['fal', 'byteplus', 'replicate'])[1 + g % 3],
    (ARRAY['fal-ai/kling-video/v2.1/master/image-to-video', 'doubao-seedance-1-0-pro-250528',
           'bytedance/seedance-1-pro'])[1 + g % 3],
    jsonb_build_object('prompt', 'benchmark shot ' || g, 'image_url', 'https://example.com/in.png'),
    1, 'bench:' || g))
  FROM generate_series(1, $1) g
"#;

const OVERHEAD: &str = r#"
SELECT extract(epoch FROM s.finished_at - s.attempted_at + p.finished_at - p.attempted_at)::float8,
       extract(epoch FROM s.attempted_at - g.created_at)::float8,
       extract(epoch FROM g.finished_at - g.created_at)::float8
  FROM genq.generations g
  JOIN genq.jobs s ON s.unique_key = 'generation.submit:' || g.id
  JOIN genq.jobs p ON p.unique_key = 'generation.poll:' || g.id
 WHERE g.state = 'succeeded'
"#;

/// The daemon configuration of the generation benchmarks: the fake provider (its limits out
/// of the way), a local store in `blobs`, only the generation queue, `args.pool` connections.
pub(super) fn pipeline_config(
    config: &Config,
    args: &BenchArgs,
    fake: &fake::FakeServer,
    blobs: &std::path::Path,
) -> Config {
    let mut daemon_config = config.clone();
    daemon_config.providers = fake.providers_config();
    // The fake serves its output files on loopback, which downloads refuse by default.
    daemon_config.outbound.allow_private = vec!["127.0.0.0/8".into()];
    daemon_config.providers.webhook_base_url = "http://127.0.0.1:9".into();
    for kind in ProviderKind::ALL {
        let limits = daemon_config
            .providers
            .limits
            .entry(kind.as_str().into())
            .or_default();
        limits.max_in_flight = 500;
        limits.rate_per_sec = 100_000.0;
        limits.burst = 100_000;
    }
    daemon_config.storage.backend = "local".into();
    daemon_config.storage.local.dir = blobs.to_string_lossy().into_owned();
    daemon_config.queues.clear();
    daemon_config.queues.insert(
        crate::jobs::generation::QUEUE.into(),
        QueueConfig::with_concurrency(args.generation_concurrency),
    );
    daemon_config.database.max_connections = args.pool;
    daemon_config
}

/// The in-process fake provider (all three dialects) rendering for `render_time`, each
/// account rendering at most `account_concurrency` at once (`None`: unlimited).
pub(super) async fn serve_fake(
    render_time: Duration,
    account_concurrency: Option<usize>,
) -> anyhow::Result<fake::FakeServer> {
    fake::serve(
        "127.0.0.1:0".parse()?,
        FakeConfig {
            render_time,
            account_concurrency,
            ..FakeConfig::default()
        },
    )
    .await
}

/// Prints the result of `genq.check_ledger()`.
pub(super) fn print_ledger(violations: i64) {
    let status = if violations == 0 {
        "clean".to_string()
    } else {
        format!("{violations} violations")
    };
    println!("genq.check_ledger():  {status}");
}

/// Gives each of the 100 benchmark users `n` credits.
pub(super) async fn grant_credits(pool: &sqlx::PgPool, n: usize) -> Result<(), sqlx::Error> {
    crate::db::query("SELECT genq.grant_credits('bench-user-' || u, $1, 'bench-grant-' || u) FROM generate_series(0, 99) u")
        .bind(n as i64)
        .execute(pool)
        .await?;
    Ok(())
}

/// Runs the generation scenario on a migrated throwaway database named `db_name`.
pub async fn measure(
    config: &Config,
    args: &BenchArgs,
    options: &PgConnectOptions,
    db_name: &str,
) -> anyhow::Result<()> {
    let n = args.generations;
    let fake = serve_fake(args.render_time(), args.account_concurrency).await?;
    let blobs = tempfile::tempdir()?;
    let daemon_config = pipeline_config(config, args, &fake, blobs.path());

    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options.clone())
        .await?;
    grant_credits(&pool, n).await?;
    println!(
        "genq bench --scenario generation: {n} generations (fal, BytePlus, Replicate in turn), fake render time {}, \
         one daemon, concurrency {}, pool {}",
        humantime::format_duration(args.render_time()),
        args.generation_concurrency,
        args.pool
    );
    let started = Instant::now();
    crate::db::query(ENQUEUE)
        .bind(n as i64)
        .execute(&pool)
        .await?;
    println!(
        "enqueued {n} generations (holds + submit jobs) in {:.2} s",
        started.elapsed().as_secs_f64()
    );

    let mut registry = Registry::new();
    Arc::new(Pipeline::from_config(&daemon_config)?).register(&mut registry);
    let wall = Instant::now();
    let daemon = Daemon::with_connect_options(daemon_config, registry, options.clone()).start();
    let (mut max_connections, mut max_running, mut max_in_flight_at_provider) = (0i64, 0i64, 0i64);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (open, connections, running, submitted): (i64, i64, i64, i64) = crate::db::query_as(
            "SELECT (SELECT count(*) FROM genq.generations WHERE state NOT IN ('succeeded', 'failed', 'cancelled')),
                    (SELECT count(*) FROM pg_stat_activity WHERE datname = $1 AND application_name = 'genq'),
                    (SELECT count(*) FROM genq.jobs WHERE state = 'running'),
                    (SELECT count(*) FROM genq.generations WHERE state = 'submitted')",
        )
        .bind(db_name)
        .fetch_one(&pool)
        .await?;
        max_connections = max_connections.max(connections);
        max_running = max_running.max(running);
        max_in_flight_at_provider = max_in_flight_at_provider.max(submitted);
        if open == 0 {
            break;
        }
        if wall.elapsed() > Duration::from_secs(1800) {
            anyhow::bail!("generations did not finish within 30 minutes ({open} open)");
        }
    }
    let total = wall.elapsed();
    daemon.shutdown().await;
    fake.stop().await;

    let rows: Vec<(f64, f64, f64)> = crate::db::query_as(OVERHEAD).fetch_all(&pool).await?;
    let mut processing: Vec<f64> = rows.iter().map(|r| r.0 * 1000.0).collect();
    let mut waiting: Vec<f64> = rows.iter().map(|r| r.1 * 1000.0).collect();
    let mut end_to_end: Vec<f64> = rows.iter().map(|r| r.2).collect();
    processing.sort_by(f64::total_cmp);
    waiting.sort_by(f64::total_cmp);
    end_to_end.sort_by(f64::total_cmp);
    let violations: i64 = crate::db::query_scalar("SELECT count(*) FROM genq.check_ledger()")
        .fetch_one(&pool)
        .await?;
    println!(
        "succeeded:            {} of {n} in {:.1} s ({:.0} generations/s)",
        rows.len(),
        total.as_secs_f64(),
        rows.len() as f64 / total.as_secs_f64()
    );
    println!("in flight at once:    {max_in_flight_at_provider} generations rendering at the provider (peak)");
    println!("jobs running at once: {max_running} (peak): no worker slot is held while a provider renders");
    println!(
        "database connections: {max_connections} (peak: the daemon's pool of {} and its LISTEN connection)",
        args.pool
    );
    println!(
        "overhead, processing: p50 {:.1} ms, p99 {:.1} ms  (submit job + final poll with output copy and settlement)",
        percentile(&processing, 0.5),
        percentile(&processing, 0.99)
    );
    println!(
        "overhead, queue wait: p50 {:.1} ms, p99 {:.1} ms  (enqueue to submit start, all {n} enqueued at once)",
        percentile(&waiting, 0.5),
        percentile(&waiting, 0.99)
    );
    println!(
        "end to end:           p50 {:.1} s, p99 {:.1} s  (render time {:.1} s; the rest is poll spacing and queueing)",
        percentile(&end_to_end, 0.5),
        percentile(&end_to_end, 0.99),
        args.render_time().as_secs_f64()
    );
    if let Some(rss) = peak_rss_mib() {
        println!("peak RSS:             {rss:.1} MiB (this process: daemon and fake provider)");
    }
    print_ledger(violations);
    pool.close().await;
    Ok(())
}
