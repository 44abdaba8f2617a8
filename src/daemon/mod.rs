//! The long-running worker daemon: one producer per queue claims batches, each job runs in
//! its own task, a single completer writes outcomes in batches, heartbeats keep leases
//! alive, a listener turns NOTIFY into wake-ups, and maintenance services rescue expired
//! leases and enqueue periodic jobs.
//!
//! A producer may also hold a few jobs claimed ahead of free slots (its claim-ahead buffer,
//! decision 51); they are in [`Shared::running`] unstarted, so heartbeats, cancellation and
//! shutdown see them like running jobs.
//!
//! Shutdown (SIGTERM, SIGINT, [`DaemonHandle::shutdown`]): producers stop claiming at once
//! and hand back their buffered jobs; running jobs get `worker.shutdown_grace` to finish; what is still running is aborted and
//! handed back (available again, attempt refunded); the completer flushes; the process exits.

mod buffer;
pub mod builtin;
pub mod completer;
pub mod config;
pub mod executor;
pub mod handler;
pub mod heartbeat;
pub mod hooks;
pub mod listener;
pub mod producer;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use tokio::sync::{mpsc, watch, Notify, Semaphore};
use tokio::task::{AbortHandle, JoinHandle};

use crate::db;
use crate::maintenance;
use crate::queue::complete::{Completion, Outcome};
use buffer::HandBackReason;
pub use config::{EngineConfig, QueueConfig};
pub use handler::{JobContext, JobError, Registry, Worker};

/// A job this daemon holds: running, or claimed ahead and waiting in its producer's buffer
/// (`started` false). Whoever removes it from [`Shared::running`] owns its outcome: the
/// job's own task (normal end), its producer (a buffered job handed back), shutdown (hand
/// back) or a cancellation; a buffered job that was removed is never started.
pub(crate) struct RunningJob {
    pub attempt: i32,
    pub queue: String,
    pub kind: String,
    pub started: bool,
    pub abort: Option<AbortHandle>,
}

/// State shared by the daemon's tasks.
pub(crate) struct Shared {
    pub config: Arc<EngineConfig>,
    pub pool: PgPool,
    pub listen_pool: PgPool,
    pub worker_id: String,
    pub registry: Registry,
    /// The jobs this daemon holds; always locked through [`Shared::running`].
    running: Mutex<HashMap<i64, RunningJob>>,
    pub completions: mpsc::UnboundedSender<Completion>,
    /// One wake-up per queue this daemon works.
    pub wakers: HashMap<String, Arc<Notify>>,
    /// Per queue: tells its producer to hand its buffered jobs back (the queue was paused).
    pub flushes: HashMap<String, Arc<Notify>>,
    /// Signalled whenever a job task ends.
    pub job_ended: Notify,
    /// Per queue: this daemon's concurrency and the slots its jobs hold.
    pub slots: HashMap<String, (u32, Arc<Semaphore>)>,
    /// Set once the daemon stops claiming (drain or shutdown).
    pub draining: AtomicBool,
    /// Cuts the shutdown grace period short (a second SIGTERM/SIGINT).
    pub hurry: Notify,
}

