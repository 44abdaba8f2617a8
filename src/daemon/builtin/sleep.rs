//! `sleep`: waits for `ms` milliseconds, then completes. For rehearsing drains, shutdowns
//! and lease rescue against a real daemon without any provider.

use std::time::Duration;

use serde::Deserialize;

use crate::daemon::{JobContext, JobError, Worker};

/// The kind.
pub const KIND: &str = "sleep";

/// The sleep worker.
pub struct Sleep;

/// Payload: `{"ms": 1500}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SleepArgs {
    /// How long to sleep.
    pub ms: u64,
}

impl Worker for Sleep {
    type Args = SleepArgs;

    fn kind(&self) -> &str {
        KIND
    }

    async fn work(&self, _ctx: JobContext, args: SleepArgs) -> Result<(), JobError> {
        tokio::time::sleep(Duration::from_millis(args.ms)).await;
        Ok(())
    }
}
