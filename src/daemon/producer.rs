//! One producer per queue: keeps up to `concurrency` jobs of its queue running, and up to
//! a small claim-ahead buffer of jobs waiting for a slot (decision 51, `buffer.rs`).
//!
//! One loop: start buffered jobs into free slots; hand back buffered jobs whose wait is
//! over; claim when work is likely (a NOTIFY wake-up, the poll interval, or the last claim
//! came back full) and the room left (free slots plus the buffer's limit, less what is
//! buffered) is worth a statement. The claim runs while the loop keeps starting buffered
//! jobs into slots that free up, so short jobs never wait for its round trip. Every job a
//! claim returns is registered in [`Shared::running`] unstarted before anything else, so
//! heartbeats extend its lease and a cancellation or lost lease drops it. A database error
//! retries with backoff. On stop (drain, shutdown) a claim in flight is awaited and every
//! buffered job is handed back (available at once, no attempt spent); a pause notification
//! hands them back too.
//!
//! Fair queues and queues with a fleet-wide `max_running` never buffer: a buffered job of a
//! fair queue would take its key's turn early, and one under a cap would count as running.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify, OwnedSemaphorePermit, Semaphore};
use tracing::Instrument;

use super::buffer::{Buffer, HandBackReason};
use super::executor::execute;
use super::handler::JobContext;
use super::{error_backoff, RunningJob, Shared};
use crate::queue::claim::{claim, ClaimedJob};
use crate::queue::complete::Completion;
use crate::queue::queue_control::{claim_policy, ClaimPolicy};

/// How often a producer re-reads its queue's claim policy (`fair`, `max_running`).
const POLICY_EVERY: Duration = Duration::from_secs(5);

/// What a claim statement (and, when due, a policy read before it) brought back.
struct Claimed {
    want: usize,
    policy: Option<Result<ClaimPolicy, sqlx::Error>>,
    jobs: Result<Vec<ClaimedJob>, sqlx::Error>,
}

type ClaimFuture = Pin<Box<dyn Future<Output = Claimed> + Send>>;

fn start_claim(shared: &Arc<Shared>, queue: &str, want: usize, read_policy: bool) -> ClaimFuture {
    let shared = shared.clone();
    let queue = queue.to_string();
    Box::pin(async move {
        let policy = if read_policy {
            Some(claim_policy(&shared.pool, &queue).await)
        } else {
            None
        };
        let jobs = claim(
            &shared.pool,
            &queue,
            &shared.worker_id,
            want as u32,
            shared.config.worker.lease,
        )
        .await;
        Claimed { want, policy, jobs }
    })
}

