//! The fake's jobs and counters. A job's phase is computed from the clock (queued for the
//! first quarter of the render time, running until it ends, then its planned outcome), so
//! nothing has to tick; faults and cancels change the plan. With an account concurrency a
//! job's clock starts when it gets a render slot (`account.rs`); until then it waits.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::watch;

use super::account::{Accounts, Load};
use super::faults::{FakeOp, Faults};
use super::plisio::PlisioOps;
use super::redelivery::Refusals;
use super::webhooks::Signing;
use super::FakeConfig;
use crate::providers::ProviderKind;

/// Everything the handlers share.
pub(super) struct State {
    pub cfg: FakeConfig,
    /// `http://127.0.0.1:PORT`, for URLs the fake hands out.
    pub base: String,
    pub faults: Faults,
    pub webhook_client: reqwest::Client,
    /// Webhook keys, secrets and signing modes.
    pub signing: Signing,
    /// Delivery attempts still to be refused.
    pub refusals: Refusals,
    shutdown: watch::Receiver<bool>,
    /// Bumped after every change to the stats: the signal [`State::wait_for_stats`] waits
    /// on, so a test need not poll.
    stats_changed: watch::Sender<u64>,
    inner: Mutex<Inner>,
}

struct Inner {
    rng: StdRng,
    jobs: HashMap<String, Job>,
    /// Ids in creation order (deleted BytePlus tasks are skipped when listing).
    order: Vec<String>,
    stats: FakeStats,
    /// Plisio operations, their scripted faults and polls.
    plisio: PlisioOps,
    /// Render slots and waiting queues per provider.
    accounts: Accounts,
}

/// Stand-in for "not yet" on a job that waits for a render slot.
const NOT_YET: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// BytePlus refused a create: its account already has this many tasks queued.
#[derive(Debug, Clone, Copy)]
pub(super) struct QueueFull(pub usize);

/// How a job will end.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Outcome {
    Succeed,
    /// Fails at the end; `moderation` picks a content-policy error over a model error.
    Fail {
        moderation: bool,
    },
    /// Succeeds, but its result is gone when asked for (fal result 404/410, Replicate
    /// `data_removed`, BytePlus `expired`). `status` is the HTTP status fal answers with.
    ResultExpired {
        status: u16,
    },
}

/// Where a job stands now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    Queued,
    Running,
    Succeeded,
    Failed { moderation: bool },
    Expired { status: u16 },
    Cancelled,
}

impl Phase {
    pub fn is_final(self) -> bool {
        !matches!(self, Self::Queued | Self::Running)
    }
}

/// One generation at the fake.
#[derive(Debug, Clone)]
pub(super) struct Job {
    pub id: String,
    pub provider: ProviderKind,
    pub model: String,
    pub version: String,
    pub input: Value,
    pub webhook: Option<String>,
    pub created_at: DateTime<Utc>,
    created: Instant,
    running_at: Instant,
    finish_at: Instant,
    pub outcome: Outcome,
    cancelled_at: Option<Instant>,
    /// Waiting for a render slot (its times are not known yet).
    waiting: bool,
    pub gateway_id: String,
}

impl Job {
    pub fn phase(&self, now: Instant) -> Phase {
        if self.cancelled_at.is_some() {
            return Phase::Cancelled;
        }
        if now < self.running_at {
            return Phase::Queued;
        }
        if now < self.finish_at {
            return Phase::Running;
        }
        match self.outcome {
            Outcome::Succeed => Phase::Succeeded,
            Outcome::Fail { moderation } => Phase::Failed { moderation },
            Outcome::ResultExpired { status } => Phase::Expired { status },
        }
    }

    /// Gives it a render slot at `at`: queued for the first quarter, then running.
    pub(super) fn admit(&mut self, at: Instant, render: Duration) {
        self.waiting = false;
        self.running_at = at + render / 4;
        self.finish_at = at + render;
    }

