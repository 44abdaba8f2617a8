//! `genq bench --scenario retention`: how fast the retention jobs keep the promises. Three
//! measurements on a local store in a temporary directory (real files, real fsync-free
//! unlinks), with an in-process daemon running only the retention queue:
//!
//! 1. `--blobs` due references of 100 users, registered through `genq.register_blob` and
//!    back-dated: time from one sweep to every blob deleted and logged (blobs/s), and the
//!    delete jobs' durations;
//! 2. `--generations` finished generations past the inputs window: prompts scrubbed/s;
//! 3. one account erasure of a user with `--erasure-blobs` blobs and 100 generations:
//!    request to completion.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use super::{percentile, BenchArgs};
use crate::config::{Config, QueueConfig};
use crate::daemon::{Daemon, Registry};
use crate::jobs::privacy::Retention;
use crate::storage::local::LocalStore;
use crate::storage::Stores;

const REGISTER: &str = r#"
SELECT genq.register_blob('bench-user-' || (i % 100), 'reference', 'local',
                          'ref/bench-user-' || (i % 100) || '/' || i || '.png')
  FROM generate_series(1, $1) i
"#;

const REGISTER_USER: &str = r#"
SELECT genq.register_blob('bench-erased', 'reference', 'local', 'ref/bench-erased/' || i || '.png')
  FROM generate_series(1, $1) i
"#;