/// Runs the producer of `queue` until `stop` turns true.
pub(crate) async fn run(shared: Arc<Shared>, queue: String, mut stop: watch::Receiver<bool>) {
    let (concurrency, slots) = {
        let (c, s) = &shared.slots[&queue];
        (*c as usize, s.clone())
    };
    let freed = Arc::new(Notify::new());
    let wake = shared.wakers[&queue].clone();
    let flush = shared.flushes[&queue].clone();
    let worker = &shared.config.worker;
    let configured = shared.config.queues.get(&queue);
    // Known from the configuration never to buffer; otherwise decided by the policy read.
    let never_buffer = configured.is_some_and(|q| q.fair == Some(true) || q.max_running.is_some());
    let mut may_buffer = false;
    let mut policy_read: Option<Instant> = None;
    let mut buffer = Buffer::new(worker.claim_ahead, worker.claim_ahead_wait);
    let mut claiming: Option<ClaimFuture> = None;
    let mut more = true;
    let mut retry_at: Option<Instant> = None;
    let mut next_poll = Instant::now() + worker.poll_interval;
    let mut backoff = error_backoff();
    loop {
        if *stop.borrow() {
            break;
        }
        let expired = buffer.expired(Instant::now());
        if !expired.is_empty() {
            shared.hand_back(expired, HandBackReason::Overstay);
        }
        start_buffered(&shared, &slots, &freed, &mut buffer);
        if claiming.is_none() && retry_at.is_none() && more {
            let limit = buffer.limit(may_buffer && !never_buffer);
            let free = slots.available_permits();
            let held = concurrency.saturating_sub(free) + buffer.len();
            let want = (concurrency + limit)
                .saturating_sub(held)
                .min(worker.claim_batch as usize);
            let idle = free > 0 && buffer.is_empty();
            if want > 0 && (idle || want >= limit.div_ceil(2)) {
                let read_policy =
                    !never_buffer && policy_read.is_none_or(|t| t.elapsed() >= POLICY_EVERY);
                claiming = Some(start_claim(&shared, &queue, want, read_policy));
                next_poll = Instant::now() + worker.poll_interval;
            }
        }
        let deadline = buffer.next_deadline();
        tokio::select! {
            done = async {
                match claiming.as_mut() {
                    Some(f) => f.await,
                    None => std::future::pending().await,
                }
            }, if claiming.is_some() => {
                claiming = None;
                if let Some(policy) = done.policy {
                    match policy {
                        Ok(p) => {
                            may_buffer = !p.fair && p.max_running.is_none();
                            policy_read = Some(Instant::now());
                        }
                        Err(err) => tracing::debug!(queue = %queue, error = %err,
                            "claim policy not read; buffering stays as it was"),
                    }
                }
                match done.jobs {
                    Ok(jobs) => {
                        backoff = error_backoff();
                        more = jobs.len() == done.want;
                        if jobs.iter().any(|j| j.fairness_key.is_some()) {
                            may_buffer = false;
                        }
                        register(&shared, &jobs);
                        for job in jobs {
                            buffer.push(job);
                        }
                    }
                    Err(err) => {
                        crate::db::note_if_connection_loss(&err);
                        let delay = backoff.next().unwrap_or(worker.poll_interval);
                        tracing::warn!(queue = %queue, error = %err, retry_in = ?delay, "claim failed");
                        retry_at = Some(Instant::now() + delay);
                        more = true;
                    }
                }
            }
            _ = wake.notified() => more = true,
            _ = freed.notified() => {}
            _ = flush.notified() => {
                shared.hand_back(buffer.drain(), HandBackReason::Pause);
            }
            _ = sleep_until_opt(deadline), if deadline.is_some() => {}
            _ = sleep_until_opt(retry_at), if retry_at.is_some() => retry_at = None,
            _ = tokio::time::sleep_until(next_poll.into()) => {
                more = true;
                next_poll = Instant::now() + worker.poll_interval;
            }
            _ = stop.wait_for(|s| *s) => break,
        }
    }
    // Stopping: what a claim in flight took is handed back with the buffer.
    if let Some(in_flight) = claiming.take() {
        if let Ok(jobs) = in_flight.await.jobs {
            register(&shared, &jobs);
            for job in jobs {
                buffer.push(job);
            }
        }
    }
    shared.hand_back(buffer.drain(), HandBackReason::Shutdown);
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

/// Registers claimed jobs as held unstarted, under one lock.
fn register(shared: &Shared, jobs: &[ClaimedJob]) {
    let mut running = shared.running();
    for job in jobs {
        running.insert(
            job.id,
            RunningJob {
                attempt: job.attempt,
                queue: job.queue.clone(),
                kind: job.kind.clone(),
                started: false,
                abort: None,
            },
        );
    }
}

/// Starts buffered jobs while slots are free; skips those no longer this daemon's.
fn start_buffered(
    shared: &Arc<Shared>,
    slots: &Arc<Semaphore>,
    freed: &Arc<Notify>,
    buffer: &mut Buffer,
) {
    while !buffer.is_empty() {
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            return;
        };
        let Some(job) = buffer.pop() else {
            return;
        };
        if !shared.mark_started(job.id, job.attempt) {
            continue;
        }
        buffer.started();
        spawn_job(
            shared,
            job,
            SlotGuard {
                _permit: permit,
                freed: freed.clone(),
            },
        );
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
    // Registered (by `register`) before the task exists, so it never finishes unregistered.
    let (id, attempt) = (job.id, job.attempt);
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
            if shared.take_attempt(id, attempt).is_some() {
                let _ = shared.completions.send(Completion { id, attempt, outcome, queue, kind });
            }
            shared.job_ended.notify_waiters();
        }
        .instrument(span),
    );
    if let Some(running) = shared.running().get_mut(&id) {
        running.abort = Some(handle.abort_handle());
    }
}
