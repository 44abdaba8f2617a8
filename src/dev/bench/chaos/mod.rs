//! `genq bench --scenario chaos`: recovery under faults, as an operator would try it.
//! A private Postgres cluster (so it can be crash-restarted), the fake provider in all
//! three dialects with webhook redelivery on, and several `genq run` processes of this
//! binary; a mixed load (generations, no-op and sleep jobs) enqueued in waves while random
//! daemons are SIGKILLed (and started again) at random moments and Postgres is restarted in
//! immediate (crash) mode once in the middle. When the faults stop, the suite waits for
//! every generation and load job to be final, prints the time that took (the time to full
//! recovery), and checks the invariants in [`checks`]. A small run is a test
//! (`tests/engine/chaos.rs`); figures of a larger one are in docs/benchmarks.md.

mod checks;
mod fleet;
mod load;
mod report;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

pub use checks::Findings;
pub use report::render;

use super::pg_cluster::{self, PgCluster};
use crate::dev::fake_provider::{self as fake, FakeConfig, FakeServer, FakeStats};
use crate::providers::ProviderKind;
use fleet::Fleet;

/// The chaos scenario's size and faults.
#[derive(Debug, Clone, Args)]
pub struct ChaosArgs {
    /// chaos: `genq run` processes.
    #[arg(id = "chaos_daemons", long = "chaos-daemons", default_value_t = 3)]
    pub daemons: usize,
    /// chaos: generations (fal, BytePlus, Replicate in turn).
    #[arg(
        id = "chaos_generations",
        long = "chaos-generations",
        default_value_t = 600
    )]
    pub generations: usize,
    /// chaos: no-op jobs.
    #[arg(id = "chaos_noop", long = "chaos-noop", default_value_t = 20_000)]
    pub noop: usize,
    /// chaos: sleep jobs (50 ms to 1 s each).
    #[arg(id = "chaos_sleep", long = "chaos-sleep", default_value_t = 2_000)]
    pub sleep: usize,
    /// chaos: how long the faults (and the enqueue waves) last.
    #[arg(id = "chaos_duration", long = "chaos-duration", default_value = "60s", value_parser = humantime::parse_duration)]
    pub duration: Duration,
    /// chaos: mean time between SIGKILLs of a random daemon (each drawn from 0.5x to 1.5x).
    #[arg(id = "kill_every", long = "kill-every", default_value = "4s", value_parser = humantime::parse_duration)]
    pub kill_every: Duration,
    /// chaos: restart Postgres in immediate mode halfway through the faults.
    #[arg(id = "pg_restart", long = "pg-restart", default_value_t = true, action = clap::ArgAction::Set)]
    pub pg_restart: bool,
    /// chaos: the fake provider's render time.
    #[arg(id = "chaos_render_time", long = "chaos-render-time", default_value = "5s", value_parser = humantime::parse_duration)]
    pub render_time: Duration,
    /// chaos: share of generations the provider fails (moderation), 0 to 1.
    #[arg(
        id = "chaos_failure_rate",
        long = "chaos-failure-rate",
        default_value_t = 0.05
    )]
    pub failure_rate: f64,
    /// chaos: the fake's webhook retry schedules, scaled (0.05: fal's two hours in 6.4 min).
    #[arg(
        id = "webhook_retry_scale",
        long = "webhook-retry-scale",
        default_value_t = 0.05
    )]
    pub webhook_retry_scale: f64,
    /// chaos: the daemons' lease (a SIGKILLed daemon's jobs are rescued this long after).
    #[arg(id = "chaos_lease", long = "chaos-lease", default_value = "10s", value_parser = humantime::parse_duration)]
    pub lease: Duration,
    /// chaos: the daemons' `providers.ambiguous_submit_grace` (a fal submit whose outcome
    /// is unknown and whose callback never comes fails after this).
    #[arg(id = "chaos_ambiguous_grace", long = "chaos-ambiguous-grace", default_value = "10m", value_parser = humantime::parse_duration)]
    pub ambiguous_grace: Duration,
    /// chaos: how long to wait, after the faults stop, for everything to be final.
    #[arg(id = "recovery_timeout", long = "recovery-timeout", default_value = "5m", value_parser = humantime::parse_duration)]
    pub recovery_timeout: Duration,
    /// chaos: seed of the kill schedule and the fake provider.
    #[arg(id = "chaos_seed", long = "chaos-seed", default_value_t = 1)]
    pub seed: u64,
}

impl ChaosArgs {
    /// A run small enough for CI (a minute or so on two cores): two daemons, 60
    /// generations, 2,000 plain jobs, 20 s of faults.
    pub fn small() -> Self {
        Self {
            daemons: 2,
            generations: 60,
            noop: 1_800,
            sleep: 200,
            duration: Duration::from_secs(20),
            kill_every: Duration::from_secs(3),
            pg_restart: true,
            render_time: Duration::from_secs(2),
            failure_rate: 0.05,
            webhook_retry_scale: 0.05,
            lease: Duration::from_secs(5),
            ambiguous_grace: Duration::from_secs(60),
            recovery_timeout: Duration::from_secs(180),
            seed: 1,
        }
    }
}

