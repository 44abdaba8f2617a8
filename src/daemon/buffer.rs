//! A producer's claim-ahead buffer (decision 51): jobs claimed beyond the queue's free slots,
//! waiting for one. Why: with the shipped `concurrency` (50), a claim could take at most 50
//! jobs, so no-op jobs waited for one claim round trip per 50 and the engine ran at a
//! third of its speed. With a buffer, claims are larger and overlap with running jobs.
//!
//! Bounds, so that the buffer never hides work from other daemons for long: its size is
//! about 100 ms of this queue's recent starts (at most `worker.claim_ahead`), so it stays
//! empty while the slots are busy with long jobs; a job that waits longer than
//! `worker.claim_ahead_wait` is handed back, and then the start rate is forgotten so the
//! buffer refills only once jobs move again.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::queue::claim::ClaimedJob;

/// The buffer holds about this long's worth of starts at the recent start rate.
const HORIZON_PER_SEC: usize = 10; // 1 s / 100 ms

/// Why buffered jobs go back: the `reason` of `genq_jobs_handed_back_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HandBackReason {
    /// Claiming stopped (drain or shutdown).
    Shutdown,
    /// The queue was paused.
    Pause,
    /// The job waited longer than `worker.claim_ahead_wait`.
    Overstay,
}

impl HandBackReason {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Self::Shutdown => "shutdown",
            Self::Pause => "pause",
            Self::Overstay => "overstay",
        }
    }

    /// What the log says.
    pub fn why(self) -> &'static str {
        match self {
            Self::Shutdown => "claiming stopped (drain or shutdown)",
            Self::Pause => "queue paused",
            Self::Overstay => "waited longer than worker.claim_ahead_wait",
        }
    }
}

pub(crate) struct Buffer {
    jobs: VecDeque<(ClaimedJob, Instant)>,
    max: usize,
    wait: Duration,
    rate: StartRate,
}

impl Buffer {
    pub fn new(max: u32, wait: Duration) -> Self {
        Self {
            jobs: VecDeque::new(),
            max: max as usize,
            wait,
            rate: StartRate::new(),
        }
    }

    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// How many jobs the buffer may hold now: none where buffering is not `allowed`, else
    /// about 100 ms of recent starts, at most `claim_ahead`.
    pub fn limit(&mut self, allowed: bool) -> usize {
        if !allowed || self.max == 0 {
            return 0;
        }
        (self.rate.per_second(Instant::now()) / HORIZON_PER_SEC).min(self.max)
    }

    pub fn push(&mut self, job: ClaimedJob) {
        self.jobs.push_back((job, Instant::now() + self.wait));
    }

    pub fn pop(&mut self) -> Option<ClaimedJob> {
        self.jobs.pop_front().map(|(job, _)| job)
    }

    /// Counts a job started (from the buffer or straight from a claim).
    pub fn started(&mut self) {
        self.rate.record(Instant::now());
    }

    /// When the oldest buffered job's wait is over.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.jobs.front().map(|(_, deadline)| *deadline)
    }

    /// Removes the jobs whose wait is over (oldest first: deadlines grow along the queue).
    /// If there were any, the slots are busy with slower jobs than the rate said: the rate
    /// is forgotten, so the buffer stays empty until jobs start again.
    pub fn expired(&mut self, now: Instant) -> Vec<(i64, i32)> {
        let mut out = Vec::new();
        while self.jobs.front().is_some_and(|(_, d)| *d <= now) {
            if let Some((job, _)) = self.jobs.pop_front() {
                out.push((job.id, job.attempt));
            }
        }
        if !out.is_empty() {
            self.rate = StartRate::new();
        }
        out
    }

    /// Removes every buffered job (pause, drain, shutdown).
    pub fn drain(&mut self) -> Vec<(i64, i32)> {
        self.jobs
            .drain(..)
            .map(|(job, _)| (job.id, job.attempt))
            .collect()
    }
}

/// Starts per second, from two one-second buckets: the larger of the last full second and
/// the current one (so a burst counts at once, and a stop is forgotten within 2 s).
struct StartRate {
    bucket: Instant,
    current: usize,
    previous: usize,
}

impl StartRate {
    fn new() -> Self {
        Self {
            bucket: Instant::now(),
            current: 0,
            previous: 0,
        }
    }

    fn roll(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.bucket);
        if elapsed >= Duration::from_secs(2) {
            self.previous = 0;
            self.current = 0;
            self.bucket = now;
        } else if elapsed >= Duration::from_secs(1) {
            self.previous = self.current;
            self.current = 0;
            self.bucket += Duration::from_secs(1);
        }
    }

    fn record(&mut self, now: Instant) {
        self.roll(now);
        self.current += 1;
    }

    fn per_second(&mut self, now: Instant) -> usize {
        self.roll(now);
        self.previous.max(self.current)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_counts_a_burst_at_once_and_forgets_a_stop() {
        let t0 = Instant::now();
        let mut r = StartRate {
            bucket: t0,
            current: 0,
            previous: 0,
        };
        for _ in 0..500 {
            r.record(t0);
        }
        assert_eq!(r.per_second(t0), 500);
        assert_eq!(r.per_second(t0 + Duration::from_millis(1500)), 500);
        assert_eq!(r.per_second(t0 + Duration::from_millis(3100)), 0);
    }
}
