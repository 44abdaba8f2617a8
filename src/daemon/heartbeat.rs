//! Heartbeats: one statement per interval extends the leases of every job this daemon runs.
//! A job missing from the answer was lost (rescued elsewhere after a partition, or
//! cancelled): its task is aborted, since its outcome would be refused anyway.

use std::sync::Arc;

use tokio::sync::watch;

use super::{sleep_or_stop, Shared};
use crate::queue::lease::heartbeat;

/// Runs until `stop` turns true.
pub(crate) async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let worker = &shared.config.worker;
    while sleep_or_stop(worker.heartbeat, &mut stop).await {
        let (ids, attempts): (Vec<i64>, Vec<i32>) = shared
            .running()
            .iter()
            .map(|(id, r)| (*id, r.attempt))
            .unzip();
        match heartbeat(&shared.pool, &ids, &attempts, worker.lease).await {
            Ok(held) => {
                if held.len() < ids.len() {
                    let held: std::collections::HashSet<i64> = held.into_iter().collect();
                    for (id, attempt) in ids
                        .iter()
                        .zip(&attempts)
                        .filter(|(id, _)| !held.contains(id))
                    {
                        if let Some(job) = shared.take_attempt(*id, *attempt) {
                            if let Some(abort) = job.abort {
                                abort.abort();
                            }
                            tracing::warn!(
                                job_id = id,
                                "lease lost (rescued elsewhere or cancelled): attempt aborted"
                            );
                            shared.job_ended.notify_waiters();
                        }
                    }
                }
            }
            Err(err) => {
                crate::db::note_if_connection_loss(&err);
                tracing::warn!(error = %err, jobs = ids.len(), "heartbeat failed")
            }
        }
    }
}
