//! Typed job states, mapped to the `genq.job_state` enum.

use serde::{Deserialize, Serialize};

/// Where a job is in its life. See the state machine in [`crate::queue`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, sqlx::Type)]
#[sqlx(type_name = "genq.job_state", rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Waiting for `run_at`, then claimable.
    Available,
    /// Claimed by a worker holding a lease.
    Running,
    /// Failed an attempt; claimable again at `run_at`.
    Retryable,
    /// Final: the handler succeeded.
    Completed,
    /// Final: out of attempts, permanent error, unknown kind or undecodable payload.
    Discarded,
    /// Final: cancelled.
    Cancelled,
}

impl JobState {
    /// Whether the job will never run again on its own.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Discarded | Self::Cancelled)
    }

    /// The database spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Available => "available",
            Self::Running => "running",
            Self::Retryable => "retryable",
            Self::Completed => "completed",
            Self::Discarded => "discarded",
            Self::Cancelled => "cancelled",
        }
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}
