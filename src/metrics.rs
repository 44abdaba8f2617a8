//! Prometheus metrics: every name genq exports is declared here, with its help text, so the
//! README table, the alert rules and the dashboard can be checked against one list.
//!
//! Two kinds of series: per-daemon (what this process did: finished jobs, durations,
//! running jobs) — sum them across daemons; and fleet-wide (sampled from the database by
//! one daemon at a time and exported identically by every daemon: queue depth, oldest
//! age, paused, enqueued) — take `max` across daemons, never `sum`.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Provider callbacks received, by provider and result (accepted, duplicate, orphan,
/// bad_signature, too_large, disabled, error).
pub const WEBHOOKS_RECEIVED: &str = "genq_webhooks_received_total";
/// Seconds from a callback being stored to its reconciliation job acting on it, by provider.
pub const WEBHOOK_RECONCILE_LAG: &str = "genq_webhook_reconcile_lag_seconds";
/// Plisio callbacks applied to payments, by our status (pending, completed, review,
/// expired, cancelled, error).
pub const PAYMENTS: &str = "genq_payments_total";
/// Open Plisio payments the poll stopped asking about: Plisio never knew them and they
/// are older than `[payments] give_up_unknown_after` (status kept, decision 56).
pub const PAYMENTS_POLL_GIVEN_UP: &str = "genq_payments_poll_given_up_total";
/// Credits granted by completed payments.
pub const CREDITS_GRANTED: &str = "genq_credits_granted_total";
/// What the generation sweeper did, by action (polled, expired, unsubmitted), and Plisio
/// payments the payments poll asked about (payment_polled: Plisio answered with a status).
pub const SWEEPER_ACTIONS: &str = "genq_sweeper_actions_total";

/// Blob deletions attempted by the retention jobs, by store, role and outcome (deleted,
/// failed). "Already gone" counts as deleted.
pub const RETENTION_DELETIONS: &str = "genq_retention_deletions_total";
/// Rows scrubbed of personal data, by kind (input, webhook_body).
pub const RETENTION_SCRUBBED: &str = "genq_retention_scrubbed_total";
/// Items due for deletion and not yet deleted, by kind (source, reference, output, export,
/// input, webhook_body; erasure: pending requests). Fleet-wide, sampled.
pub const RETENTION_DUE: &str = "genq_retention_due";
/// Items due longer than `[retention] overdue_after` and still not deleted, by kind
/// (erasure: requests past their due date). The privacy promise holds while this is 0.
pub const RETENTION_OVERDUE: &str = "genq_retention_overdue";
/// Seconds from an erasure request to its completion.
pub const ERASURE_DURATION: &str = "genq_privacy_erasure_seconds";
/// Data exports written.
pub const EXPORTS: &str = "genq_privacy_exports_total";

