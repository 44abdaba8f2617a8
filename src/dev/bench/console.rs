//! `genq bench --scenario console`: page times of the operator console on a large table.
//! Fills `genq.jobs` with `--jobs` rows in one `generate_series` statement (mostly
//! completed, some discarded with errors, some waiting, spread over five queues and ten
//! kinds and the last day) plus 100,000 generations, samples the statistics once, starts a
//! daemon that works none of those queues, logs in to its console over loopback HTTP and
//! requests each page `--requests` times in a row. Prints p50, p95 and max per page.

use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::{percentile, BenchArgs};
use crate::config::{Config, QueueConfig};
use crate::daemon::{Daemon, Registry};
use crate::http::{self, AdminToken};

const FILL_QUEUES: &str = r#"
INSERT INTO genq.queues (name) SELECT 'bench-q' || q FROM generate_series(0, 4) q
ON CONFLICT (name) DO NOTHING
"#;

// Ids ascend with created_at, as in production.
const FILL_JOBS: &str = r#"
INSERT INTO genq.jobs (queue, kind, payload, state, attempt, errors, created_at, run_at, finished_at)
SELECT 'bench-q' || (g % 5), 'bench.kind' || (g % 10),
       jsonb_build_object('n', g, 'note', CASE WHEN g % 100000 = 0 THEN 'needle' ELSE 'hay' END),
       s.state::genq.job_state, 1,
       CASE WHEN s.state = 'discarded'
            THEN jsonb_build_array(jsonb_build_object('attempt', 1, 'error', 'bench failure ' || g))
            ELSE '[]'::jsonb END,
       t.at, t.at,
       CASE WHEN s.state IN ('completed', 'discarded') THEN t.at + interval '1 second' END
  FROM generate_series(1, $1) g
 CROSS JOIN LATERAL (SELECT now() - interval '1 day' * (1 - g::float8 / $1) AS at) t
 CROSS JOIN LATERAL (SELECT CASE WHEN g % 100 < 90 THEN 'completed'
                                 WHEN g % 100 < 95 THEN 'discarded'
                                 WHEN g % 100 < 99 THEN 'available'
                                 ELSE 'retryable' END AS state) s
"#;

const FILL_GENERATIONS: &str = r#"
INSERT INTO genq.generations (user_id, provider, model, input, cost, idempotency_key, state, created_at, finished_at)
SELECT 'bench-user-' || (g % 1000), 'fal', 'fal-ai/flux/dev', jsonb_build_object('prompt', 'shot ' || g),
       1, 'bench:' || g, 'succeeded', now() - interval '1 day' * (1 - g::float8 / 100000), now()
  FROM generate_series(1, 100000) g
"#;

const ANALYZE: &str = "ANALYZE genq.jobs, genq.generations";
const SAMPLE: &str = "SELECT genq.sample_stats(0)";
const HISTORY: &str = "SELECT genq.record_queue_history()";
const MIDDLE: &str = "SELECT (max(id) / 2)::int8 FROM genq.jobs";

/// Runs the console scenario on a migrated throwaway database.
pub async fn measure(
    config: &Config,
    args: &BenchArgs,
    options: &PgConnectOptions,
) -> anyhow::Result<()> {
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options.clone())
        .await?;
    let started = Instant::now();
    crate::db::query(FILL_QUEUES).execute(&pool).await?;
    crate::db::query(FILL_JOBS)
        .bind(args.jobs as i64)
        .execute(&pool)
        .await?;
    crate::db::query(FILL_GENERATIONS).execute(&pool).await?;
    crate::db::query(ANALYZE).execute(&pool).await?;
    crate::db::query_scalar::<bool>(SAMPLE)
        .fetch_one(&pool)
        .await?;
    crate::db::query_scalar::<i64>(HISTORY)
        .fetch_one(&pool)
        .await?;
    println!(
        "filled {} jobs and 100000 generations in {:.1} s",
        args.jobs,
        started.elapsed().as_secs_f64()
    );
    let middle: i64 = crate::db::query_scalar(MIDDLE).fetch_one(&pool).await?;

    let mut daemon_config = config.clone();
    daemon_config.queues.clear();
    daemon_config
        .queues
        .insert("bench-idle".into(), QueueConfig::with_concurrency(1));
    let daemon =
        Daemon::with_connect_options(daemon_config, Registry::new(), options.clone()).start();
    let token = format!("bench-{}", uuid::Uuid::new_v4());
    let server = http::serve(
        "127.0.0.1:0",
        http::HttpState {
            daemon: daemon.control(),
            admin_token: AdminToken::new(token.clone()),
            webhooks: None,
            events: None,
            console: Default::default(),
        },
    )
    .await?;
    let base = format!("http://{}", server.addr);
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let login = client
        .post(format!("{base}/console/login"))
        .form(&[("token", token.as_str())])
        .send()
        .await?;
    let cookie = login
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .ok_or_else(|| anyhow::anyhow!("the console login set no cookie"))?
        .to_string();

    let pages = [
        "/console/".to_string(),
        "/console/jobs".to_string(),
        format!("/console/jobs?before={middle}"),
        "/console/jobs?queue=bench-q1&state=discarded".to_string(),
        "/console/jobs?kind=bench.kind3&state=retryable".to_string(),
        "/console/jobs?q=needle".to_string(),
        format!("/console/jobs/{middle}"),
        "/console/generations".to_string(),
        "/console/generations?user=bench-user-7".to_string(),
        "/console/generations?state=failed".to_string(),
        "/console/audit".to_string(),
    ];
    println!(
        "{:<52} {:>9} {:>9} {:>9}",
        "page", "p50 ms", "p95 ms", "max ms"
    );
    for path in &pages {
        let mut times = Vec::with_capacity(args.requests);
        for _ in 0..args.requests {
            let t = Instant::now();
            let r = client
                .get(format!("{base}{path}"))
                .header("cookie", &cookie)
                .send()
                .await?;
            let status = r.status();
            r.bytes().await?;
            anyhow::ensure!(status.is_success(), "GET {path} answered {status}");
            times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
        times.sort_by(f64::total_cmp);
        println!(
            "{:<52} {:>9.1} {:>9.1} {:>9.1}",
            path,
            percentile(&times, 0.5),
            percentile(&times, 0.95),
            times.last().copied().unwrap_or(f64::NAN)
        );
    }
    server.stop().await;
    daemon.shutdown_with_grace(Duration::from_secs(1)).await;
    Ok(())
}
