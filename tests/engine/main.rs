//! Queue engine and daemon scenarios against a real Postgres (a fresh database per test).

#[path = "../common/mod.rs"]
mod common;

mod binary;
mod control;
mod enqueue;
mod exactly_once;
mod failures;
mod http;
mod leases;
mod periodic;
mod queues;
mod recovery;
mod retries;
