//! The queue engine: every SQL statement that moves a job between states lives here, one
//! module per operation, so the database contract can be read in one place.
//!
//! State machine (all transitions are fenced on `state`, and those of a running job also on
//! `attempt`):
//!
//! ```text
//!  enqueue ─► available ─claim─► running ─ok──────────► completed
//!                ▲   ▲              │  ├─error, attempts left─► retryable ─(run_at)─► claim
//!                │   └─snooze/hand back┘  ├─error, no attempts / permanent──► discarded
//!                │                     └─lease expired (rescue)─► retryable | discarded
//!                └──────── retry (operator) ◄── completed | discarded | cancelled | retryable
//!  available | retryable | running ─cancel─► cancelled
//! ```

pub mod backoff;
pub mod claim;
pub mod complete;
pub mod enqueue;
pub mod enqueue_copy;
pub mod fairness;
pub mod job_control;
pub mod lease;
pub mod prune;
pub mod queue_control;
pub mod state;

pub use claim::ClaimedJob;
pub use complete::Outcome;
pub use enqueue::{Client, NewJob};
pub use state::JobState;

/// Channel on which enqueues announce new work (payload: the queue name).
pub const JOBS_CHANNEL: &str = "genq_jobs";
/// Channel on which cancellations of running jobs are announced (payload: the job id).
pub const CANCEL_CHANNEL: &str = "genq_cancel";
