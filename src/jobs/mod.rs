//! Job kinds, one module each. The built-in ones are registered in every daemon.
pub mod generation;
mod job_errors;
pub mod noop;
pub mod payments_poll;
pub mod prune;
pub mod retention;
pub mod sleep;

use crate::config::Config;
use crate::daemon::Registry;

/// Queue of the built-in maintenance jobs; every daemon works it unless configured otherwise.
pub const MAINTENANCE_QUEUE: &str = "maintenance";

/// Adds the built-in kinds (`noop`, `sleep`, `genq.prune`) unless the registry already has them.
pub fn register_builtins(registry: &mut Registry, config: &Config) {
    if !registry.contains(noop::KIND) {
        registry.register(noop::Noop);
    }
    if !registry.contains(sleep::KIND) {
        registry.register(sleep::Sleep);
    }
    if !registry.contains(prune::KIND) {
        registry.register(prune::Prune::new(&config.prune));
    }
}

/// Registers the product's job kinds: the generation pipeline (with payments polling) and
/// the retention and privacy jobs, which share the output store.
pub fn register_product(registry: &mut Registry, config: &Config) -> anyhow::Result<()> {
    use anyhow::Context;
    use std::sync::Arc;
    let pipeline = Arc::new(
        generation::Pipeline::from_config(config)
            .context("cannot set up the generation pipeline")?,
    );
    let retention = Arc::new(retention::Retention::from_config(
        config,
        pipeline.store.clone(),
    ));
    pipeline.register(registry);
    retention.register(registry);
    Ok(())
}

/// Whether `kind` is one of the built-in kinds every daemon registers.
pub fn is_builtin(kind: &str) -> bool {
    [noop::KIND, sleep::KIND, prune::KIND].contains(&kind)
}
