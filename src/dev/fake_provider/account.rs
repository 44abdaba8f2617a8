//! The fake's provider accounts: like a real account, each provider renders at most
//! `account_concurrency` jobs at once; the others wait in its FIFO queue (fal `IN_QUEUE`
//! with a `queue_position`, Replicate `starting`, BytePlus `queued`) until a slot frees,
//! and BytePlus refuses a create once `byteplus_queued_cap` tasks wait. Without a limit
//! every job gets its slot at creation, as before.
//!
//! Nothing ticks: every look at the fake first replays the slot hand-overs that happened
//! since the last look ([`Accounts::advance`]), each at the instant its slot freed, so a
//! job's times are exact whoever asks and whenever.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use super::state::Job;
use crate::providers::ProviderKind;

/// Every provider's account on one fake server.
pub(super) struct Accounts {
    /// Renders at once per provider; `None` is unlimited.
    limit: Option<usize>,
    per: HashMap<ProviderKind, Account>,
}

#[derive(Default)]
struct Account {
    /// Jobs waiting for a slot, oldest first.
    waiting: VecDeque<String>,
    /// Jobs holding a slot (some may have ended since the last look).
    slots: Vec<String>,
    /// When a slot last freed (a job waiting then got it at that instant).
    last_release: Option<Instant>,
}

/// An account's load now: jobs rendering (holding a slot) and jobs waiting for one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Load {
    pub rendering: usize,
    pub waiting: usize,
}

impl Accounts {
    pub fn new(limit: Option<usize>) -> Self {
        Self {
            limit,
            per: HashMap::new(),
        }
    }

    /// Places a new job: it gets a slot now if one is free, else waits its turn.
    pub fn place(
        &mut self,
        jobs: &mut HashMap<String, Job>,
        id: &str,
        now: Instant,
        render: Duration,
    ) {
        let Some(job) = jobs.get_mut(id) else { return };
        if self.limit.is_none() {
            job.admit(now, render);
            return;
        }
        let kind = job.provider;
        self.per
            .entry(kind)
            .or_default()
            .waiting
            .push_back(id.to_string());
        self.advance(jobs, now, render);
    }

    /// Hands the slots freed up to `now` to waiting jobs, in order, each at the instant it
    /// freed.
    pub fn advance(&mut self, jobs: &mut HashMap<String, Job>, now: Instant, render: Duration) {
        let Some(limit) = self.limit else { return };
        for account in self.per.values_mut() {
            account.advance(jobs, limit, now, render);
        }
    }

    /// Whether `kind`'s account has a concurrency limit (jobs past it wait in its queue).
    pub fn limited(&self, kind: ProviderKind) -> bool {
        self.per.contains_key(&kind)
    }

    /// A waiting job's place in its provider's queue (0 = next), if it waits.
    pub fn position(&self, kind: ProviderKind, id: &str) -> Option<usize> {
        self.per.get(&kind)?.waiting.iter().position(|w| w == id)
    }

    /// `kind`'s load as of the last [`Accounts::advance`].
    pub fn load(&self, kind: ProviderKind, jobs: &HashMap<String, Job>, now: Instant) -> Load {
        let Some(account) = self.per.get(&kind) else {
            return Load {
                rendering: jobs
                    .values()
                    .filter(|j| j.provider == kind && j.holds_slot(now))
                    .count(),
                waiting: 0,
            };
        };
        Load {
            rendering: account
                .slots
                .iter()
                .filter(|id| jobs.get(*id).is_some_and(|j| j.holds_slot(now)))
                .count(),
            waiting: account.waiting.len(),
        }
    }
}

impl Account {
    fn advance(
        &mut self,
        jobs: &mut HashMap<String, Job>,
        limit: usize,
        now: Instant,
        render: Duration,
    ) {
        loop {
            // Cancelled (or force-ended) jobs leave the queue without a slot.
            while let Some(head) = self.waiting.front() {
                if jobs.get(head).is_some_and(Job::is_waiting) {
                    break;
                }
                self.waiting.pop_front();
            }
            let Some(head) = self.waiting.front().cloned() else {
                self.slots
                    .retain(|id| jobs.get(id).is_some_and(|j| j.slot_end() > now));
                return;
            };
            if self.slots.len() < limit {
                let job = jobs.get_mut(&head).expect("checked above");
                let at = self
                    .last_release
                    .map_or(job.created_instant(), |r| r.max(job.created_instant()));
                job.admit(at, render);
                self.slots.push(head);
                self.waiting.pop_front();
                continue;
            }
            // Full: the earliest slot to free, if it has by now.
            let earliest = self
                .slots
                .iter()
                .enumerate()
                .map(|(i, id)| (i, jobs.get(id).map_or(now, Job::slot_end)))
                .min_by_key(|(_, end)| *end);
            match earliest {
                Some((i, end)) if end <= now => {
                    self.slots.swap_remove(i);
                    self.last_release = Some(end);
                }
                _ => return,
            }
        }
    }
}
