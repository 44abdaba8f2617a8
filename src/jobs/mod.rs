//! The product's job kinds, one module each. They are registered by the composition root
//! ([`crate::app`]); the engine's own kinds (`noop`, `sleep`, `genq.prune`) live in the
//! engine and are re-exported here under their former paths.
pub mod generation;
pub mod payments_poll;
pub mod retention;

pub use crate::daemon::builtin::{is_builtin, noop, register_builtins, sleep};
pub use crate::daemon::config::MAINTENANCE_QUEUE;
pub use crate::maintenance::prune;