    /// Whether it still waits for a render slot.
    pub(super) fn is_waiting(&self) -> bool {
        self.waiting && self.cancelled_at.is_none()
    }

    /// When its render slot frees (it ends, or was cancelled).
    pub(super) fn slot_end(&self) -> Instant {
        self.cancelled_at
            .map_or(self.finish_at, |c| c.min(self.finish_at))
    }

    /// Whether it holds a render slot at `now`.
    pub(super) fn holds_slot(&self, now: Instant) -> bool {
        !self.waiting && self.slot_end() > now
    }

    pub(super) fn created_instant(&self) -> Instant {
        self.created
    }

    fn at(&self, instant: Instant) -> DateTime<Utc> {
        self.created_at + (instant.saturating_duration_since(self.created))
    }

    /// When it started running, if it has (a job cancelled while queued never did).
    pub fn started_at(&self, now: Instant) -> Option<DateTime<Utc>> {
        let began =
            now >= self.running_at && self.cancelled_at.is_none_or(|c| c >= self.running_at);
        began.then(|| self.at(self.running_at))
    }

    /// When it reached its final state, if it has.
    pub fn finished_at(&self, now: Instant) -> Option<DateTime<Utc>> {
        match self.cancelled_at {
            Some(c) => Some(self.at(c)),
            None => (now >= self.finish_at).then(|| self.at(self.finish_at)),
        }
    }

    /// How long until the phase can next change by itself.
    pub fn next_change(&self, now: Instant) -> Duration {
        if now < self.running_at {
            self.running_at - now
        } else {
            self.finish_at.saturating_duration_since(now)
        }
    }

    /// How far it is through its current phase, 0 to 1 (queued: towards running, running:
    /// towards its end), for the progress the dialects report.
    pub fn phase_fraction(&self, now: Instant) -> f64 {
        let (from, to) = if now < self.running_at {
            (self.created, self.running_at)
        } else {
            (self.running_at, self.finish_at)
        };
        let span = to.saturating_duration_since(from).as_secs_f64();
        if span <= 0.0 {
            return 1.0;
        }
        (now.saturating_duration_since(from).as_secs_f64() / span).clamp(0.0, 1.0)
    }

    /// Whether its output file can still be downloaded.
    pub fn file_available(&self, now: Instant, ttl: Duration) -> bool {
        self.phase(now) == Phase::Succeeded && now < self.finish_at + ttl
    }

    /// Seconds it spent rendering (for metrics fields).
    pub fn render_secs(&self) -> f64 {
        (self.finish_at - self.running_at).as_secs_f64()
    }
}

/// What the fake saw: `GET /_fake/stats`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FakeStats {
    /// Requests per provider (`fal`, `byteplus`, `replicate`; `files` for downloads of
    /// unknown files) and operation, faulted ones included.
    pub requests: BTreeMap<String, BTreeMap<String, u64>>,
    /// Jobs created per provider: paid generations, as a real provider would bill them.
    pub jobs_created: BTreeMap<String, u64>,
    /// Faults applied.
    pub faults_applied: u64,
    /// Webhook delivery attempts that got a 2xx answer (retries and replays included).
    pub webhooks_sent: u64,
    /// Webhook delivery attempts that failed (no answer, not 2xx, or refused).
    pub webhooks_failed: u64,
    /// Attempts that were retries of a failed delivery (`webhook_retry_scale` > 0).
    #[serde(default)]
    pub webhook_retries: u64,
    /// Webhooks given up after the provider's last retry failed too.
    #[serde(default)]
    pub webhooks_abandoned: u64,
    /// Requests to Plisio's operations API.
    #[serde(default)]
    pub plisio_polls: u64,
    /// Jobs rendering now (holding one of the account's render slots), per provider.
    #[serde(default)]
    pub rendering: BTreeMap<String, u64>,
    /// Jobs waiting now for a render slot (queued at the account), per provider.
    #[serde(default)]
    pub waiting: BTreeMap<String, u64>,
    /// Creates refused because the account's queue was full (BytePlus), per provider.
    #[serde(default)]
    pub refused_queue_full: BTreeMap<String, u64>,
}

