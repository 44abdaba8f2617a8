//! What the fake says while a job works, in each dialect's words: fal's queue position
//! (counting down to 0) and `IN_PROGRESS` logs with tqdm-style percentages, Replicate's
//! `logs` text with the same bars (BytePlus says only `queued`/`running`). The percent is
//! the share of the render time elapsed. An input field `fake_log_bytes` (at most 16 MiB)
//! pads the log with one long line, as a hostile or chatty model would.

use std::time::Instant;

use serde_json::{json, Value};

use super::state::Job;

/// Positions a queued fal job passes through: 2, 1, 0.
const QUEUE_AHEAD: f64 = 3.0;
/// Largest padding `fake_log_bytes` may ask for.
const MAX_PADDING: u64 = 16 << 20;

/// fal's `queue_position` of a queued job: counts down to 0 as it nears running.
pub(super) fn queue_position(job: &Job, now: Instant) -> u64 {
    let ahead = ((1.0 - job.phase_fraction(now)) * QUEUE_AHEAD).ceil() - 1.0;
    ahead.max(0.0) as u64
}

/// The share of a running job's render done, 0 to 99.
pub(super) fn percent(job: &Job, now: Instant) -> u32 {
    ((job.phase_fraction(now) * 100.0).floor() as u32).min(99)
}

/// A tqdm bar line: ` 45%|████▌     | 9/20`.
fn bar(percent: u32) -> String {
    let filled = (percent / 10) as usize;
    format!(
        "{percent:>3}%|{}{}| {}/20",
        "█".repeat(filled),
        " ".repeat(10 - filled),
        percent / 5
    )
}

fn padding(job: &Job) -> Option<String> {
    let bytes = job.input.get("fake_log_bytes")?.as_u64()?.min(MAX_PADDING);
    Some("x".repeat(bytes as usize))
}

/// fal's `logs` of a running job (`?logs=1`): a load line, the padding if asked, the bar.
pub(super) fn fal_logs(job: &Job, now: Instant) -> Value {
    let line = |message: String| {
        json!({"message": message, "level": "INFO", "source": "user",
               "timestamp": chrono::Utc::now().to_rfc3339()})
    };
    let mut logs = vec![line("Loading model weights".into())];
    logs.extend(padding(job).map(line));
    logs.push(line(bar(percent(job, now))));
    Value::Array(logs)
}

/// Replicate's `logs` of a running job: tqdm redraws its bar with `\r`.
pub(super) fn replicate_logs(job: &Job, now: Instant) -> String {
    let mut log = String::from("Loading model weights\n");
    if let Some(pad) = padding(job) {
        log.push_str(&pad);
        log.push('\n');
    }
    let done = percent(job, now);
    let steps: Vec<String> = (0..=done / 10)
        .map(|tens| bar((tens * 10).min(done)))
        .collect();
    log.push_str(&steps.join("\r"));
    if done % 10 != 0 {
        log.push('\r');
        log.push_str(&bar(done));
    }
    log
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_look_like_tqdm() {
        assert_eq!(bar(45), " 45%|████      | 9/20");
        assert_eq!(bar(0), "  0%|          | 0/20");
    }
}
