//! The generation pipeline end to end: the real daemon, the fake provider over HTTP in each
//! dialect, a local output store, and the credit ledger checked after every scenario.

use std::time::Duration;

use genq::credits::GenerationState;
use genq::dev::fake_provider::faults::{FakeOp, FaultKind, FaultSpec};
use genq::providers::ProviderKind;
use genq::JobState;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::common::generation::GenEnv;
use crate::common::{wait_until, TestDb};

mod faults;
mod gate;
mod outcomes;

/// Checks `id` ended failed because its output could not be downloaded, with its hold
/// captured (the provider billed the render), and the ledger consistent.
async fn assert_unfetchable_and_captured(env: &GenEnv, id: uuid::Uuid, contains: &str) {
    let g = env.generation(id).await;
    assert_eq!(g.state, GenerationState::Failed, "{g:?}");
    let error = g.error.as_deref().unwrap_or("");
    assert!(error.starts_with("output_unfetchable:"), "{error}");
    assert!(error.contains(contains), "{error}");
    assert_eq!(env.entries(id).await, vec!["hold", "capture"]);
    env.assert_ledger_clean().await;
}
