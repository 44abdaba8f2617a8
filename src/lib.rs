//! genq: a Postgres-backed worker daemon for AI video and image generation products.
//!
//! The product's backend enqueues jobs in Postgres (SQL `genq.enqueue(...)` or [`Client`]),
//! inside its own transaction; genq daemons claim them in batches, run the handler
//! registered for each kind, and record outcomes with fencing so no stale worker can
//! overwrite a newer attempt. `ARCHITECTURE.md` maps the tree and its layers; `docs/decisions.md` says why.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod app;
pub mod cli;
pub mod config;
pub mod console;
pub mod credits;
pub mod daemon;
pub mod db;
pub mod dev;
pub mod events;
pub mod generation;
pub mod http;
pub mod jobs;
pub mod maintenance;
pub mod metrics;
pub mod outbound;
pub mod payments;
pub mod plans;
pub mod providers;
pub mod queue;
pub mod retention;
pub mod storage;
pub mod sync;
pub mod telemetry;
pub mod webhooks;

pub use config::Config;
pub use daemon::{Daemon, DaemonHandle, JobContext, JobError, Registry, Worker};
pub use queue::enqueue::JobArgs;
pub use queue::{Client, JobState, NewJob};
