//! Background duties every daemon runs, leaderless: rescuing expired leases and enqueueing
//! periodic jobs. Each is safe to run on N daemons at once.

pub mod periodic;
pub mod rescuer;
pub mod stats;
