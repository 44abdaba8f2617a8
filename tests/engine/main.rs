//! Queue engine and daemon scenarios against a real Postgres (a fresh database per test).
// The tests' own checks talk to Postgres directly with sqlx (clippy.toml steers the crate's
// statements through genq::db).
#![allow(clippy::disallowed_methods)]

#[path = "../common/mod.rs"]
mod common;

mod binary;
mod bounds;
mod bulk_enqueue;
mod chaos;
mod claim_ahead;
mod console;
mod control;
mod copy_enqueue;
mod credits;
mod dev_tools;
mod enqueue;
mod events;
mod exactly_once;
mod failures;
mod fairness;
mod fairness_limits;
mod generation_reads;
mod hooks;
mod http;
mod leases;
mod outbound;
mod periodic;
mod pipeline;
mod pooler;
mod privileges;
mod providers;
mod queues;
mod recovery;
mod redelivery;
mod retention;
mod retention_faults;
mod retention_stores;
mod retries;
mod secrets;
mod soak;
mod storage;
mod webhooks;
