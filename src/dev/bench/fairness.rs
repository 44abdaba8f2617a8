//! `genq bench --scenario fairness`: one heavy user against many light ones on one provider
//! account. The fake provider (Replicate dialect, webhooks signed and delivered to the
//! daemon's endpoint) renders at most `--account-concurrency` at once; genq's render cap
//! (`[providers.limits.replicate] max_rendering`) is set to the same. The heavy user
//! enqueues `--heavy` generations; `--light-after` later, `--light-users` users enqueue
//! `--light-each` each. The same runs twice in one invocation, fairness on (fair claim and
//! render cap) and off (genq as before: FIFO claim, no render cap, the provider queues),
//! and the two are printed side by side: the light users' time from enqueue to submit and
//! to success (p50/p99), the heavy user's throughput, and the provider's utilisation
//! (renders in progress over the account's concurrency) while work was waiting.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use super::generation::{pipeline_config, serve_fake};
use super::{percentile, BenchArgs};
use crate::config::Config;
use crate::daemon::{Daemon, Registry};
use crate::dev::fake_provider::FakeServer;
use crate::http;
use crate::jobs::generation::Pipeline;
use crate::providers::ProviderKind;

/// The provider the scenario renders with (its webhooks carry an HMAC the daemon checks).
const KIND: ProviderKind = ProviderKind::Replicate;

/// `--scenario fairness` and `--scenario fair-claim` options.
#[derive(Debug, Clone, clap::Args)]
pub struct FairnessArgs {
    /// fairness: generations the heavy user enqueues at once.
    #[arg(long, default_value_t = 1000)]
    pub heavy: usize,
    /// fairness: light users, arriving after `--light-after`.
    #[arg(long, default_value_t = 50)]
    pub light_users: usize,
    /// fairness: generations each light user enqueues.
    #[arg(long, default_value_t = 2)]
    pub light_each: usize,
    /// fairness: how long after the heavy user the light users arrive.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub light_after: Duration,
    /// fairness: genq's render cap (`max_rendering`) with fairness on; defaults to the
    /// account concurrency.
    #[arg(long)]
    pub max_rendering: Option<u32>,
    /// fair-claim: jobs of the one-key backlog.
    #[arg(long, default_value_t = 1_000_000)]
    pub one_key_jobs: usize,
    /// fair-claim: keys of the many-keys backlog.
    #[arg(long, default_value_t = 100_000)]
    pub many_keys: usize,
    /// fair-claim: jobs per key of the many-keys backlog.
    #[arg(long, default_value_t = 10)]
    pub jobs_per_key: usize,
}

/// The fairness scenario's default render time and account concurrency.
const RENDER_TIME: Duration = Duration::from_secs(5);
const ACCOUNT_CONCURRENCY: usize = 20;

/// Enqueues `$2` generations of cost 1 for user `$1` (keys `$1:1..$2`).
const ENQUEUE: &str = r#"
SELECT count(genq.enqueue_generation($1, 'replicate', 'bytedance/seedance-1-pro',
    jsonb_build_object('prompt', 'fairness shot ' || g), 1, $1 || ':' || g))
  FROM generate_series(1, $2) g
"#;

/// Enqueues `$3` generations for each of users `$1-0..$2-1`, user by user.
const ENQUEUE_MANY_USERS: &str = r#"
SELECT count(genq.enqueue_generation($1 || '-' || u, 'replicate', 'bytedance/seedance-1-pro',
    jsonb_build_object('prompt', 'fairness shot ' || g), 1, $1 || '-' || u || ':' || g))
  FROM generate_series(0, $2 - 1) u, generate_series(1, $3) g
"#;

const GRANT: &str = "SELECT genq.grant_credits($1, $2, 'bench-grant-' || $1)";

/// Generations of users whose id starts with `$1` not yet final.
const OPEN: &str = "SELECT count(*) FROM genq.generations \
     WHERE user_id LIKE $1 || '%' AND state NOT IN ('succeeded', 'failed', 'cancelled')";

/// Generations of users starting with `$1` waiting in genq (not yet at the provider).
const WAITING: &str = "SELECT count(*) FROM genq.generations \
     WHERE user_id LIKE $1 || '%' AND state IN ('queued', 'submitting')";

/// Seconds from enqueue to submit and to the end, for users starting with `$1`.
const TIMES: &str = "SELECT extract(epoch FROM submitted_at - created_at)::float8, \
            extract(epoch FROM finished_at - created_at)::float8 \
       FROM genq.generations WHERE user_id LIKE $1 || '%' AND state = 'succeeded'";

/// Succeeded generations of users starting with `$1`, and the seconds from the first
/// enqueue to the last end.
const THROUGHPUT: &str = "SELECT count(*) FILTER (WHERE state = 'succeeded'), \
            coalesce(extract(epoch FROM max(finished_at) - min(created_at))::float8, 0) \
       FROM genq.generations WHERE user_id LIKE $1 || '%'";