/// Runs the retention scenario on a migrated throwaway database.
pub async fn measure(
    config: &Config,
    args: &BenchArgs,
    options: &PgConnectOptions,
) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options.clone())
        .await?;
    let n = args.blobs as i64;
    println!(
        "genq bench --scenario retention: {n} due blobs, {} finished generations, \
         an erasure of {} blobs; retention concurrency {}, batch {}",
        args.generations, args.erasure_blobs, args.retention_concurrency, args.retention_batch
    );

    // Files on disk and their registrations, all due.
    let started = Instant::now();
    for i in 1..=n {
        write(dir.path(), &format!("ref/bench-user-{}/{i}.png", i % 100))?;
    }
    crate::db::query(REGISTER).bind(n).execute(&pool).await?;
    crate::db::query("UPDATE genq.blobs SET created_at = created_at - interval '8 days', expires_at = now() - interval '1 day'")
        .execute(&pool)
        .await?;
    // Finished generations whose prompts are past the inputs window.
    let g = args.generations as i64;
    crate::db::query("SELECT genq.grant_credits('bench-user-' || u, $1, 'bench-grant-' || u) FROM generate_series(0, 99) u")
        .bind(g + 1)
        .execute(&pool)
        .await?;
    crate::db::query(
        "SELECT genq.enqueue_generation('bench-user-' || (i % 100), 'fal', 'fal-ai/flux/dev',
                jsonb_build_object('prompt', 'benchmark prompt ' || i), 1, 'bench:' || i)
           FROM generate_series(1, $1) i",
    )
    .bind(g)
    .execute(&pool)
    .await?;
    // Cancelled before submission (holds released), then aged past the inputs window.
    crate::db::query("SELECT genq.cancel_generation(id) FROM genq.generations")
        .execute(&pool)
        .await?;
    crate::db::query("UPDATE genq.generations SET finished_at = now() - interval '31 days'")
        .execute(&pool)
        .await?;
    crate::db::query("VACUUM ANALYZE genq.blobs, genq.generations, genq.jobs")
        .execute(&pool)
        .await?;
    println!(
        "set up {n} files and blobs and {g} generations in {:.1} s",
        started.elapsed().as_secs_f64()
    );

    let mut daemon_config = config.clone();
    daemon_config.queues.clear();
    daemon_config.queues.insert(
        crate::jobs::privacy::QUEUE.into(),
        QueueConfig::with_concurrency(args.retention_concurrency),
    );
    daemon_config.periodic.clear();
    daemon_config.retention.interval = Duration::from_secs(3600);
    daemon_config.retention.batch = args.retention_batch;
    daemon_config.database.max_connections = args.retention_concurrency + 4;
    let local = Arc::new(LocalStore::new(dir.path())?);
    let retention = Arc::new(Retention {
        stores: Stores::new(&daemon_config.storage, local),
        config: daemon_config.retention.clone(),
        hash_key: Some(b"bench-key".to_vec()),
    });
    let mut registry = Registry::new();
    retention.register(&mut registry);
    let daemon = Daemon::with_connect_options(daemon_config, registry, options.clone()).start();

    // 1 and 2: one sweep; everything due is scrubbed or deleted.
    let wall = Instant::now();
    crate::db::query("SELECT genq.run_retention_sweep()")
        .execute(&pool)
        .await?;
    let mut scrubbed_at = None;
    loop {
        let (live, unscrubbed): (i64, i64) = crate::db::query_as(
            "SELECT (SELECT count(*) FROM genq.blobs WHERE deleted_at IS NULL),
                    (SELECT count(*) FROM genq.generations WHERE scrubbed_at IS NULL)",
        )
        .fetch_one(&pool)
        .await?;
        if unscrubbed == 0 && scrubbed_at.is_none() {
            scrubbed_at = Some(wall.elapsed());
        }
        if live == 0 && unscrubbed == 0 {
            break;
        }
        anyhow::ensure!(
            wall.elapsed() < Duration::from_secs(600),
            "retention bench: {live} blobs still live after 10 min"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let secs = wall.elapsed().as_secs_f64();
    let logged: i64 =
        crate::db::query_scalar("SELECT count(*) FROM genq.deletion_log WHERE subject = 'blob'")
            .fetch_one(&pool)
            .await?;
    let left = files_left(dir.path())?;
    let durations = job_durations(&pool, crate::jobs::privacy::delete::KIND).await?;
    println!(
        "deleted {n} blobs in {secs:.2} s: {:.0} blobs/s; deletion_log rows {logged}; files left {left}",
        n as f64 / secs
    );
    println!(
        "delete jobs: {} of up to {} blobs, duration p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        durations.len(),
        args.retention_batch,
        percentile(&durations, 0.50) * 1e3,
        percentile(&durations, 0.99) * 1e3,
        durations.last().copied().unwrap_or(f64::NAN) * 1e3
    );
    if let Some(t) = scrubbed_at {
        println!(
            "scrubbed {g} generation inputs within {:.2} s of the sweep ({:.0}/s)",
            t.as_secs_f64(),
            g as f64 / t.as_secs_f64().max(1e-3)
        );
    }

    // 3: one erasure.
    let m = args.erasure_blobs as i64;
    for i in 1..=m {
        write(dir.path(), &format!("ref/bench-erased/{i}.png"))?;
    }
    crate::db::query(REGISTER_USER)
        .bind(m)
        .execute(&pool)
        .await?;
    crate::db::query("SELECT genq.grant_credits('bench-erased', 1000, 'bench-erased-grant')")
        .execute(&pool)
        .await?;
    crate::db::query(
        "SELECT genq.enqueue_generation('bench-erased', 'fal', 'fal-ai/flux/dev',
                jsonb_build_object('prompt', 'private ' || i), 1, 'erased:' || i)
           FROM generate_series(1, 100) i",
    )
    .execute(&pool)
    .await?;
    let wall = Instant::now();
    let id: i64 = crate::db::query_scalar("SELECT genq.request_erasure('bench-erased')")
        .fetch_one(&pool)
        .await?;
    loop {
        let done: bool = crate::db::query_scalar(
            "SELECT completed_at IS NOT NULL FROM genq.erasure_requests WHERE id = $1",
        )
        .bind(id)
        .fetch_one(&pool)
        .await?;
        if done {
            break;
        }
        anyhow::ensure!(
            wall.elapsed() < Duration::from_secs(600),
            "retention bench: erasure not complete after 10 min"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let violations: i64 = crate::db::query_scalar("SELECT count(*) FROM genq.check_ledger()")
        .fetch_one(&pool)
        .await?;
    println!(
        "erasure of a user with {m} blobs and 100 queued generations: complete in {:.2} s; \
         files left {}; check_ledger violations {violations}",
        wall.elapsed().as_secs_f64(),
        files_left(&dir.path().join("ref/bench-erased")).unwrap_or(0)
    );
    if let Some(rss) = super::peak_rss_mib() {
        println!("peak RSS {rss:.0} MiB");
    }
    daemon.shutdown().await;
    Ok(())
}

fn write(root: &std::path::Path, key: &str) -> std::io::Result<()> {
    let path = root.join(key);
    std::fs::create_dir_all(path.parent().expect("key has a parent"))?;
    std::fs::write(path, b"bench")
}

fn files_left(root: &std::path::Path) -> std::io::Result<usize> {
    let mut n = 0;
    if !root.exists() {
        return Ok(0);
    }
    for entry in std::fs::read_dir(root)? {
        let entry = entry?;
        if entry.file_type()?.is_dir() {
            n += files_left(&entry.path())?;
        } else {
            n += 1;
        }
    }
    Ok(n)
}

async fn job_durations(pool: &PgPool, kind: &str) -> anyhow::Result<Vec<f64>> {
    let mut d: Vec<f64> = crate::db::query_scalar(
        "SELECT extract(epoch FROM finished_at - attempted_at)::float8 FROM genq.jobs
          WHERE kind = $1 AND state = 'completed' AND attempted_at IS NOT NULL",
    )
    .bind(kind)
    .fetch_all(pool)
    .await?;
    d.sort_by(f64::total_cmp);
    Ok(d)
}
