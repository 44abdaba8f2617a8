//! `genq demo`: the README's first command. Starts a private fake provider and a daemon
//! running the real generation pipeline against it, grants credits to a demo user,
//! enqueues generations in the three provider dialects (one of which the provider refuses,
//! one of which is throttled first), shows progress, and prints final states, the balance
//! and the ledger. Exits 0 when every generation ended as expected and the ledger audit
//! (`genq.check_ledger()`) is clean.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;
use uuid::Uuid;

use crate::config::{Config, QueueConfig};
use crate::credits::{self, CreditError, GenerationState, NewGeneration};
use crate::daemon::{Daemon, Registry};
use crate::db;
use crate::dev::fake_provider::faults::{FakeOp, FaultKind, FaultSpec};
use crate::dev::fake_provider::{self as fake, FakeConfig};
use crate::providers::ProviderKind;

/// `genq demo` options.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Generations per provider dialect.
    #[arg(long, default_value_t = 2)]
    pub per_provider: usize,
    /// Fake render time.
    #[arg(long, default_value = "1500ms", value_parser = humantime::parse_duration)]
    pub render_time: Duration,
    /// Renders each fake provider account runs at once (the rest wait in its queue);
    /// unlimited when absent.
    #[arg(long)]
    pub account_concurrency: Option<usize>,
    /// Where outputs are stored (a local directory). Defaults to a temporary directory.
    #[arg(long)]
    pub blobs: Option<std::path::PathBuf>,
}

const COST: i64 = 10;