impl FakeStats {
    /// Jobs created at `kind`: what the provider would bill.
    pub fn created(&self, kind: ProviderKind) -> u64 {
        self.jobs_created.get(kind.as_str()).copied().unwrap_or(0)
    }

    /// Jobs of `kind` rendering at the time of these stats.
    pub fn rendering(&self, kind: ProviderKind) -> u64 {
        self.rendering.get(kind.as_str()).copied().unwrap_or(0)
    }

    /// Jobs of `kind` waiting for a render slot at the time of these stats.
    pub fn waiting(&self, kind: ProviderKind) -> u64 {
        self.waiting.get(kind.as_str()).copied().unwrap_or(0)
    }

    /// Creates at `kind` refused because its account's queue was full.
    pub fn refused_queue_full(&self, kind: ProviderKind) -> u64 {
        self.refused_queue_full
            .get(kind.as_str())
            .copied()
            .unwrap_or(0)
    }

    /// Requests seen for `kind` and `op` (downloads count under the provider whose job
    /// made the file).
    pub fn ops(&self, kind: ProviderKind, op: FakeOp) -> u64 {
        self.requests
            .get(kind.as_str())
            .and_then(|ops| ops.get(op.as_str()))
            .copied()
            .unwrap_or(0)
    }
}

/// What creating a job needs.
pub(super) struct NewJob {
    pub provider: ProviderKind,
    pub model: String,
    pub version: String,
    pub input: Value,
    pub webhook: Option<String>,
}

