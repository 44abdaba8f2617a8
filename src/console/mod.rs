//! The operator console's read model and its own tables: sessions, the audit of actions,
//! and the list queries of its pages (jobs by filter, generations by filter). Statements on
//! tables other modules own (queues, a single job, the fleet registry, a generation row) are
//! reached through those modules; only the console-specific listings live here. The pages
//! themselves are in `src/http/console/`. Why and how: docs/console.md.

pub mod audit;
pub mod fairness;
pub mod generations;
pub mod jobs;
pub mod money;
pub mod privacy;
pub mod sessions;
pub mod webhooks;
