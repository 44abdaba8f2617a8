//! Queue engine and daemon scenarios against a real Postgres (a fresh database per test).

#[path = "../common/mod.rs"]
mod common;

mod binary;
mod chaos;
mod control;
mod credits;
mod enqueue;
mod exactly_once;
mod failures;
mod http;
mod leases;
mod periodic;
mod pipeline;
mod providers;
mod queues;
mod recovery;
mod redelivery;
mod retention;
mod retention_faults;
mod retention_stores;
mod retries;
mod storage;
mod webhooks;
