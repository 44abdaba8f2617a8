//! Fleet-wide statistics for metrics. Every `metrics.sample_interval`, each daemon asks
//! `genq.sample_stats`; exactly one of them per interval wins and recomputes queue depths
//! and enqueue totals in the database. Then every daemon reads the small result tables and
//! exports them, so any daemon's `/metrics` shows the whole fleet's queues, and the
//! database answers one aggregate query per interval, not one per daemon.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::sync::watch;

use crate::daemon::{sleep_or_stop, Shared};
use crate::maintenance::fleet;
use crate::metrics as m;
use crate::queue::queue_control;

const SAMPLE: &str = "SELECT genq.sample_stats($1)";

const READ_QUEUES: &str = r#"
SELECT q.name, q.paused, extract(epoch FROM now() - q.paused_at)::float8, q.max_running,
       coalesce(s.available, 0), coalesce(s.scheduled, 0), coalesce(s.running, 0),
       coalesce(s.retryable, 0), s.oldest_available_at, now()
  FROM genq.queues q LEFT JOIN genq.queue_stats s ON s.queue = q.name
"#;

const READ_ENQUEUED: &str = "SELECT queue, kind, total FROM genq.enqueued_totals";

type QueueRow = (
    String,
    bool,
    Option<f64>,
    Option<i32>,
    i64,
    i64,
    i64,
    i64,
    Option<DateTime<Utc>>,
    DateTime<Utc>,
);

/// Writes this daemon's configured queues into `genq.queues` (and their `max_running`,
/// where configured), then runs the registry's start hooks, retrying until the database
/// answers.
pub(crate) async fn register_queues(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut delays = crate::daemon::error_backoff();
    loop {
        match try_register(&shared).await {
            Ok(()) => return,
            Err(err) => {
                let d = delays.next().unwrap_or_default();
                tracing::warn!(error = %err, retry_in = ?d, "cannot register queues yet");
                if !sleep_or_stop(d, &mut stop).await {
                    return;
                }
            }
        }
    }
}

async fn try_register(shared: &Shared) -> Result<(), sqlx::Error> {
    for (name, qc) in &shared.config.queues {
        queue_control::ensure(&shared.pool, name).await?;
        if let Some(max) = qc.max_running {
            queue_control::set_max_running(&shared.pool, name, Some(max)).await?;
        }
        if let Some(fair) = qc.fair {
            crate::queue::fairness::set_queue(&shared.pool, name, fair, qc.key_max_active).await?;
        }
    }
    for hook in &shared.registry.hooks.on_start {
        (hook.run)(shared.pool.clone()).await?;
    }
    Ok(())
}

/// Runs until `stop` turns true.
pub(crate) async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let interval = shared.config.metrics.sample_interval;
    loop {
        export_local(&shared);
        match sample_and_export(&shared.pool, interval.as_secs_f64() * 0.9).await {
            Ok(true) => {
                if let Err(err) = fleet::record_history(&shared.pool).await {
                    tracing::debug!(error = %err, "queue history not recorded this time");
                }
            }
            Ok(false) => {}
            Err(err) => tracing::debug!(error = %err, "queue statistics not sampled this time"),
        }
        if let Err(err) = report_alive(&shared).await {
            tracing::debug!(error = %err, "daemon registry not updated this time");
        }
        for hook in &shared.registry.hooks.on_sample {
            if let Err(err) = (hook.run)(shared.pool.clone()).await {
                tracing::debug!(hook = %hook.name, error = %err, "not sampled this time");
            }
        }
        if !sleep_or_stop(interval, &mut stop).await {
            return;
        }
    }
}