/// What a run did and found.
#[derive(Debug, Clone)]
pub struct ChaosReport {
    /// SIGKILLs sent.
    pub kills: u32,
    /// Daemons that exited by themselves (and were started again).
    pub exited: u32,
    /// Postgres crash restarts.
    pub pg_restarts: u32,
    /// Time from the end of the faults until every generation and load job was final;
    /// `None` if that did not happen within the recovery timeout.
    pub recovery: Option<Duration>,
    /// Wall time of the whole run.
    pub total: Duration,
    /// What the fake provider saw.
    pub fake: FakeStats,
    /// Final states and broken invariants.
    pub findings: Findings,
}

impl ChaosReport {
    /// Whether every invariant held and everything recovered in time.
    pub fn clean(&self) -> bool {
        self.recovery.is_some() && self.findings.violations.is_empty()
    }
}

/// Runs the chaos scenario with `exe` as the `genq` binary of the daemons.
pub async fn run(args: &ChaosArgs, exe: &Path) -> anyhow::Result<ChaosReport> {
    let started = Instant::now();
    pg_cluster::with_migrated(&Default::default(), |cluster, options| {
        on_cluster(args, exe, started, cluster, options)
    })
    .await
}

/// The scenario on its private cluster, migrated (deleted by [`run`] afterwards).
async fn on_cluster(
    args: &ChaosArgs,
    exe: &Path,
    started: Instant,
    cluster: Arc<PgCluster>,
    options: PgConnectOptions,
) -> anyhow::Result<ChaosReport> {
    let pool = PgPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(Duration::from_secs(5))
        .connect_with(options)
        .await?;
    let fake = fake::serve(
        "127.0.0.1:0".parse()?,
        FakeConfig {
            render_time: args.render_time,
            failure_rate: args.failure_rate,
            seed: args.seed,
            webhook_retry_scale: args.webhook_retry_scale,
            ..FakeConfig::default()
        },
    )
    .await?;
    let dir = tempfile::Builder::new().prefix("genq-chaos.").tempdir()?;
    let env = daemon_env(args, &cluster, &fake, dir.path())?;
    load::grant(&pool, args.generations).await?;
    let mut fleet = Fleet::start(exe, dir.path(), env, args.daemons)?;

    let (kills, pg_restarts) = faults(args, &cluster, &pool, &mut fleet).await?;
    let recovery = wait_for_recovery(args, &pool, &mut fleet).await?;
    fleet.stop(Duration::from_secs(30)).await;
    let fake_stats = fake.stats();
    let findings = checks::check(&pool, &fake_stats, &fake.callback_urls()).await?;
    fake.stop().await;
    pool.close().await;
    let report = ChaosReport {
        kills,
        exited: fleet.exited,
        pg_restarts,
        recovery,
        total: started.elapsed(),
        fake: fake_stats,
        findings,
    };
    if !report.clean() {
        // Keep the daemons' logs for a look at what went wrong.
        let kept = dir.keep();
        eprintln!("chaos: daemon logs kept in {}", kept.display());
    }
    Ok(report)
}

/// The environment of every daemon: a config file (written into `dir`) and the secrets.
fn daemon_env(
    args: &ChaosArgs,
    cluster: &PgCluster,
    fake: &FakeServer,
    dir: &Path,
) -> anyhow::Result<Vec<(String, String)>> {
    let config = dir.join("genq.toml");
    std::fs::write(&config, config_toml(args, fake, &dir.join("blobs")))?;
    Ok(vec![
        ("DATABASE_URL".into(), cluster.url()),
        ("GENQ_CONFIG".into(), config.to_string_lossy().into_owned()),
        ("GENQ_LOG".into(), "warn".into()),
        (
            "REPLICATE_WEBHOOK_SECRET".into(),
            fake.replicate_webhook_secret(),
        ),
        (
            "GENQ_BYTEPLUS_WEBHOOK_SECRET".into(),
            "chaos-byteplus-callback-secret".into(),
        ),
        (
            "GENQ_ERASURE_HASH_KEY".into(),
            "chaos-erasure-hash-key".into(),
        ),
    ])
}

