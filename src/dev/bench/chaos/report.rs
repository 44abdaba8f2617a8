//! The chaos report as printed by `genq bench --scenario chaos`.

use std::fmt::Write as _;

use super::ChaosReport;
use crate::providers::ProviderKind;

/// The report as text, one fact a line.
pub fn render(r: &ChaosReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "faults:               {} SIGKILLs, {} Postgres crash restart(s), {} daemon exits by themselves",
        r.kills, r.pg_restarts, r.exited
    );
    let _ = match r.recovery {
        Some(d) => writeln!(
            out,
            "time to full recovery: {:.1} s after the faults stopped (every generation and load job final)",
            d.as_secs_f64()
        ),
        None => writeln!(out, "time to full recovery: NOT RECOVERED within the timeout"),
    };
    let _ = writeln!(out, "total wall time:      {:.1} s", r.total.as_secs_f64());
    let states: Vec<String> = r
        .findings
        .generations
        .iter()
        .map(|(s, n)| format!("{s} {n}"))
        .collect();
    let _ = writeln!(out, "generations:          {}", states.join(", "));
    let _ = writeln!(
        out,
        "ambiguous submits:    {} adopted from the provider's callback, {} failed after the grace (hold released)",
        r.findings.adopted, r.findings.ambiguous_failed
    );
    let created: Vec<String> = ProviderKind::ALL
        .iter()
        .map(|k| format!("{} {}", k.as_str(), r.fake.created(*k)))
        .collect();
    let _ = writeln!(out, "provider jobs paid:   {}", created.join(", "));
    let _ = writeln!(
        out,
        "webhooks:             {} delivered, {} failed attempts, {} retries, {} abandoned",
        r.fake.webhooks_sent,
        r.fake.webhooks_failed,
        r.fake.webhook_retries,
        r.fake.webhooks_abandoned
    );
    for (kind_state, n) in &r.findings.jobs {
        let _ = writeln!(out, "jobs:                 {kind_state}: {n}");
    }
    if r.findings.violations.is_empty() {
        let _ = writeln!(
            out,
            "invariants:           clean (all final, no submit twice, holds settled, check_ledger, check_retention)"
        );
    } else {
        for v in &r.findings.violations {
            let _ = writeln!(out, "VIOLATION:            {v}");
        }
    }
    out
}