impl Shared {
    /// Locks the map of jobs this daemon holds ([`crate::sync::lock`]: a panicking handler
    /// must not take the daemon's bookkeeping down with it).
    pub fn running(&self) -> MutexGuard<'_, HashMap<i64, RunningJob>> {
        crate::sync::lock(&self.running)
    }

    /// Wakes every producer (after a reconnect, when notifications may have been missed).
    pub fn wake_all(&self) {
        for waker in self.wakers.values() {
            waker.notify_one();
        }
    }

    /// Wakes the producer of `queue`, if this daemon works it.
    pub fn wake(&self, queue: &str) {
        if let Some(waker) = self.wakers.get(queue) {
            waker.notify_one();
        }
    }

    /// Tells the producer of `queue` to hand back the jobs it holds unstarted.
    pub fn flush_buffer(&self, queue: &str) {
        if let Some(flush) = self.flushes.get(queue) {
            flush.notify_one();
        }
    }

    /// Marks a buffered job started; false if it is no longer this daemon's to start
    /// (cancelled, or its lease was lost).
    pub fn mark_started(&self, id: i64, attempt: i32) -> bool {
        match self.running().get_mut(&id) {
            Some(job) if job.attempt == attempt && !job.started => {
                job.started = true;
                true
            }
            _ => false,
        }
    }

    /// Hands back jobs held unstarted (buffered): available at once, no attempt spent.
    /// A job already taken by someone else (a cancellation) is skipped.
    pub fn hand_back(&self, jobs: impl IntoIterator<Item = (i64, i32)>, reason: HandBackReason) {
        let mut n = 0;
        for (id, attempt) in jobs {
            let Some(job) = self.take_attempt(id, attempt) else {
                continue;
            };
            n += 1;
            metrics::counter!(crate::metrics::JOBS_HANDED_BACK, "queue" => job.queue.clone(),
                "reason" => reason.label())
            .increment(1);
            let _ = self.completions.send(Completion {
                id,
                attempt,
                outcome: Outcome::HandBack,
                queue: job.queue,
                kind: job.kind,
            });
        }
        if n > 0 {
            tracing::debug!(jobs = n, why = reason.why(), "buffered jobs handed back");
        }
    }

    /// [`Shared::take_running`] for the claim `(id, attempt)` only: a job handed back or lost
    /// may have been claimed again by this daemon under a newer attempt, and that claim's
    /// entry is not this caller's to take.
    pub fn take_attempt(&self, id: i64, attempt: i32) -> Option<RunningJob> {
        let mut running = self.running();
        if running.get(&id).is_some_and(|j| j.attempt == attempt) {
            running.remove(&id)
        } else {
            None
        }
    }

    /// Takes ownership of a running job's outcome; false if someone else already did.
    pub fn take_running(&self, id: i64) -> Option<RunningJob> {
        self.running().remove(&id)
    }

    /// Jobs started and not finished (buffered jobs excluded).
    pub fn running_count(&self) -> usize {
        self.running().values().filter(|j| j.started).count()
    }

    /// Jobs claimed ahead and waiting for a slot.
    pub fn buffered_count(&self) -> usize {
        self.running().values().filter(|j| !j.started).count()
    }

    /// [`Shared::buffered_count`] per queue this daemon works (0 where none).
    pub fn buffered_per_queue(&self) -> HashMap<&str, usize> {
        let mut counts: HashMap<&str, usize> = self.slots.keys().map(|q| (q.as_str(), 0)).collect();
        for job in self.running().values().filter(|j| !j.started) {
            if let Some(n) = counts.get_mut(job.queue.as_str()) {
                *n += 1;
            }
        }
        counts
    }
}

/// A configured daemon, not yet started.
pub struct Daemon {
    config: Arc<EngineConfig>,
    registry: Registry,
    connect: PgConnectOptions,
    worker_id: String,
}

impl Daemon {
    /// A daemon for `config` (an [`EngineConfig`], or anything that converts into one, such
    /// as the whole configuration of the composition root), with
    /// `registry`'s handlers, periodic jobs and hooks plus the built-in kinds.
    pub fn new(config: impl Into<EngineConfig>, registry: Registry) -> Result<Self, sqlx::Error> {
        let config = config.into();
        let connect = db::connect_options(&config.database.url, &config.database)?;
        Ok(Self::with_connect_options(config, registry, connect))
    }

    /// Like [`Daemon::new`], with explicit connection options (tests, embedding).
    pub fn with_connect_options(
        config: impl Into<EngineConfig>,
        mut registry: Registry,
        connect: PgConnectOptions,
    ) -> Self {
        let mut config: EngineConfig = config.into();
        config
            .queues
            .entry(config::MAINTENANCE_QUEUE.to_string())
            .or_insert(QueueConfig::with_concurrency(2));
        builtin::register_builtins(&mut registry, &config.prune);
        let worker_id = if config.worker.id.is_empty() {
            let host = hostname::get()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_else(|| "genq".into());
            format!(
                "{host}-{}-{:04x}",
                std::process::id(),
                rand::random::<u16>()
            )
        } else {
            config.worker.id.clone()
        };
        let connect = db::session_options(connect, &config.database);
        Self {
            config: Arc::new(config),
            registry,
            connect,
            worker_id,
        }
    }

    /// This daemon's worker id (written into the rows it claims).
    pub fn worker_id(&self) -> &str {
        &self.worker_id
    }

