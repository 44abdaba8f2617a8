//! Background duties every daemon runs, leaderless: rescuing expired leases, enqueueing
//! periodic jobs, sampling statistics, pruning finished jobs. Each is safe to run on N
//! daemons at once. Product duties reach it only through the registry (periodic jobs,
//! start and sample hooks), so nothing here names a product job.

pub mod fleet;
pub mod periodic;
pub mod prune;
pub mod rescuer;
pub mod stats;
