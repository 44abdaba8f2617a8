//! The completer: one task per daemon writes job outcomes in batches. It takes whatever has
//! accumulated while the previous batch was being written (so batches grow with load and a
//! lone job is written at once), and keeps a failed batch until the database takes it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, watch};

use super::{error_backoff, Shared};
use crate::db::is_transient;
use crate::queue::complete::{complete_batch, Completion};

/// How long a stopping daemon keeps retrying its last outcomes while the database is away.
/// Jobs whose outcome is lost are rescued when their lease expires and run again.
const FLUSH_ON_STOP: Duration = Duration::from_secs(15);

/// Runs until `stop` turns true, then writes what is left and returns.
pub(crate) async fn run(
    shared: Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<Completion>,
    mut stop: watch::Receiver<bool>,
) {
    let limit = shared.config.worker.complete_batch as usize;
    let mut batch = Vec::with_capacity(limit);
    loop {
        tokio::select! {
            n = rx.recv_many(&mut batch, limit) => if n == 0 { return },
            _ = stop.wait_for(|s| *s) => break,
        }
        flush(&shared, &mut batch, None).await;
    }
    let deadline = Instant::now() + FLUSH_ON_STOP;
    while let Ok(c) = rx.try_recv() {
        batch.push(c);
        if batch.len() >= limit {
            flush(&shared, &mut batch, Some(deadline)).await;
        }
    }
    flush(&shared, &mut batch, Some(deadline)).await;
}

async fn flush(shared: &Shared, batch: &mut Vec<Completion>, deadline: Option<Instant>) {
    if batch.is_empty() {
        return;
    }
    let mut backoff = error_backoff();
    loop {
        match complete_batch(&shared.pool, batch).await {
            Ok(written) => {
                let expected = batch
                    .iter()
                    .filter(|c| !matches!(c.outcome, crate::queue::Outcome::AlreadyRecorded))
                    .count();
                if written.len() < expected {
                    let mut written: std::collections::HashSet<i64> = written.into_iter().collect();
                    for c in batch.iter() {
                        if matches!(c.outcome, crate::queue::Outcome::AlreadyRecorded) {
                            written.insert(c.id);
                        }
                    }
                    for c in batch.iter().filter(|c| {
                        !written.contains(&c.id)
                            && !matches!(c.outcome, crate::queue::Outcome::AlreadyRecorded)
                    }) {
                        tracing::warn!(job_id = c.id, attempt = c.attempt, outcome = c.outcome.label(),
                            "outcome refused: the job is no longer this attempt's (lease rescued or cancelled)");
                        metrics::counter!(crate::metrics::STALE_COMPLETIONS).increment(1);
                    }
                    for c in batch.iter().filter(|c| written.contains(&c.id)) {
                        count_finished(c);
                    }
                } else {
                    batch.iter().for_each(count_finished);
                }
                wake_for_handed_back(shared, batch).await;
                batch.clear();
                return;
            }
            Err(err) => {
                crate::db::note_if_connection_loss(&err);
                let delay = backoff.next().unwrap_or(Duration::from_secs(5));
                let out_of_time = deadline.is_some_and(|d| Instant::now() + delay > d);
                if out_of_time || !is_transient(&err) {
                    tracing::error!(error = %err, jobs = batch.len(),
                        "cannot record job outcomes; their leases will expire and the jobs will run again");
                    batch.clear();
                    return;
                }
                tracing::warn!(error = %err, jobs = batch.len(), retry_in = ?delay, "recording outcomes failed");
                tokio::time::sleep(delay).await;
            }
        }
    }
}

/// Jobs handed back (shutdown, a buffered job's wait, a pause) are claimable at once: wake
/// the daemons working their queues, as an enqueue would, rather than leave them to polling.
async fn wake_for_handed_back(shared: &Shared, batch: &[Completion]) {
    let mut queues: Vec<&str> = batch
        .iter()
        .filter(|c| matches!(c.outcome, crate::queue::Outcome::HandBack))
        .map(|c| c.queue.as_str())
        .collect();
    if queues.is_empty() {
        return;
    }
    queues.sort_unstable();
    queues.dedup();
    if let Err(err) = crate::queue::lease::wake_queues(&shared.pool, &queues).await {
        tracing::debug!(error = %err, "no wake-up for handed-back jobs (polling finds them)");
    }
}

fn count_finished(c: &Completion) {
    metrics::counter!(crate::metrics::JOBS_FINISHED, "queue" => c.queue.clone(), "kind" => c.kind.clone(),
        "outcome" => c.outcome.label())
    .increment(1);
}