fn config_toml(args: &ChaosArgs, fake: &FakeServer, blobs: &Path) -> String {
    let secs = |d: Duration| format!("{}ms", d.as_millis());
    let mut toml = format!(
        r#"[database]
max_connections = 12
acquire_timeout = "5s"

[worker]
lease = "{lease}"
heartbeat = "{heartbeat}"
rescue_interval = "1s"
poll_interval = "500ms"
shutdown_grace = "10s"

[metrics]
sample_interval = "2s"

[providers]
request_timeout = "5s"
ambiguous_submit_grace = "{grace}"

[outbound]
# The fake serves its output files on loopback, which downloads refuse by default.
allow_private = ["127.0.0.0/8"]

[storage]
backend = "local"

[storage.local]
dir = "{blobs}"

[webhooks]
fal_jwks_url = "{fake}/fal/.well-known/jwks.json"
fal_user_id = "{fal_user}"

[sweep]
interval = "10s"
stale_after = "30s"

[queues.default]
concurrency = 50

[queues.generation]
concurrency = 16

[queues.maintenance]
concurrency = 2

[queues.retention]
concurrency = 4
"#,
        lease = secs(args.lease),
        heartbeat = secs(args.lease / 4),
        grace = secs(args.ambiguous_grace),
        blobs = blobs.display(),
        fake = fake.url(),
        fal_user = fake::DEFAULT_FAL_USER_ID,
    );
    for kind in ProviderKind::ALL {
        toml.push_str(&format!(
            "\n[providers.{k}]\nbase_url = \"{url}{prefix}\"\n\n[providers.limits.{k}]\n\
             max_in_flight = 1000\nrate_per_sec = 1000.0\nburst = 1000\n",
            k = kind.as_str(),
            url = fake.url(),
            prefix = fake::prefix(kind),
        ));
    }
    toml
}

/// The fault window: load waves every second, SIGKILLs at random moments, one crash
/// restart of Postgres halfway. Returns (kills, restarts).
async fn faults(
    args: &ChaosArgs,
    cluster: &Arc<PgCluster>,
    pool: &PgPool,
    fleet: &mut Fleet,
) -> anyhow::Result<(u32, u32)> {
    let mut rng = StdRng::seed_from_u64(args.seed);
    let waves = args.duration.as_secs().max(1) as usize;
    let load = {
        let (pool, args) = (pool.clone(), args.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            for w in 0..waves {
                tick.tick().await;
                let share = |n: usize| (n * w / waves, n * (w + 1) / waves);
                let (noop, sleep) = (share(args.noop), share(args.sleep));
                load::wave(
                    &pool,
                    share(args.generations),
                    noop.1 - noop.0,
                    sleep.1 - sleep.0,
                    Duration::from_secs(120),
                )
                .await?;
            }
            anyhow::Ok(())
        })
    };
    let begin = Instant::now();
    let mut next_kill = begin + jittered(&mut rng, args.kill_every);
    let mut restart = args.pg_restart.then(|| begin + args.duration / 2);
    let (mut kills, mut restarts) = (0, 0);
    while begin.elapsed() < args.duration {
        tokio::time::sleep(Duration::from_millis(100)).await;
        fleet.respawn_exited()?;
        if Instant::now() >= next_kill && !fleet.is_empty() {
            fleet.kill_and_respawn(rng.gen_range(0..fleet.len()))?;
            kills += 1;
            next_kill = Instant::now() + jittered(&mut rng, args.kill_every);
        }
        if restart.is_some_and(|at| Instant::now() >= at) {
            restart = None;
            // Immediate mode: backends killed, crash recovery on start, as after a crash.
            let cluster = cluster.clone();
            tokio::task::spawn_blocking(move || {
                cluster.crash()?;
                cluster.start()
            })
            .await??;
            restarts += 1;
        }
    }
    load.await??;
    Ok((kills, restarts))
}

/// `mean` times a factor drawn from 0.5 to 1.5.
fn jittered(rng: &mut StdRng, mean: Duration) -> Duration {
    mean.mul_f64(rng.gen_range(0.5..1.5))
}

/// Waits until every generation and load job is final; how long that took.
async fn wait_for_recovery(
    args: &ChaosArgs,
    pool: &PgPool,
    fleet: &mut Fleet,
) -> anyhow::Result<Option<Duration>> {
    let faults_end = Instant::now();
    loop {
        fleet.respawn_exited()?;
        if let Ok((0, 0)) = checks::open_work(pool).await {
            return Ok(Some(faults_end.elapsed()));
        }
        if faults_end.elapsed() > args.recovery_timeout {
            return Ok(None);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `genq bench --scenario chaos`: runs with this binary and prints the report.
pub async fn measure(args: &ChaosArgs) -> anyhow::Result<bool> {
    let exe: PathBuf = std::env::current_exe().context("cannot find the genq binary")?;
    println!(
        "genq bench --scenario chaos: {} daemons, {} generations, {} no-op and {} sleep jobs \
         over {}, SIGKILL every ~{}, {}lease {}, fake render {}, webhook retry scale {}",
        args.daemons,
        args.generations,
        args.noop,
        args.sleep,
        humantime::format_duration(args.duration),
        humantime::format_duration(args.kill_every),
        if args.pg_restart {
            "one Postgres crash restart, "
        } else {
            ""
        },
        humantime::format_duration(args.lease),
        humantime::format_duration(args.render_time),
        args.webhook_retry_scale,
    );
    let report = run(args, &exe).await?;
    print!("{}", render(&report));
    Ok(report.clean())
}
