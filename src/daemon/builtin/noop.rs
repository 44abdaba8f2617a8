//! `noop`: completes at once. Benchmarks and smoke checks use it to measure the engine alone.

use crate::daemon::{JobContext, JobError, Worker};

/// The kind.
pub const KIND: &str = "noop";

/// The no-op worker. Accepts any payload.
pub struct Noop;

impl Worker for Noop {
    type Args = serde::de::IgnoredAny;

    fn kind(&self) -> &str {
        KIND
    }

    async fn work(&self, _ctx: JobContext, _args: Self::Args) -> Result<(), JobError> {
        Ok(())
    }
}
