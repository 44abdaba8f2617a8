//! What a provider tells while it works (queue position, percent, a log line), reduced to a
//! small fixed shape before it reaches the database: `genq.generations.progress` is shown
//! to users and streamed to their browsers, and a provider's log is the model's stdout, as
//! long and as hostile as the model makes it. So no log is ever kept: only the last percent
//! found in it and its last line, cut to [`MAX_MESSAGE_CHARS`].

use serde::{Deserialize, Serialize};

/// Longest `message` kept, in characters.
pub const MAX_MESSAGE_CHARS: usize = 200;

/// Where the request is at the provider, as progress names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// Waiting for capacity (fal `IN_QUEUE`, BytePlus `queued`).
    Queued,
    /// Booting the model (Replicate `starting`).
    Starting,
    /// Rendering (fal `IN_PROGRESS`, Replicate `processing`, BytePlus `running`).
    Running,
}

/// One progress report, as stored (the database adds `updated_at`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Where it is.
    pub phase: Phase,
    /// fal's position in its queue (0: next), while queued.
    pub queue_position: Option<u32>,
    /// 0 to 100, when the model printed a percentage.
    pub percent: Option<f64>,
    /// The model's last log line, cleaned and cut to [`MAX_MESSAGE_CHARS`].
    pub message: Option<String>,
}

impl Progress {
    /// A report of `phase` and nothing else.
    pub fn phase(phase: Phase) -> Self {
        Self {
            phase,
            queue_position: None,
            percent: None,
            message: None,
        }
    }

    /// With a queue position (negative or absurd values are dropped).
    pub fn with_queue_position(mut self, position: Option<i64>) -> Self {
        self.queue_position = position.and_then(|p| u32::try_from(p).ok());
        self
    }

    /// With the last percent and last line of `lines` (newest last), looked at from the end
    /// so only the tail of a long log is read.
    pub fn with_log_lines<'a, I>(mut self, lines: I) -> Self
    where
        I: DoubleEndedIterator<Item = &'a str>,
    {
        let mut last_line = None;
        for line in lines.rev() {
            if last_line.is_none() && !line.trim().is_empty() {
                last_line = Some(line);
            }
            if let Some(p) = last_percent(line) {
                self.percent = Some(p);
                break;
            }
        }
        self.message = last_line.and_then(clean_message);
        self
    }

    /// With a log given as one text (Replicate's `logs`): lines end at `\n` or `\r` (tqdm
    /// redraws its bar with `\r`).
    pub fn with_log_text(self, log: &str) -> Self {
        self.with_log_lines(log.split(['\n', '\r']))
    }

    /// The JSON stored in `progress` (without `updated_at`).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "phase": self.phase,
            "queue_position": self.queue_position,
            "percent": self.percent,
            "message": self.message,
        })
    }
}

/// The last `NN%` (or `NN.N%`) of `line` within 0..=100, e.g. tqdm's ` 45%|████▌ | 9/20`.
pub fn last_percent(line: &str) -> Option<f64> {
    let bytes = line.as_bytes();
    let mut end = bytes.len();
    while let Some(pos) = line[..end].rfind('%') {
        end = pos;
        let start = bytes[..pos]
            .iter()
            .rposition(|b| !(b.is_ascii_digit() || *b == b'.'))
            .map_or(0, |i| i + 1);
        // At most "100.00": a long run of digits is not a percentage.
        if start == pos || pos - start > 6 {
            continue;
        }
        // "v1.5%" or "x45%" are not percentages: the number must stand alone.
        if start > 0 && bytes[start - 1].is_ascii_alphabetic() {
            continue;
        }
        if let Ok(value) = line[start..pos].parse::<f64>() {
            if (0.0..=100.0).contains(&value) {
                return Some(value);
            }
        }
    }
    None
}

/// A log line fit to show: control characters dropped, whitespace trimmed, at most
/// [`MAX_MESSAGE_CHARS`] characters; `None` when nothing is left.
pub fn clean_message(line: &str) -> Option<String> {
    let cleaned: String = line
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_MESSAGE_CHARS * 2)
        .collect();
    let trimmed = cleaned.trim();
    if trimmed.is_empty() {
        return None;
    }
    Some(trimmed.chars().take(MAX_MESSAGE_CHARS).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percents_are_read_from_tqdm_lines() {
        assert_eq!(
            last_percent(" 45%|████▌     | 9/20 [00:04<00:05]"),
            Some(45.0)
        );
        assert_eq!(last_percent("step 3: 12.5% done, then 13%"), Some(13.0));
        assert_eq!(last_percent("100%|██████████| 20/20"), Some(100.0));
        assert_eq!(last_percent("no percent here"), None);
        assert_eq!(last_percent("250% boost"), None);
        assert_eq!(last_percent("v45% of x"), None);
        assert_eq!(last_percent("%"), None);
        assert_eq!(last_percent("12345678901234567890%"), None);
    }

    #[test]
    fn the_last_percent_of_a_log_wins_and_the_last_line_is_the_message() {
        let log = "Loading model\n 10%|█ | 2/20\r 45%|████▌ | 9/20\nsaving frames\n";
        let p = Progress::phase(Phase::Running).with_log_text(log);
        assert_eq!(p.percent, Some(45.0));
        assert_eq!(p.message.as_deref(), Some("saving frames"));
    }

    #[test]
    fn messages_are_cleaned_and_capped() {
        let long = format!("\u{1b}[31m{}\u{7}", "é".repeat(10_000));
        let message = clean_message(&long).unwrap();
        assert_eq!(message.chars().count(), MAX_MESSAGE_CHARS);
        assert!(!message.chars().any(char::is_control));
        assert_eq!(clean_message(" \t\u{0} "), None);
    }

    #[test]
    fn a_huge_log_reduces_to_a_small_report() {
        let log = format!("{}\n 73%|███████▎  |", "x".repeat(10 << 20));
        let p = Progress::phase(Phase::Running).with_log_text(&log);
        assert_eq!(p.percent, Some(73.0));
        assert!(p.to_json().to_string().len() < 400);
    }

    #[test]
    fn queue_positions_must_be_plausible() {
        let p = Progress::phase(Phase::Queued).with_queue_position(Some(3));
        assert_eq!(p.queue_position, Some(3));
        let p = Progress::phase(Phase::Queued).with_queue_position(Some(-1));
        assert_eq!(p.queue_position, None);
        assert_eq!(
            p.to_json(),
            serde_json::json!({"phase": "queued", "queue_position": null, "percent": null, "message": null})
        );
    }
}