impl State {
    pub fn new(
        cfg: FakeConfig,
        base: String,
        shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            inner: Mutex::new(Inner {
                rng: StdRng::seed_from_u64(cfg.seed),
                jobs: HashMap::new(),
                order: Vec::new(),
                stats: FakeStats::default(),
                plisio: PlisioOps::default(),
                accounts: Accounts::new(cfg.account_concurrency),
            }),
            signing: Signing::new(&cfg),
            refusals: Refusals::default(),
            cfg,
            base,
            faults: Faults::default(),
            webhook_client: reqwest::Client::builder()
                .timeout(Duration::from_secs(5))
                .build()?,
            shutdown,
            stats_changed: watch::Sender::new(0),
        })
    }

    /// The state, with the render slots freed since the last look handed over first.
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A panicking handler must not take the whole fake down with a poisoned lock.
        let mut inner = crate::sync::lock(&self.inner);
        let Inner { jobs, accounts, .. } = &mut *inner;
        accounts.advance(jobs, Instant::now(), self.cfg.render_time);
        inner
    }

    /// Whether `kind`'s account has a concurrency limit (`--account-concurrency`).
    pub fn account_limited(&self, kind: ProviderKind) -> bool {
        self.lock().accounts.limited(kind)
    }

    /// A waiting job's place in its provider's queue (0 = next), if it waits for a slot.
    pub fn queue_position(&self, kind: ProviderKind, id: &str) -> Option<usize> {
        self.lock().accounts.position(kind, id)
    }

    /// `kind`'s account now: jobs rendering and jobs waiting for a slot.
    pub fn load(&self, kind: ProviderKind) -> Load {
        let inner = self.lock();
        inner.accounts.load(kind, &inner.jobs, Instant::now())
    }

    /// Reads or changes the Plisio operations.
    pub fn plisio<R>(&self, f: impl FnOnce(&mut PlisioOps) -> R) -> R {
        f(&mut self.lock().plisio)
    }

    /// Changes the stats, then wakes whoever waits on them.
    fn update_stats(&self, change: impl FnOnce(&mut FakeStats)) {
        change(&mut self.lock().stats);
        self.stats_changed.send_modify(|version| *version += 1);
    }

    /// Counts a request to Plisio's operations API.
    pub fn count_plisio_poll(&self) {
        self.update_stats(|stats| stats.plisio_polls += 1);
    }

    /// Counts a request.
    pub fn count(&self, provider: &str, op: FakeOp) {
        self.update_stats(|stats| {
            *stats
                .requests
                .entry(provider.to_string())
                .or_default()
                .entry(op.as_str().to_string())
                .or_default() += 1;
        });
    }

    pub fn count_fault(&self) {
        self.update_stats(|stats| stats.faults_applied += 1);
    }

    pub fn count_webhook(&self, delivered: bool) {
        self.update_stats(|stats| {
            if delivered {
                stats.webhooks_sent += 1;
            } else {
                stats.webhooks_failed += 1;
            }
        });
    }

    pub fn count_webhook_retry(&self) {
        self.update_stats(|stats| stats.webhook_retries += 1);
    }

    pub fn count_webhook_abandoned(&self) {
        self.update_stats(|stats| stats.webhooks_abandoned += 1);
    }

    /// Waits until `reached` holds for the stats, woken by each change to them; false if
    /// `within` passed first.
    pub async fn wait_for_stats(
        &self,
        within: Duration,
        reached: impl Fn(&FakeStats) -> bool,
    ) -> bool {
        // Subscribed before the first look, so no change between the two is missed.
        let mut changed = self.stats_changed.subscribe();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if reached(&self.stats()) {
                return true;
            }
            if tokio::time::timeout_at(deadline, changed.changed())
                .await
                .is_err()
            {
                return reached(&self.stats());
            }
        }
    }

    pub fn stats(&self) -> FakeStats {
        let mut stats = self.lock().stats.clone();
        for kind in ProviderKind::ALL {
            let load = self.load(kind);
            if load != Load::default() {
                stats
                    .rendering
                    .insert(kind.as_str().into(), load.rendering as u64);
                stats
                    .waiting
                    .insert(kind.as_str().into(), load.waiting as u64);
            }
        }
        stats
    }

    /// Creates a job with an id in the provider's style; whether it fails is drawn from
    /// the seeded generator, so a run with the same seed and order fails the same jobs.
    /// It renders at once if its account has a free slot, else waits for one; BytePlus
    /// refuses it ([`QueueFull`]) when `byteplus_queued_cap` tasks already wait.
    pub fn create(&self, new: NewJob) -> Result<Job, QueueFull> {
        let mut inner = self.lock();
        let now = Instant::now();
        let cap = self.cfg.byteplus_queued_cap;
        if new.provider == ProviderKind::BytePlus
            && inner.accounts.load(new.provider, &inner.jobs, now).waiting >= cap
        {
            *inner
                .stats
                .refused_queue_full
                .entry(new.provider.as_str().to_string())
                .or_default() += 1;
            drop(inner);
            self.stats_changed.send_modify(|version| *version += 1);
            return Err(QueueFull(cap));
        }
        let created_at = Utc::now();
        let id = match new.provider {
            ProviderKind::Fal => uuid::Builder::from_random_bytes(inner.rng.gen())
                .into_uuid()
                .to_string(),
            ProviderKind::BytePlus => format!(
                "cgt-{}-{}",
                created_at.format("%Y%m%d%H%M%S"),
                random_text(&mut inner.rng, 5, b"abcdefghijklmnopqrstuvwxyz0123456789")
            ),
            ProviderKind::Replicate => {
                random_text(&mut inner.rng, 26, b"abcdefghijklmnopqrstuvwxyz234567")
            }
        };
        let gateway_id = uuid::Builder::from_random_bytes(inner.rng.gen())
            .into_uuid()
            .to_string();
        let fails = self.cfg.failure_rate > 0.0 && inner.rng.gen::<f64>() < self.cfg.failure_rate;
        let render = self.cfg.render_time;
        let job = Job {
            id: id.clone(),
            provider: new.provider,
            model: new.model,
            version: new.version,
            input: new.input,
            webhook: new.webhook,
            created_at,
            created: now,
            running_at: now + NOT_YET,
            finish_at: now + NOT_YET,
            outcome: if fails {
                Outcome::Fail { moderation: true }
            } else {
                Outcome::Succeed
            },
            cancelled_at: None,
            waiting: true,
            gateway_id,
        };
        inner.jobs.insert(id.clone(), job);
        let Inner { jobs, accounts, .. } = &mut *inner;
        accounts.place(jobs, &id, now, render);
        let job = inner.jobs[&id].clone();
        inner.order.push(id);
        *inner
            .stats
            .jobs_created
            .entry(new.provider.as_str().to_string())
            .or_default() += 1;
        Ok(job)
    }

    /// A job of `provider` by id.
    pub fn job(&self, provider: ProviderKind, id: &str) -> Option<Job> {
        self.lock()
            .jobs
            .get(id)
            .filter(|j| j.provider == provider)
            .cloned()
    }

    /// Any provider's job by id (output files).
    pub fn any_job(&self, id: &str) -> Option<Job> {
        self.lock().jobs.get(id).cloned()
    }

    /// Changes how a job ends; `now` also ends it at once (a fault on a status read).
    pub fn set_outcome(&self, id: &str, outcome: Outcome, now: bool) -> Option<Job> {
        let mut inner = self.lock();
        let job = inner.jobs.get_mut(id)?;
        let phase = job.phase(Instant::now());
        // An ended job keeps its fate, except that a success can lose its result later.
        let result_lost =
            phase == Phase::Succeeded && matches!(outcome, Outcome::ResultExpired { .. });
        if phase.is_final() && !result_lost {
            return Some(job.clone());
        }
        job.outcome = outcome;
        if now {
            let t = Instant::now();
            job.waiting = false;
            job.running_at = job.running_at.min(t);
            job.finish_at = t;
        }
        Some(job.clone())
    }

    /// Cancels a job if `allowed` says so for its phase; returns the phase it was in.
    pub fn cancel(
        &self,
        provider: ProviderKind,
        id: &str,
        allowed: impl Fn(Phase) -> bool,
    ) -> Option<Phase> {
        let mut inner = self.lock();
        let job = inner.jobs.get_mut(id).filter(|j| j.provider == provider)?;
        let now = Instant::now();
        let phase = job.phase(now);
        if allowed(phase) {
            job.cancelled_at = Some(now);
        }
        Some(phase)
    }

    /// Deletes a job record (BytePlus DELETE on a finished task).
    pub fn delete(&self, id: &str) {
        let mut inner = self.lock();
        inner.jobs.remove(id);
        inner.order.retain(|j| j != id);
    }

    /// The callback URL of every job that has one.
    pub fn webhook_urls(&self) -> Vec<String> {
        self.lock()
            .jobs
            .values()
            .filter_map(|j| j.webhook.clone())
            .collect()
    }

    /// Jobs of `provider`, newest first.
    pub fn newest_first(&self, provider: ProviderKind) -> Vec<Job> {
        let inner = self.lock();
        inner
            .order
            .iter()
            .rev()
            .filter_map(|id| inner.jobs.get(id))
            .filter(|j| j.provider == provider)
            .cloned()
            .collect()
    }

    /// Sleeps, or returns early when the server stops (so hung handlers let it stop).
    pub async fn sleep(&self, d: Duration) {
        let mut shutdown = self.shutdown.clone();
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = shutdown.wait_for(|stop| *stop) => {}
        }
    }

    pub fn stopping(&self) -> bool {
        *self.shutdown.borrow()
    }
}

fn random_text(rng: &mut StdRng, len: usize, alphabet: &[u8]) -> String {
    (0..len)
        .map(|_| alphabet[rng.gen_range(0..alphabet.len())] as char)
        .collect()
}

/// Shared handle type of the handlers.
pub(super) type Shared = Arc<State>;
