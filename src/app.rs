//! The composition root: where the product is put on the engine. The engine (`queue`,
//! `daemon`, `maintenance`) knows no product word; this module registers the product's job
//! kinds with their periodic jobs and hooks, and its gauges, into a [`Registry`], and the
//! configuration ([`crate::config::Config`]) adds the product's queues to the engine's.
//! The `run` command, the demo and the benchmarks build their daemons through it.

use std::sync::Arc;

use anyhow::Context;
use sqlx::PgPool;

use crate::config::Config;
use crate::daemon::Registry;
use crate::jobs::{generation, privacy};

// One aggregate over the accounts table (a row per user), not per generation.
const READ_HELD: &str = "SELECT coalesce(sum(held), 0)::int8 FROM genq.accounts";

/// Registers the product's job kinds: the generation pipeline (with payments polling) and
/// the retention and privacy jobs, which share the output store; each brings its periodic
/// jobs and hooks. Adds the fleet-wide credits gauge.
pub fn register_product(registry: &mut Registry, config: &Config) -> anyhow::Result<()> {
    let pipeline = Arc::new(
        generation::Pipeline::from_config(config)
            .context("cannot set up the generation pipeline")?,
    );
    let retention = Arc::new(privacy::Retention::from_config(
        config,
        pipeline.store.clone(),
    ));
    pipeline.register(registry);
    retention.register(registry);
    registry.on_sample("credits.held", export_credits_held);
    let users = config.users.clone();
    registry.on_start("users.limit_defaults", move |pool| {
        let users = users.clone();
        async move { crate::plans::apply_defaults(&pool, &users).await }
    });
    Ok(())
}

/// Credits held fleet-wide, exported by every daemon at each statistics sample.
async fn export_credits_held(pool: PgPool) -> Result<(), sqlx::Error> {
    let held: i64 = crate::db::query_scalar(READ_HELD).fetch_one(&pool).await?;
    metrics::gauge!(crate::metrics::CREDITS_HELD).set(held as f64);
    Ok(())
}