/// Runs the demo.
pub async fn run(config: &Config, args: DemoArgs) -> anyhow::Result<ExitCode> {
    let options = db::connect_options(&config.database.url, &config.database)?;
    db::migrate(&options, &config.database.role_prefix)
        .await
        .context("cannot migrate the database (is Postgres running? check DATABASE_URL)")?;
    println!("migrated schema genq on {}", redact(&config.database.url));

    let fake = fake::serve(
        "127.0.0.1:0".parse()?,
        FakeConfig {
            render_time: args.render_time,
            account_concurrency: args.account_concurrency,
            ..FakeConfig::default()
        },
    )
    .await?;
    println!(
        "fake provider on {} (fal, BytePlus and Replicate dialects)",
        fake.url()
    );
    // The provider refuses one BytePlus request (moderation) and throttles fal once.
    fake.add_fault(FaultSpec::new(
        ProviderKind::BytePlus,
        FakeOp::Submit,
        FaultKind::Moderation,
    ));
    let mut throttle = FaultSpec::new(ProviderKind::Fal, FakeOp::Submit, FaultKind::HttpStatus);
    throttle.status = Some(429);
    throttle.retry_after = Some("1".into());
    fake.add_fault(throttle);

    let temp = tempfile::tempdir()?;
    let blobs = args
        .blobs
        .clone()
        .unwrap_or_else(|| temp.path().to_path_buf());
    let mut daemon_config = config.clone();
    daemon_config.providers = fake.providers_config();
    // The fake serves its output files on loopback, which downloads refuse by default.
    daemon_config.outbound.allow_private = vec!["127.0.0.0/8".into()];
    daemon_config.providers.webhook_base_url = "http://127.0.0.1:9".into();
    daemon_config.storage.backend = "local".into();
    daemon_config.storage.local.dir = blobs.to_string_lossy().into_owned();
    daemon_config.queues.insert(
        crate::jobs::generation::QUEUE.into(),
        QueueConfig::with_concurrency(20),
    );
    daemon_config.worker.poll_interval = Duration::from_millis(200);
    let pool = db::pool_options(&config.database)
        .max_connections(2)
        .connect_with(options.clone())
        .await?;
    let user = format!("demo-user-{:06x}", rand::random::<u32>() & 0xff_ffff);
    let mut conn = pool.acquire().await?;
    let per = args.per_provider.max(1);
    let granted = 3 * per as i64 * COST;
    credits::grant(&mut conn, &user, granted, &format!("demo-grant:{user}")).await?;
    println!("granted {granted} credits to {user}");

    let mut ids = Vec::new();
    for kind in ProviderKind::ALL {
        for n in 0..per {
            let id = credits::enqueue_generation(&mut conn, &generation(&user, kind, n)).await?;
            ids.push((kind, id));
        }
    }
    // One request too many: refused before anything is written.
    match credits::enqueue_generation(&mut conn, &generation(&user, ProviderKind::Replicate, 99))
        .await
    {
        Err(CreditError::InsufficientCredits { needed, available }) => {
            println!("an extra request was refused: insufficient credits (needed {needed}, available {available})")
        }
        other => anyhow::bail!("expected the extra request to be refused, got {other:?}"),
    }
    println!(
        "enqueued {} generations ({COST} credits held for each)\n",
        ids.len()
    );

    // The daemon starts only now, so the refusal above cannot race a hold released early.
    let mut registry = Registry::new();
    crate::app::register_product(&mut registry, &daemon_config)?;
    let daemon = Daemon::with_connect_options(daemon_config, registry, options.clone()).start();
    println!(
        "daemon {} started; outputs go to {}",
        daemon.worker_id(),
        blobs.display()
    );

    let started = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut states = std::collections::BTreeMap::<&str, usize>::new();
        let mut all_final = true;
        for (_, id) in &ids {
            let g = credits::load(&mut conn, *id)
                .await?
                .context("generation vanished")?;
            *states.entry(g.state.as_str()).or_default() += 1;
            all_final &= g.state.is_final();
        }
        let line: Vec<String> = states.iter().map(|(s, n)| format!("{s}={n}")).collect();
        println!(
            "  {:>5.1}s  {}",
            started.elapsed().as_secs_f64(),
            line.join("  ")
        );
        if all_final {
            break;
        }
        if started.elapsed() > Duration::from_secs(90) {
            daemon.shutdown().await;
            anyhow::bail!("generations did not finish within 90 s");
        }
    }

    println!(
        "\n{:<10} {:<38} {:<10} result",
        "provider", "generation", "state"
    );
    let mut failed = 0;
    for (kind, id) in &ids {
        let g = credits::load(&mut conn, *id)
            .await?
            .context("generation vanished")?;
        let result = match g.state {
            GenerationState::Succeeded => g
                .output
                .as_ref()
                .and_then(|o| o.get(0))
                .and_then(|o| o.get("key"))
                .and_then(|k| k.as_str())
                .map(|k| format!("stored {k}"))
                .unwrap_or_default(),
            _ => g.error.clone().unwrap_or_default(),
        };
        if g.state == GenerationState::Failed {
            failed += 1;
        }
        println!(
            "{:<10} {:<38} {:<10} {result}",
            kind.as_str(),
            id.to_string(),
            g.state.as_str()
        );
    }
    let balance = credits::balance(&mut conn, &user).await?;
    println!(
        "\nbalance of {user}: available {}, held {}",
        balance.available, balance.held
    );
    let ledger: Vec<(String, i64, Option<Uuid>)> = crate::db::query_as(
        "SELECT kind::text, amount, generation_id FROM genq.ledger WHERE user_id = $1 ORDER BY id",
    )
    .bind(&user)
    .fetch_all(&mut *conn)
    .await?;
    println!("ledger:");
    for (kind, amount, generation) in &ledger {
        println!(
            "  {kind:<8} {amount:>5}  {}",
            generation.map(|g| g.to_string()).unwrap_or_default()
        );
    }
    let violations = credits::check_ledger(&mut conn).await?;
    println!(
        "genq.check_ledger(): {}",
        if violations.is_empty() {
            "clean".to_string()
        } else {
            format!("{violations:?}")
        }
    );
    drop(conn);
    // The privacy side of the same run: each stored output is registered for deletion.
    let (outputs, due): (i64, Option<chrono::DateTime<chrono::Utc>>) = crate::db::query_as(
        "SELECT count(*), min(expires_at) FROM genq.blobs WHERE role = 'output' AND generation_id = ANY($1)",
    )
    .bind(ids.iter().map(|(_, id)| *id).collect::<Vec<_>>())
    .fetch_one(&pool)
    .await?;
    let retention_violations = crate::retention::check(&pool).await?;
    println!(
        "retention: {outputs} outputs registered in genq.blobs, deleted from {} (output_after); \
         genq.check_retention(): {}",
        due.map_or("never".into(), |d| d.format("%Y-%m-%d").to_string()),
        if retention_violations.is_empty() {
            "clean".to_string()
        } else {
            format!("{retention_violations:?}")
        }
    );
    daemon.shutdown().await;
    fake.stop().await;

    let expected_available = granted - (ids.len() as i64 - failed) * COST;
    if violations.is_empty()
        && retention_violations.is_empty()
        && outputs == ids.len() as i64 - failed
        && failed == 1
        && balance.held == 0
        && balance.available == expected_available
    {
        println!(
            "\ndemo finished: every success captured once, the refused request released its hold"
        );
        Ok(ExitCode::SUCCESS)
    } else {
        println!("\ndemo finished with unexpected results");
        Ok(ExitCode::FAILURE)
    }
}

fn generation(user: &str, kind: ProviderKind, n: usize) -> NewGeneration {
    let model = match kind {
        ProviderKind::Fal => "fal-ai/kling-video/v2.1/master/image-to-video",
        ProviderKind::BytePlus => "doubao-seedance-1-0-pro-250528",
        ProviderKind::Replicate => "bytedance/seedance-1-pro",
    };
    NewGeneration {
        user_id: user.into(),
        provider: kind.as_str().into(),
        model: model.into(),
        input: serde_json::json!({
            "prompt": format!("a paper boat drifting down a rainy street, shot {n}"),
            "image_url": "https://example.com/boat.png",
            "duration": "5",
        }),
        cost: COST,
        idempotency_key: format!("demo:{user}:{}:{n}", kind.as_str()),
    }
}

/// The URL without its password, for printing.
pub fn redact(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "<unparsable url>".into(),
    }
}
