//! One producer per queue: keeps up to `concurrency` jobs of its queue running.
//!
//! States: CLAIMING (room and work likely: claim `min(room, claim_batch)` at once, again
//! immediately if the batch came back full) and WAITING (the queue looked empty, or every
//! slot is busy: sleep until a NOTIFY wake-up, a finished job when full, the poll interval,
//! or shutdown). A database error sleeps with backoff and goes back to CLAIMING.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::{watch, Notify, OwnedSemaphorePermit};
use tracing::Instrument;

use super::executor::execute;
use super::handler::JobContext;
use super::{error_backoff, sleep_or_stop, RunningJob, Shared};
use crate::queue::claim::{claim, ClaimedJob};
use crate::queue::complete::Completion;

/// Runs the producer of `queue` until `stop` turns true.
pub(crate) async fn run(shared: Arc<Shared>, queue: String, mut stop: watch::Receiver<bool>) {
    let slots = shared.slots[&queue].1.clone();
    let freed = Arc::new(Notify::new());
    let wake = shared.wakers[&queue].clone();
    let worker = &shared.config.worker;
    let mut backoff = error_backoff();
    loop {
        if *stop.borrow() {
            return;
        }
        let room = slots.available_permits();
        if room > 0 {
            let want = room.min(worker.claim_batch as usize);
            match claim(
                &shared.pool,
                &queue,
                &shared.worker_id,
                want as u32,
                worker.lease,
            )
            .await
            {
                Ok(jobs) => {
                    backoff = error_backoff();
                    let got = jobs.len();
                    for job in jobs {
                        let permit = slots
                            .clone()
                            .try_acquire_owned()
                            .expect("a slot is free for every claimed job");
                        spawn_job(
                            &shared,
                            job,
                            SlotGuard {
                                _permit: permit,
                                freed: freed.clone(),
                            },
                        );
                    }
                    if got == want {
                        continue;
                    }
                }
                Err(err) => {
                    crate::db::note_if_connection_loss(&err);
                    let delay = backoff.next().unwrap_or(worker.poll_interval);
                    tracing::warn!(queue = %queue, error = %err, retry_in = ?delay, "claim failed");
                    if !sleep_or_stop(delay, &mut stop).await {
                        return;
                    }
                    continue;
                }
            }
        }
        let full = slots.available_permits() == 0;
        tokio::select! {
            _ = wake.notified() => {}
            _ = freed.notified(), if full => {}
            _ = tokio::time::sleep(worker.poll_interval) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Holds a concurrency slot; freeing it wakes the producer if it waits for room.
struct SlotGuard {
    _permit: OwnedSemaphorePermit,
    freed: Arc<Notify>,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.freed.notify_one();
    }
}

fn spawn_job(shared: &Arc<Shared>, job: ClaimedJob, slot: SlotGuard) {
    let (id, attempt) = (job.id, job.attempt);
    // Registered before the task exists, so the task can never finish unregistered.
    shared.running.lock().expect("running map poisoned").insert(
        id,
        RunningJob {
            attempt,
            queue: job.queue.clone(),
            kind: job.kind.clone(),
            abort: None,
        },
    );
    let span = tracing::info_span!("job", id, kind = %job.kind, queue = %job.queue, attempt);
    let task_shared = shared.clone();
    let handle = tokio::spawn(
        async move {
            let shared = task_shared;
            let _slot = slot;
            let started = Instant::now();
            let ctx = JobContext::new(
                id,
                attempt,
                job.max_attempts,
                job.queue.clone(),
                job.kind.clone(),
                shared.pool.clone(),
            );
            let (queue, kind) = (job.queue.clone(), job.kind.clone());
            let worker = shared.registry.get(&kind);
            let configured_timeout = shared.config.timeouts.get(&kind).copied();
            let latency = (chrono::Utc::now() - job.run_at).to_std().unwrap_or_default();
            metrics::histogram!(crate::metrics::JOB_QUEUE_LATENCY, "queue" => queue.clone(), "kind" => kind.clone())
                .record(latency.as_secs_f64());
            if job.fairness_key.is_some() {
                let share = match job.key_backlog {
                    Some(true) => "heavy",
                    Some(false) => "light",
                    None => "none",
                };
                metrics::histogram!(crate::metrics::FAIR_WAIT, "queue" => queue.clone(), "share" => share)
                    .record(latency.as_secs_f64());
            }
            let outcome = execute(
                job,
                worker,
                ctx,
                configured_timeout,
                shared.config.worker.job_timeout,
                &shared.config.backoff,
            ).await;
            let elapsed = started.elapsed();
            match &outcome {
                crate::queue::Outcome::Retry { message, delay } => {
                    tracing::warn!(error = %message, retry_in = ?delay, "attempt failed")
                }
                crate::queue::Outcome::Discard { message } => {
                    tracing::error!(error = %message, "job discarded")
                }
                crate::queue::Outcome::Interrupted { message, delay } => {
                    tracing::warn!(error = %message, retry_in = ?delay,
                        "attempt interrupted by the infrastructure: handed back, no attempt spent")
                }
                other => tracing::debug!(outcome = other.label(), elapsed = ?elapsed, "attempt finished"),
            }
            metrics::histogram!(crate::metrics::JOB_DURATION, "queue" => queue.clone(), "kind" => kind.clone())
                .record(elapsed.as_secs_f64());
            if shared.take_running(id).is_some() {
                let _ = shared.completions.send(Completion { id, attempt, outcome, queue, kind });
            }
            shared.job_ended.notify_waiters();
        }
        .instrument(span),
    );
    if let Some(running) = shared
        .running
        .lock()
        .expect("running map poisoned")
        .get_mut(&id)
    {
        running.abort = Some(handle.abort_handle());
    }
}