    /// Starts every task and returns a handle to stop it.
    pub fn start(self) -> DaemonHandle {
        let pool = db::pool(self.connect.clone(), &self.config.database);
        let listen_pool = PgPoolOptions::new()
            .max_connections(1)
            .connect_lazy_with(self.connect.clone());
        let (completions, completion_rx) = mpsc::unbounded_channel();
        let wakers = self
            .config
            .queues
            .keys()
            .map(|q| (q.clone(), Arc::new(Notify::new())))
            .collect();
        let flushes = self
            .config
            .queues
            .keys()
            .map(|q| (q.clone(), Arc::new(Notify::new())))
            .collect();
        let slots = self
            .config
            .queues
            .iter()
            .map(|(q, qc)| {
                (
                    q.clone(),
                    (
                        qc.concurrency,
                        Arc::new(Semaphore::new(qc.concurrency as usize)),
                    ),
                )
            })
            .collect();
        crate::metrics::handle();
        let shared = Arc::new(Shared {
            config: self.config.clone(),
            pool,
            listen_pool,
            worker_id: self.worker_id.clone(),
            registry: self.registry,
            running: Mutex::new(HashMap::new()),
            completions,
            wakers,
            flushes,
            job_ended: Notify::new(),
            slots,
            draining: AtomicBool::new(false),
            hurry: Notify::new(),
        });
        let (stop_claiming, claiming) = watch::channel(false);
        let (stop_services, services) = watch::channel(false);
        let mut tasks = Tasks::default();
        for queue in self.config.queues.keys() {
            tasks.producers.push(tokio::spawn(producer::run(
                shared.clone(),
                queue.clone(),
                claiming.clone(),
            )));
        }
        tasks
            .services
            .push(tokio::spawn(maintenance::stats::register_queues(
                shared.clone(),
                services.clone(),
            )));
        tasks.services.push(tokio::spawn(maintenance::stats::run(
            shared.clone(),
            services.clone(),
        )));
        tasks.services.push(tokio::spawn(maintenance::rescuer::run(
            shared.clone(),
            claiming.clone(),
        )));
        tasks.services.push(tokio::spawn(maintenance::periodic::run(
            shared.clone(),
            claiming.clone(),
        )));
        if self.config.worker.listen && self.config.database.pooler == db::Pooler::Transaction {
            tracing::info!(poll_interval = ?self.config.worker.poll_interval,
                "LISTEN off behind a transaction-mode pooler: new jobs are found by polling");
        } else if self.config.worker.listen {
            tasks.services.push(tokio::spawn(listener::run(
                shared.clone(),
                services.clone(),
            )));
        }
        tasks.services.push(tokio::spawn(heartbeat::run(
            shared.clone(),
            services.clone(),
        )));
        tasks.completer = Some(tokio::spawn(completer::run(
            shared.clone(),
            completion_rx,
            services,
        )));
        tracing::info!(worker_id = %self.worker_id, queues = ?self.config.queues.keys().collect::<Vec<_>>(),
            kinds = ?shared.registry.kinds(), "daemon started");
        DaemonHandle {
            control: DaemonControl {
                shared: shared.clone(),
                stop_claiming: Arc::new(stop_claiming),
            },
            shared,
            stop_services,
            tasks,
        }
    }
}

#[derive(Default)]
struct Tasks {
    producers: Vec<JoinHandle<()>>,
    services: Vec<JoinHandle<()>>,
    completer: Option<JoinHandle<()>>,
}

/// What a graceful shutdown did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Jobs still running when shutdown began.
    pub running_at_start: usize,
    /// Of those, how many were aborted at the end of the grace period and handed back.
    pub handed_back: usize,
}

/// Controls a running daemon from elsewhere (the HTTP admin API). Cheap to clone.
#[derive(Clone)]
pub struct DaemonControl {
    shared: Arc<Shared>,
    stop_claiming: Arc<watch::Sender<bool>>,
}

impl DaemonControl {
    /// Stops claiming on this daemon; running jobs finish. Readiness turns false at once.
    /// The process keeps serving metrics until it is told to shut down.
    pub fn drain(&self) {
        if !self.shared.draining.swap(true, Ordering::SeqCst) {
            tracing::info!("draining: this daemon claims no more jobs");
            metrics::gauge!(crate::metrics::DAEMON_DRAINING).set(1.0);
        }
        let _ = self.stop_claiming.send(true);
    }

    /// Ends a shutdown's grace period now: what still runs is handed back at once.
    pub fn hurry(&self) {
        self.shared.hurry.notify_one();
    }

    /// Whether the daemon has stopped claiming.
    pub fn is_draining(&self) -> bool {
        self.shared.draining.load(Ordering::SeqCst)
    }

    /// Jobs this daemon runs now.
    pub fn running(&self) -> usize {
        self.shared.running_count()
    }

    /// Jobs this daemon holds claimed ahead, waiting for a slot (decision 51).
    pub fn buffered(&self) -> usize {
        self.shared.buffered_count()
    }

    /// The daemon's pool.
    pub fn pool(&self) -> &PgPool {
        &self.shared.pool
    }

    /// The daemon's (engine) configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.shared.config
    }

    /// The daemon's worker id.
    pub fn worker_id(&self) -> &str {
        &self.shared.worker_id
    }
}

/// A running daemon.
pub struct DaemonHandle {
    shared: Arc<Shared>,
    control: DaemonControl,
    stop_services: watch::Sender<bool>,
    tasks: Tasks,
}