/// This daemon's own gauges: running and buffered jobs per queue, pool connections.
fn export_local(shared: &Shared) {
    let buffered = shared.buffered_per_queue();
    for (queue, (concurrency, slots)) in &shared.slots {
        let running = (*concurrency as usize).saturating_sub(slots.available_permits());
        metrics::gauge!(m::JOBS_RUNNING, "queue" => queue.clone()).set(running as f64);
        let waiting = buffered.get(queue.as_str()).copied().unwrap_or(0);
        metrics::gauge!(m::CLAIM_AHEAD_BUFFERED, "queue" => queue.clone()).set(waiting as f64);
    }
    let size = shared.pool.size() as f64;
    let idle = shared.pool.num_idle() as f64;
    metrics::gauge!(m::DB_POOL_CONNECTIONS, "state" => "in_use").set(size - idle);
    metrics::gauge!(m::DB_POOL_CONNECTIONS, "state" => "idle").set(idle);
}

/// This daemon's row in `genq.daemons` (what the console lists as alive).
async fn report_alive(shared: &Shared) -> Result<(), sqlx::Error> {
    let mut queues: Vec<String> = shared.config.queues.keys().cloned().collect();
    queues.sort();
    let draining = shared.draining.load(std::sync::atomic::Ordering::SeqCst);
    fleet::beat(
        &shared.pool,
        &shared.worker_id,
        &queues,
        shared.running_count(),
        draining,
    )
    .await
}

/// Samples (when this daemon wins the interval) and exports; returns whether it won.
async fn sample_and_export(pool: &PgPool, min_interval_secs: f64) -> Result<bool, sqlx::Error> {
    let won: bool = crate::db::query_scalar(SAMPLE)
        .bind(min_interval_secs)
        .fetch_one(pool)
        .await?;
    let queues: Vec<QueueRow> = crate::db::query_as(READ_QUEUES).fetch_all(pool).await?;
    for (
        name,
        paused,
        paused_secs,
        max_running,
        available,
        scheduled,
        running,
        retryable,
        oldest,
        now,
    ) in queues
    {
        for (state, n) in [
            ("available", available),
            ("scheduled", scheduled),
            ("running", running),
            ("retryable", retryable),
        ] {
            metrics::gauge!(m::QUEUE_JOBS, "queue" => name.clone(), "state" => state).set(n as f64);
        }
        let age = oldest.map_or(0.0, |o| (now - o).num_milliseconds().max(0) as f64 / 1000.0);
        metrics::gauge!(m::QUEUE_OLDEST_AVAILABLE_AGE, "queue" => name.clone()).set(age);
        metrics::gauge!(m::QUEUE_PAUSED, "queue" => name.clone()).set(if paused {
            1.0
        } else {
            0.0
        });
        metrics::gauge!(m::QUEUE_PAUSED_SECONDS, "queue" => name.clone()).set(if paused {
            paused_secs.unwrap_or(0.0)
        } else {
            0.0
        });
        metrics::gauge!(m::QUEUE_MAX_RUNNING, "queue" => name)
            .set(max_running.map_or(-1.0, f64::from));
    }
    for q in crate::queue::fairness::queue_stats(pool).await? {
        metrics::gauge!(m::FAIR_KEYS, "queue" => q.name.clone(), "state" => "waiting")
            .set(q.keys_waiting as f64);
        metrics::gauge!(m::FAIR_KEYS, "queue" => q.name.clone(), "state" => "at_limit")
            .set(q.keys_at_limit as f64);
        metrics::gauge!(m::HELD_BACK, "queue" => q.name).set(q.held_back as f64);
    }
    for g in crate::queue::fairness::group_stats(pool).await? {
        metrics::gauge!(m::GROUP_ACTIVE, "group" => g.name.clone()).set(g.active as f64);
        metrics::gauge!(m::GROUP_MAX, "group" => g.name).set(g.max_active.map_or(-1.0, f64::from));
    }
    let totals: Vec<(String, String, i64)> =
        crate::db::query_as(READ_ENQUEUED).fetch_all(pool).await?;
    for (queue, kind, total) in totals {
        metrics::counter!(m::JOBS_ENQUEUED, "queue" => queue, "kind" => kind)
            .absolute(total.max(0) as u64);
    }
    Ok(won)
}
