//! `genq bench --scenario webhooks`: signed Replicate callbacks (Standard Webhooks) sent at
//! a fixed rate to an in-process daemon's HTTP server on a loopback port. Each callback
//! names its own pre-created generation and carries a distinct `webhook-id`, so every one
//! goes through the real path: raw-body HMAC verification, the insert into
//! `genq.webhook_events` and the `generation.reconcile` job enqueued in the same
//! transaction. The daemon claims nothing (the generation pipeline is not running), so the
//! measurement is the callback endpoint alone. Prints callbacks sent, responses by status,
//! the achieved rate, response time p50/p99/max and the rows stored.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::sync::Semaphore;
use uuid::Uuid;

use super::{percentile, BenchArgs};
use crate::config::{Config, QueueConfig};
use crate::daemon::{Daemon, Registry};
use crate::http;
use crate::providers::signing;

const ENQUEUE: &str = r#"
SELECT genq.enqueue_generation(
    'bench-user-' || (g % 100), 'replicate', 'bytedance/seedance-1-pro',
    jsonb_build_object('prompt', 'benchmark shot ' || g, 'image_url', 'https://example.com/in.png'),
    1, 'bench:' || g)
  FROM generate_series(1, $1) g
"#;

/// Runs the webhooks scenario on a migrated throwaway database.
pub async fn measure(
    config: &Config,
    args: &BenchArgs,
    options: &PgConnectOptions,
) -> anyhow::Result<()> {
    let n = ((args.rate * args.duration.as_secs_f64()).ceil() as usize).max(1);
    let secret = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(Uuid::new_v4().as_bytes())
    );

    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options.clone())
        .await?;
    crate::db::query("SELECT genq.grant_credits('bench-user-' || u, $1, 'bench-grant-' || u) FROM generate_series(0, 99) u")
        .bind(n as i64)
        .execute(&pool)
        .await?;
    let started = Instant::now();
    let ids: Vec<Uuid> = crate::db::query_scalar(ENQUEUE)
        .bind(n as i64)
        .fetch_all(&pool)
        .await?;
    // The submit jobs stay queued: the request id a provider would have returned is set
    // directly, and the generations look submitted.
    crate::db::query(
        "UPDATE genq.generations SET state = 'submitted', submitted_at = now(), provider_request_id = 'bench-' || id
          WHERE id = ANY($1)",
    )
    .bind(&ids)
    .execute(&pool)
    .await?;
    crate::db::query("VACUUM ANALYZE genq.generations, genq.jobs")
        .execute(&pool)
        .await?;
    println!(
        "created {n} submitted Replicate generations in {:.2} s",
        started.elapsed().as_secs_f64()
    );

    // A daemon that claims nothing: only an idle queue, no periodic jobs.
    let mut daemon_config = config.clone();
    daemon_config.queues.clear();
    daemon_config
        .queues
        .insert("bench-idle".into(), QueueConfig::with_concurrency(1));
    daemon_config.periodic.clear();
    daemon_config.database.max_connections = args.pool;
    let webhooks = Arc::new(http::webhooks::Webhooks::with_secrets(
        &daemon_config.webhooks,
        Some(secret.clone()),
        None,
    )?);
    let daemon =
        Daemon::with_connect_options(daemon_config, Registry::new(), options.clone()).start();
    let server = http::serve(
        "127.0.0.1:0",
        http::HttpState {
            daemon: daemon.control(),
            admin_token: None,
            console: Default::default(),
            webhooks: Some(webhooks),
            events: None,
        },
    )
    .await?;
    let url = format!("http://{}/webhooks/replicate", server.addr);
    println!(
        "genq bench --scenario webhooks: {n} signed Replicate callbacks at {} /s for {}, \
         at most {} in flight, daemon pool {}",
        args.rate,
        humantime::format_duration(args.duration),
        args.max_in_flight,
        args.pool
    );

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.max_in_flight)
        .timeout(Duration::from_secs(30))
        .build()?;
    let permits = Arc::new(Semaphore::new(args.max_in_flight));
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / args.rate));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut tasks = Vec::with_capacity(n);
    let mut late = 0usize;
    let wall = Instant::now();
    for (i, id) in ids.iter().enumerate() {
        ticker.tick().await;
        let scheduled = Instant::now();
        let permit = match permits.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                late += 1;
                permits.clone().acquire_owned().await?
            }
        };
        let body = serde_json::to_vec(&serde_json::json!({
            "id": format!("bench-{id}"),
            "status": "succeeded",
            "output": "https://example.com/out.mp4",
        }))?;
        let msg_id = format!("msg_bench_{i}");
        let timestamp = chrono::Utc::now().timestamp().to_string();
        let signature = signing::standard_webhooks_sign(&secret, &msg_id, &timestamp, &body);
        let request = client
            .post(format!("{url}?generation_id={id}"))
            .header("content-type", "application/json")
            .header("webhook-id", msg_id)
            .header("webhook-timestamp", timestamp)
            .header("webhook-signature", signature)
            .body(body);
        tasks.push(tokio::spawn(async move {
            let reply = request.send().await;
            // From the scheduled send: waiting for a free slot counts against the server.
            let elapsed = scheduled.elapsed().as_secs_f64() * 1000.0;
            drop(permit);
            (reply.map(|r| r.status().as_u16()).ok(), elapsed)
        }));
    }
    let mut statuses: BTreeMap<String, usize> = BTreeMap::new();
    let mut latencies = Vec::with_capacity(n);
    for task in tasks {
        let (status, ms) = task.await?;
        let key = status.map_or("transport error".to_string(), |s| s.to_string());
        *statuses.entry(key).or_default() += 1;
        latencies.push(ms);
    }
    let total = wall.elapsed();
    server.stop().await;
    daemon.shutdown().await;
    latencies.sort_by(f64::total_cmp);

    let (stored, jobs): (i64, i64) = crate::db::query_as(
        "SELECT (SELECT count(*) FROM genq.webhook_events WHERE provider = 'replicate'),
                (SELECT count(*) FROM genq.jobs WHERE kind = 'generation.reconcile')",
    )
    .fetch_one(&pool)
    .await?;
    println!("callbacks sent:       {n} in {:.2} s", total.as_secs_f64());
    let by_status: Vec<String> = statuses.iter().map(|(s, c)| format!("{s}: {c}")).collect();
    println!("responses by status:  {}", by_status.join(", "));
    println!(
        "achieved rate:        {:.0} callbacks/s (target {})",
        n as f64 / total.as_secs_f64(),
        args.rate
    );
    println!(
        "response time:        p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms  (from the scheduled send; \
         {late} sends waited for a free slot)",
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.last().copied().unwrap_or(f64::NAN)
    );
    println!("rows stored:          {stored} in genq.webhook_events, {jobs} generation.reconcile jobs enqueued");
    pool.close().await;
    Ok(())
}