impl DaemonHandle {
    /// This daemon's worker id.
    pub fn worker_id(&self) -> &str {
        &self.shared.worker_id
    }

    /// The daemon's pool.
    pub fn pool(&self) -> &PgPool {
        &self.shared.pool
    }

    /// A control for the HTTP admin API.
    pub fn control(&self) -> DaemonControl {
        self.control.clone()
    }

    /// Stops claiming; running jobs finish (see [`DaemonControl::drain`]).
    pub fn drain(&self) {
        self.control.drain();
    }

    /// Jobs running right now.
    pub fn running(&self) -> usize {
        self.shared.running_count()
    }

    /// Jobs claimed ahead and waiting for a slot right now (decision 51).
    pub fn buffered(&self) -> usize {
        self.shared.buffered_count()
    }

    /// Stops claiming, waits up to the grace period for running jobs, hands back the rest,
    /// flushes outcomes and stops every task.
    pub async fn shutdown(self) -> ShutdownReport {
        let grace = self.shared.config.worker.shutdown_grace;
        self.shutdown_with_grace(grace).await
    }

    /// [`DaemonHandle::shutdown`] with an explicit grace period.
    pub async fn shutdown_with_grace(mut self, grace: Duration) -> ShutdownReport {
        self.control.drain();
        for p in self.tasks.producers.drain(..) {
            let _ = p.await;
        }
        let running_at_start = self.shared.running_count();
        tracing::info!(running = running_at_start, grace = ?grace, "shutting down: claiming stopped");
        let deadline = Instant::now() + grace;
        loop {
            let ended = self.shared.job_ended.notified();
            if self.shared.running_count() == 0 {
                break;
            }
            tokio::select! {
                _ = ended => {}
                _ = tokio::time::sleep_until(deadline.into()) => break,
                _ = self.shared.hurry.notified() => {
                    tracing::warn!("grace period cut short");
                    break;
                }
            }
        }
        let unfinished: Vec<(i64, RunningJob)> = self.shared.running().drain().collect();
        for (id, job) in &unfinished {
            if let Some(abort) = &job.abort {
                abort.abort();
            }
            tracing::warn!(job_id = id, "grace period over: handing job back");
            let _ = self.shared.completions.send(Completion {
                id: *id,
                attempt: job.attempt,
                outcome: Outcome::HandBack,
                queue: job.queue.clone(),
                kind: job.kind.clone(),
            });
        }
        let _ = self.stop_services.send(true);
        for s in self.tasks.services.drain(..) {
            let _ = s.await;
        }
        if let Some(c) = self.tasks.completer.take() {
            let _ = c.await;
        }
        if let Err(err) = maintenance::fleet::leave(&self.shared.pool, &self.shared.worker_id).await
        {
            tracing::debug!(error = %err, "daemon registry row not removed (pruned within the hour)");
        }
        self.shared.pool.close().await;
        self.shared.listen_pool.close().await;
        tracing::info!(handed_back = unfinished.len(), "daemon stopped");
        ShutdownReport {
            running_at_start,
            handed_back: unfinished.len(),
        }
    }

    /// Stops everything at once without writing anything, as `kill -9` would: running jobs
    /// keep their leases until they expire and are rescued elsewhere. For tests.
    pub fn kill(mut self) {
        for t in self
            .tasks
            .producers
            .drain(..)
            .chain(self.tasks.services.drain(..))
            .chain(self.tasks.completer.take())
        {
            t.abort();
        }
        for (_, job) in self.shared.running().drain() {
            if let Some(abort) = job.abort {
                abort.abort();
            }
        }
    }
}

impl Drop for DaemonHandle {
    fn drop(&mut self) {
        for t in self
            .tasks
            .producers
            .iter()
            .chain(self.tasks.services.iter())
            .chain(self.tasks.completer.iter())
        {
            t.abort();
        }
    }
}

/// Delays between retries of a failing background operation (database down): 100 ms
/// doubling to 1 s, with jitter, forever. Capped small so claims and held outcomes resume
/// within about a second of the database coming back; a down server refuses a connection
/// attempt cheaply, and each pool acquire already waits (`database.acquire_timeout`).
pub(crate) fn error_backoff() -> impl Iterator<Item = Duration> {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(1))
        .with_jitter()
        .without_max_times()
        .build()
}

/// Sleeps for `d` unless `stop` turns true first. Returns false when stopped.
pub(crate) async fn sleep_or_stop(d: Duration, stop: &mut watch::Receiver<bool>) -> bool {
    if *stop.borrow() {
        return false;
    }
    let stopped = tokio::select! {
        _ = tokio::time::sleep(d) => false,
        _ = stop.wait_for(|s| *s) => true,
    };
    !stopped && !*stop.borrow()
}
