//! The product's job kinds, one module each, registered by the composition root
//! ([`crate::app`]) with their periodic jobs and hooks. The engine's own kinds (`noop`,
//! `sleep`, `genq.prune`) live in the engine (`daemon::builtin`, `maintenance::prune`).
pub mod generation;
mod job_errors;
pub mod payments_poll;
pub mod privacy;