/// Build information (`version` label), always 1.
pub const BUILD_INFO: &str = "genq_build_info";
/// Attempts finished by this daemon, by queue, kind and outcome (completed, retried,
/// discarded, snoozed, handed_back, interrupted, cancelled).
pub const JOBS_FINISHED: &str = "genq_jobs_finished_total";
/// Jobs enqueued, by queue and kind (fleet-wide, sampled from the database).
pub const JOBS_ENQUEUED: &str = "genq_jobs_enqueued_total";
/// Duration of attempts, by queue and kind.
pub const JOB_DURATION: &str = "genq_job_duration_seconds";
/// Time from a job being due (`run_at`) to its start, by queue and kind.
pub const JOB_QUEUE_LATENCY: &str = "genq_job_queue_latency_seconds";
/// Jobs this daemon is running, by queue.
pub const JOBS_RUNNING: &str = "genq_jobs_running";
/// Jobs claimed ahead and waiting in this daemon's buffer for a free slot, by queue
/// (decision 51; sampled every `metrics.sample_interval`).
pub const CLAIM_AHEAD_BUFFERED: &str = "genq_claim_ahead_buffered";
/// Buffered jobs (claimed ahead, never started) this daemon handed back, by queue and reason
/// (shutdown: claiming stopped, by a shutdown or a drain; pause: the queue was paused;
/// overstay: waited longer than `worker.claim_ahead_wait`).
pub const JOBS_HANDED_BACK: &str = "genq_jobs_handed_back_total";
/// Jobs by queue and non-final state (fleet-wide, sampled).
pub const QUEUE_JOBS: &str = "genq_queue_jobs";
/// Age of the oldest due job waiting to be claimed, by queue (fleet-wide, sampled).
pub const QUEUE_OLDEST_AVAILABLE_AGE: &str = "genq_queue_oldest_available_age_seconds";
/// 1 if the queue is paused (fleet-wide, sampled).
pub const QUEUE_PAUSED: &str = "genq_queue_paused";
/// How long the queue has been paused, 0 if not (fleet-wide, sampled).
pub const QUEUE_PAUSED_SECONDS: &str = "genq_queue_paused_seconds";
/// Fleet-wide running cap of the queue, -1 if none (sampled).
pub const QUEUE_MAX_RUNNING: &str = "genq_queue_max_running";
/// Fair queues: time from a job being due to its claim, by queue and share (heavy: its
/// key still had due work after the claim; light: it did not; none: keyless job).
pub const FAIR_WAIT: &str = "genq_queue_fair_wait_seconds";
/// Fair queues: keys by state (waiting: in the claim's walk; at_limit: holding all the
/// slots their limit allows), fleet-wide, sampled.
pub const FAIR_KEYS: &str = "genq_queue_fair_keys";
/// Fair queues: due jobs held back because their key is at its limit (up to 10,000 counted
/// per key), fleet-wide, sampled.
pub const HELD_BACK: &str = "genq_queue_held_back_jobs";
/// Limit groups: slots in use, by group (e.g. render:fal), fleet-wide, sampled.
pub const GROUP_ACTIVE: &str = "genq_limit_group_active";
/// Limit groups: the limit, -1 if none, by group (sampled).
pub const GROUP_MAX: &str = "genq_limit_group_max";
/// Jobs whose lease expired and were returned to the queue, by queue and kind.
pub const LEASE_RESCUES: &str = "genq_lease_rescues_total";
/// Outcomes refused because the attempt no longer owned its job.
pub const STALE_COMPLETIONS: &str = "genq_stale_completions_total";
/// Finished jobs deleted by the prune job.
pub const JOBS_PRUNED: &str = "genq_jobs_pruned_total";
/// Database connections of this daemon's pool, by state (in_use, idle).
pub const DB_POOL_CONNECTIONS: &str = "genq_db_pool_connections";
/// 1 while this daemon drains (claims nothing, finishes what it runs).
pub const DAEMON_DRAINING: &str = "genq_daemon_draining";

/// Provider calls by provider, operation (submit, status, cancel, find) and result (ok,
/// retryable, permanent, ambiguous, refused).
pub const PROVIDER_REQUESTS: &str = "genq_provider_requests_total";
/// Duration of provider calls, by provider.
pub const PROVIDER_LATENCY: &str = "genq_provider_request_duration_seconds";
/// Provider calls that failed in a retryable way and will be retried, by provider and operation.
pub const PROVIDER_RETRIES: &str = "genq_provider_retries_total";
/// 1 while the provider's circuit breaker is open (as last seen by this daemon).
pub const PROVIDER_CIRCUIT_OPEN: &str = "genq_provider_circuit_open";
/// Generations that reached a final state, by provider and outcome (succeeded, failed, cancelled).
pub const GENERATIONS_FINISHED: &str = "genq_generations_finished_total";
/// Time from a generation's enqueue to its final state, by provider and outcome.
pub const GENERATION_DURATION: &str = "genq_generation_duration_seconds";
/// Submits whose outcome was unknown (a timeout after sending, a daemon killed before the
/// request id was saved), by provider and how they ended: found (the provider's list had
/// it), never_arrived (it did not: submitted again), adopted (a callback named it; this
/// includes a callback that beat the submit's own save), failed
/// (no way to know before `providers.ambiguous_submit_grace`: hold released).
pub const AMBIGUOUS_SUBMITS: &str = "genq_generation_ambiguous_submits_total";
/// Verified callbacks naming a provider request for a generation that already failed
/// without one (an ambiguous submit given up on): the provider ran, and bills, a render the
/// user was not charged for. By provider.
pub const LATE_CALLBACKS: &str = "genq_generation_late_callbacks_total";
/// Credits moved by this daemon's settlements, by kind (captured, released).
pub const CREDITS: &str = "genq_credits_total";
/// Generations the provider finished but whose output could not be downloaded, by
/// provider and reason (expired, refused, too_large, unreachable): failed, hold captured.
pub const OUTPUTS_UNFETCHABLE: &str = "genq_generation_outputs_unfetchable_total";

/// Credits held by unfinished generations, all users (fleet-wide, read every sample interval).
pub const CREDITS_HELD: &str = "genq_credits_held";

