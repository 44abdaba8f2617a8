//! The kinds every daemon registers itself: `noop` and `sleep` (smoke tests, benchmarks)
//! and the engine's own maintenance job `genq.prune`. Product kinds are registered by the
//! composition root (`app`), never here.

pub mod noop;
pub mod sleep;

use crate::daemon::config::PruneConfig;
use crate::daemon::Registry;
use crate::maintenance::prune;

/// Adds the built-in kinds (`noop`, `sleep`, `genq.prune`) unless the registry already has them.
pub fn register_builtins(registry: &mut Registry, prune_config: &PruneConfig) {
    if !registry.contains(noop::KIND) {
        registry.register(noop::Noop);
    }
    if !registry.contains(sleep::KIND) {
        registry.register(sleep::Sleep);
    }
    if !registry.contains(prune::KIND) {
        registry.register(prune::Prune::new(prune_config));
    }
}

/// Whether `kind` is one of the built-in kinds every daemon registers.
pub fn is_builtin(kind: &str) -> bool {
    [noop::KIND, sleep::KIND, prune::KIND].contains(&kind)
}