/// One run's results.
struct ModeResult {
    light_submit: Vec<f64>,
    light_success: Vec<f64>,
    heavy_succeeded: i64,
    heavy_secs: f64,
    utilisation: f64,
    peak_rendering: u64,
    wall_secs: f64,
    ledger_violations: i64,
}

/// Runs the fairness scenario on a migrated throwaway database.
pub async fn measure(
    config: &Config,
    args: &BenchArgs,
    options: &PgConnectOptions,
) -> anyhow::Result<()> {
    let f = &args.fairness;
    let render = args.render_time.unwrap_or(RENDER_TIME);
    let account = args.account_concurrency.unwrap_or(ACCOUNT_CONCURRENCY);
    let cap = f.max_rendering.unwrap_or(account as u32);
    println!(
        "genq bench --scenario fairness: heavy user {} generations, then after {} {} light users x {}; \
         fake {KIND} render time {}, account concurrency {account}; genq render cap {cap} with fairness on; \
         {} cores (a shared machine: read the figures as indicative)",
        f.heavy,
        humantime::format_duration(f.light_after),
        f.light_users,
        f.light_each,
        humantime::format_duration(render),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    let pool = PgPoolOptions::new()
        .max_connections(3)
        .connect_with(options.clone())
        .await?;
    let on = run_mode(
        config,
        args,
        options,
        &pool,
        "on",
        Some(cap),
        render,
        account,
    )
    .await?;
    let off = run_mode(config, args, options, &pool, "off", None, render, account).await?;
    print_side_by_side(&on, &off, render);
    pool.close().await;
    Ok(())
}

/// One run: `fair` names the users' prefix; `cap` is genq's render cap (`None`: fairness off).
#[allow(clippy::too_many_arguments)]
async fn run_mode(
    config: &Config,
    args: &BenchArgs,
    options: &PgConnectOptions,
    pool: &PgPool,
    fair: &str,
    cap: Option<u32>,
    render: Duration,
    account: usize,
) -> anyhow::Result<ModeResult> {
    let f = &args.fairness;
    let fake = serve_fake(render, Some(account)).await?;
    let blobs = tempfile::tempdir()?;
    // The webhook endpoint's port is chosen first: the pipeline puts it in callback URLs.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut daemon_config = pipeline_config(config, args, &fake, blobs.path());
    daemon_config.providers.webhook_base_url = format!("http://127.0.0.1:{port}");
    apply_fairness(&mut daemon_config, cap);

    let heavy = format!("fair-{fair}-heavy");
    let light = format!("fair-{fair}-light");
    crate::db::query(GRANT)
        .bind(&heavy)
        .bind(f.heavy as i64)
        .execute(pool)
        .await?;
    for u in 0..f.light_users {
        crate::db::query(GRANT)
            .bind(format!("{light}-{u}"))
            .bind(f.light_each as i64)
            .execute(pool)
            .await?;
    }

    let mut registry = Registry::new();
    Arc::new(Pipeline::from_config(&daemon_config)?).register(&mut registry);
    let webhooks = Arc::new(http::webhooks::Webhooks::with_secrets(
        &daemon_config.webhooks,
        Some(fake.replicate_webhook_secret()),
        None,
    )?);
    let daemon = Daemon::with_connect_options(daemon_config, registry, options.clone()).start();
    let server = http::serve(
        &format!("127.0.0.1:{port}"),
        http::HttpState {
            daemon: daemon.control(),
            admin_token: None,
            webhooks: Some(webhooks),
            events: None,
            console: Default::default(),
        },
    )
    .await?;

    let wall = Instant::now();
    crate::db::query(ENQUEUE)
        .bind(&heavy)
        .bind(f.heavy as i64)
        .execute(pool)
        .await?;
    let mut sampler = Sampler::default();
    let prefix = format!("fair-{fair}-");
    let light_at = wall + f.light_after;
    let mut light_sent = false;
    loop {
        if !light_sent && Instant::now() >= light_at {
            crate::db::query(ENQUEUE_MANY_USERS)
                .bind(&light)
                .bind(f.light_users as i32)
                .bind(f.light_each as i32)
                .execute(pool)
                .await?;
            light_sent = true;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        sampler.sample(&fake, pool, &prefix, account).await?;
        let open: i64 = crate::db::query_scalar(OPEN)
            .bind(&prefix)
            .fetch_one(pool)
            .await?;
        if light_sent && open == 0 {
            break;
        }
        if wall.elapsed() > Duration::from_secs(3600) {
            anyhow::bail!(
                "fairness {fair}: generations did not finish within an hour ({open} open)"
            );
        }
    }
    let wall_secs = wall.elapsed().as_secs_f64();
    server.stop().await;
    daemon.shutdown().await;
    fake.stop().await;

    let times: Vec<(f64, f64)> = crate::db::query_as(TIMES)
        .bind(&light)
        .fetch_all(pool)
        .await?;
    let mut light_submit: Vec<f64> = times.iter().map(|t| t.0).collect();
    let mut light_success: Vec<f64> = times.iter().map(|t| t.1).collect();
    light_submit.sort_by(f64::total_cmp);
    light_success.sort_by(f64::total_cmp);
    let (heavy_succeeded, heavy_secs): (i64, f64) = crate::db::query_as(THROUGHPUT)
        .bind(&heavy)
        .fetch_one(pool)
        .await?;
    let ledger_violations: i64 =
        crate::db::query_scalar("SELECT count(*) FROM genq.check_ledger()")
            .fetch_one(pool)
            .await?;
    Ok(ModeResult {
        light_submit,
        light_success,
        heavy_succeeded,
        heavy_secs,
        utilisation: sampler.utilisation(),
        peak_rendering: sampler.peak,
        wall_secs,
        ledger_violations,
    })
}

/// Fairness on (`cap` given): the generation queue claims fairly and at most `cap`
/// generations render at the provider at once. Off: FIFO claim, no render cap.
fn apply_fairness(config: &mut Config, cap: Option<u32>) {
    set_queue_fair(config, crate::jobs::generation::QUEUE, cap.is_some());
    config
        .providers
        .limits
        .entry(KIND.as_str().into())
        .or_default()
        .max_rendering = cap;
}

/// `[queues.NAME] fair` in a daemon's configuration.
pub(super) fn set_queue_fair(config: &mut Config, queue: &str, fair: bool) {
    if let Some(q) = config.queues.get_mut(queue) {
        q.fair = Some(fair);
    }
}

/// Makes `queue` fair or not in the database now (before a backlog is enqueued).
pub(super) async fn set_queue_fair_now(pool: &PgPool, queue: &str, fair: bool) -> sqlx::Result<()> {
    crate::queue::fairness::set_queue(pool, queue, fair, None).await
}

/// Provider utilisation, sampled: renders in progress over the account's concurrency, only
/// while work was waiting (in genq or in the provider's queue).
#[derive(Default)]
struct Sampler {
    busy: f64,
    samples: u64,
    peak: u64,
}

impl Sampler {
    async fn sample(
        &mut self,
        fake: &FakeServer,
        pool: &PgPool,
        prefix: &str,
        account: usize,
    ) -> anyhow::Result<()> {
        let stats = fake.stats();
        let rendering = stats.rendering(KIND);
        self.peak = self.peak.max(rendering);
        let in_genq: i64 = crate::db::query_scalar(WAITING)
            .bind(prefix)
            .fetch_one(pool)
            .await?;
        if in_genq > 0 || stats.waiting(KIND) > 0 {
            self.busy += rendering as f64 / account as f64;
            self.samples += 1;
        }
        Ok(())
    }

    fn utilisation(&self) -> f64 {
        if self.samples == 0 {
            return f64::NAN;
        }
        self.busy / self.samples as f64
    }
}

fn print_side_by_side(on: &ModeResult, off: &ModeResult, render: Duration) {
    let p = |v: &[f64]| format!("{:.1} / {:.1} s", percentile(v, 0.5), percentile(v, 0.99));
    let row = |name: &str, a: String, b: String| println!("{name:<40} {a:>22} {b:>22}");
    println!();
    row("", "fairness on".into(), "fairness off".into());
    row(
        "light users: enqueue -> submit p50/p99",
        p(&on.light_submit),
        p(&off.light_submit),
    );
    row(
        "light users: enqueue -> success p50/p99",
        p(&on.light_success),
        p(&off.light_success),
    );
    let tput = |m: &ModeResult| {
        format!(
            "{:.2} /s ({} in {:.0} s)",
            m.heavy_succeeded as f64 / m.heavy_secs.max(f64::EPSILON),
            m.heavy_succeeded,
            m.heavy_secs
        )
    };
    row("heavy user: throughput", tput(on), tput(off));
    row(
        "provider utilisation while work waits",
        format!("{:.1} %", on.utilisation * 100.0),
        format!("{:.1} %", off.utilisation * 100.0),
    );
    row(
        "renders at once at the provider (peak)",
        on.peak_rendering.to_string(),
        off.peak_rendering.to_string(),
    );
    row(
        "wall time",
        format!("{:.0} s", on.wall_secs),
        format!("{:.0} s", off.wall_secs),
    );
    row(
        "genq.check_ledger()",
        ledger(on.ledger_violations),
        ledger(off.ledger_violations),
    );
    let light_p99 = percentile(&on.light_submit, 0.99);
    let target = 2.0 * render.as_secs_f64();
    println!(
        "targets (fairness on): light p99 time to submit {light_p99:.1} s <= {target:.1} s (2 render times): {}; \
         utilisation {:.1} % >= 95 %: {}",
        verdict(light_p99 <= target),
        on.utilisation * 100.0,
        verdict(on.utilisation >= 0.95)
    );
}

fn ledger(violations: i64) -> String {
    if violations == 0 {
        "clean".into()
    } else {
        format!("{violations} violations")
    }
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "MISSED"
    }
}