/// Open live event streams (`/v1/.../events`) on this daemon.
pub const EVENT_STREAMS: &str = "genq_event_streams";
/// Events sent on live event streams.
pub const EVENTS_SENT: &str = "genq_events_sent_total";
/// Event streams closed because they fell `[events] stream_buffer` events behind.
pub const EVENT_STREAMS_DROPPED: &str = "genq_event_streams_dropped_total";
/// Times the events LISTEN connection was lost (each followed by a catch-up read).
pub const EVENT_LISTEN_RECONNECTS: &str = "genq_events_listen_reconnects_total";

/// Every metric: (name, type, help).
pub const ALL: &[(&str, &str, &str)] = &[
    (
        FAIR_WAIT,
        "histogram",
        "Fair queues: seconds from due to claim, by queue and share (heavy: the key had more due work than the claim took; light; none: keyless).",
    ),
    (
        FAIR_KEYS,
        "gauge",
        "Fair queues: keys waiting for a claim and keys at their limit, by queue and state (fleet-wide, sampled).",
    ),
    (
        HELD_BACK,
        "gauge",
        "Fair queues: due jobs held back by their key's limit, by queue (fleet-wide, sampled; at most 10000 counted per key).",
    ),
    (
        GROUP_ACTIVE,
        "gauge",
        "Limit groups: slots in use, by group (fleet-wide, sampled).",
    ),
    (
        GROUP_MAX,
        "gauge",
        "Limit groups: the limit, -1 if none, by group (sampled).",
    ),
    (
        RETENTION_DELETIONS,
        "counter",
        "Blob deletions attempted by the retention jobs, by store, role and outcome (deleted, failed).",
    ),
    (
        RETENTION_SCRUBBED,
        "counter",
        "Rows scrubbed of personal data, by kind (input, webhook_body).",
    ),
    (
        RETENTION_DUE,
        "gauge",
        "Items due for deletion and not yet deleted, by kind; erasure: pending requests (fleet-wide, sampled; use max across daemons).",
    ),
    (
        RETENTION_OVERDUE,
        "gauge",
        "Items due longer than the grace and not deleted, by kind; erasure: requests past due (fleet-wide, sampled). The promise holds at 0.",
    ),
    (
        ERASURE_DURATION,
        "histogram",
        "Seconds from an account erasure request to its completion.",
    ),
    (EXPORTS, "counter", "Data exports written."),
    (
        WEBHOOKS_RECEIVED,
        "counter",
        "Provider callbacks received, by provider and result (accepted, duplicate, orphan, bad_signature, too_large, disabled, error).",
    ),
    (
        WEBHOOK_RECONCILE_LAG,
        "histogram",
        "Seconds from a stored callback to its reconciliation acting on it, by provider.",
    ),
    (
        PAYMENTS,
        "counter",
        "Plisio callbacks applied to payments, by status (pending, completed, review, expired, cancelled, error).",
    ),
    (
        PAYMENTS_POLL_GIVEN_UP,
        "counter",
        "Open Plisio payments no longer polled: Plisio never knew them and they are older than payments.give_up_unknown_after (status kept).",
    ),
    (
        CREDITS_GRANTED,
        "counter",
        "Credits granted by completed payments.",
    ),
    (
        SWEEPER_ACTIONS,
        "counter",
        "Generations the sweeper acted on, by action (polled: given a poll job again; expired: failed past the retention window), and Plisio payments polled (payment_polled).",
    ),
    (BUILD_INFO, "gauge", "Build information, always 1."),
    (
        JOBS_FINISHED,
        "counter",
        "Attempts finished by this daemon, by queue, kind and outcome.",
    ),
    (
        JOBS_ENQUEUED,
        "counter",
        "Jobs enqueued, by queue and kind (fleet-wide, sampled; use max across daemons).",
    ),
    (
        JOB_DURATION,
        "histogram",
        "Duration of attempts in seconds, by queue and kind.",
    ),
    (
        JOB_QUEUE_LATENCY,
        "histogram",
        "Seconds from a job being due to its start, by queue and kind.",
    ),
    (
        JOBS_RUNNING,
        "gauge",
        "Jobs this daemon is running, by queue.",
    ),
    (
        CLAIM_AHEAD_BUFFERED,
        "gauge",
        "Jobs claimed ahead and waiting in this daemon's buffer for a free slot, by queue.",
    ),
    (
        JOBS_HANDED_BACK,
        "counter",
        "Buffered jobs (claimed ahead, never started) this daemon handed back, by queue and reason (shutdown, pause, overstay).",
    ),
    (
        QUEUE_JOBS,
        "gauge",
        "Jobs by queue and non-final state (fleet-wide, sampled; use max across daemons).",
    ),
    (
        QUEUE_OLDEST_AVAILABLE_AGE,
        "gauge",
        "Age in seconds of the oldest due job not yet claimed, by queue (fleet-wide, sampled).",
    ),
    (
        QUEUE_PAUSED,
        "gauge",
        "1 if the queue is paused (fleet-wide, sampled).",
    ),
    (
        QUEUE_PAUSED_SECONDS,
        "gauge",
        "Seconds the queue has been paused, 0 if running (fleet-wide, sampled).",
    ),
    (
        QUEUE_MAX_RUNNING,
        "gauge",
        "Fleet-wide running cap of the queue, -1 if none (sampled).",
    ),
    (
        LEASE_RESCUES,
        "counter",
        "Jobs whose lease expired and were returned to the queue, by queue and kind.",
    ),
    (
        STALE_COMPLETIONS,
        "counter",
        "Outcomes refused because the attempt no longer owned its job.",
    ),
    (
        JOBS_PRUNED,
        "counter",
        "Finished jobs deleted by the prune job.",
    ),
    (
        DB_POOL_CONNECTIONS,
        "gauge",
        "Connections of this daemon's database pool, by state.",
    ),
    (DAEMON_DRAINING, "gauge", "1 while this daemon drains."),
    (
        PROVIDER_REQUESTS,
        "counter",
        "Provider calls by provider, operation and result.",
    ),
    (
        PROVIDER_LATENCY,
        "histogram",
        "Duration of provider calls in seconds, by provider.",
    ),
    (
        PROVIDER_RETRIES,
        "counter",
        "Provider calls that failed retryably, by provider and operation.",
    ),
    (
        PROVIDER_CIRCUIT_OPEN,
        "gauge",
        "1 while the provider's circuit breaker is open.",
    ),
    (
        GENERATIONS_FINISHED,
        "counter",
        "Generations that reached a final state, by provider and outcome.",
    ),
    (
        AMBIGUOUS_SUBMITS,
        "counter",
        "Submits whose outcome was unknown, by provider and resolution (found, never_arrived, adopted, failed).",
    ),
    (
        LATE_CALLBACKS,
        "counter",
        "Callbacks naming a provider request for a generation already failed without one (an ambiguous submit given up on; the provider bills it), by provider.",
    ),
    (
        GENERATION_DURATION,
        "histogram",
        "Seconds from a generation's enqueue to its final state, by provider and outcome.",
    ),
    (
        CREDITS,
        "counter",
        "Credits settled by this daemon, by kind (captured, released).",
    ),
    (
        OUTPUTS_UNFETCHABLE,
        "counter",
        "Generations finished by the provider whose output could not be downloaded (failed, hold captured), by provider and reason.",
    ),
    (
        CREDITS_HELD,
        "gauge",
        "Credits held by unfinished generations, all users (fleet-wide; use max across daemons).",
    ),
    (
        EVENT_STREAMS,
        "gauge",
        "Open live event streams on this daemon.",
    ),
    (EVENTS_SENT, "counter", "Events sent on live event streams."),
    (
        EVENT_STREAMS_DROPPED,
        "counter",
        "Event streams closed because they fell too far behind (the browser reconnects and resumes).",
    ),
    (
        EVENT_LISTEN_RECONNECTS,
        "counter",
        "Times the events LISTEN connection was lost (each followed by a catch-up read).",
    ),
];

/// Histogram buckets in seconds: from 5 ms to one hour, so both no-op jobs and
/// minutes-long renders land in a meaningful bucket.
pub const BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
    1800.0, 3600.0,
];

/// Buckets of [`ERASURE_DURATION`]: a minute to the 30-day promise.
pub const ERASURE_BUCKETS: &[f64] = &[
    60.0,
    300.0,
    900.0,
    3600.0,
    6.0 * 3600.0,
    86400.0,
    3.0 * 86400.0,
    7.0 * 86400.0,
    14.0 * 86400.0,
    30.0 * 86400.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide recorder on first call and returns the handle that renders
/// the text format. Later calls return the same handle.
pub fn handle() -> &'static PrometheusHandle {
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Full(ERASURE_DURATION.into()), ERASURE_BUCKETS)
            .expect("buckets are non-empty")
            .set_buckets(BUCKETS)
            .expect("buckets are non-empty")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (an embedding application's); then
        // genq's series go there and this handle renders nothing of them.
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!(
                "a metrics recorder was already installed; /metrics shows only its own series"
            );
        }
        describe();
        metrics::gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
        handle
    })
}

fn describe() {
    for (name, kind, help) in ALL {
        match *kind {
            "counter" => metrics::describe_counter!(*name, *help),
            "gauge" => metrics::describe_gauge!(*name, *help),
            _ => metrics::describe_histogram!(*name, metrics::Unit::Seconds, *help),
        }
    }
}
