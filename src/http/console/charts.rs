//! Server-rendered SVG line charts for the overview (no JavaScript, no CDN): one polyline
//! per queue over the last hour, minute by minute, from `genq.queue_history`.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use maud::{html, Markup};

const W: f64 = 600.0;
const H: f64 = 180.0;
const PAD_L: f64 = 40.0;
const PAD_B: f64 = 18.0;
const PALETTE: &[&str] = &[
    "#2456c9", "#b3261e", "#1f7a3a", "#a85d00", "#6a3fb5", "#00838f", "#ad1457", "#546e7a",
];

/// Points of one series: minutes ago (0 = this minute) and a value.
pub type Series = Vec<(i64, f64)>;

/// A chart of `series` (name → points) over the last `minutes` minutes.
pub fn line_chart(title: &str, series: &BTreeMap<String, Series>, minutes: i64) -> Markup {
    let max = series
        .values()
        .flat_map(|s| s.iter().map(|(_, v)| *v))
        .fold(0.0_f64, f64::max)
        .max(1.0);
    let x = |ago: i64| PAD_L + (W - PAD_L) * (1.0 - ago as f64 / minutes.max(1) as f64);
    let y = |v: f64| (H - PAD_B) * (1.0 - v / max) + 2.0;
    html! {
        figure {
            figcaption { strong { (title) } }
            svg.chart viewBox=(format!("0 0 {W} {H}")) role="img" aria-label=(title) {
                line x1=(PAD_L) y1=(H - PAD_B + 2.0) x2=(W) y2=(H - PAD_B + 2.0) stroke="#dde1e7" {}
                line x1=(PAD_L) y1="2" x2=(PAD_L) y2=(H - PAD_B + 2.0) stroke="#dde1e7" {}
                text x="2" y="10" { (format_value(max)) }
                text x="2" y=(H - PAD_B + 2.0) { "0" }
                text x=(PAD_L) y=(H - 4.0) { "-" (minutes) "m" }
                text x=(W - 24.0) y=(H - 4.0) { "now" }
                @for (i, (_, points)) in series.iter().enumerate() {
                    @let color = PALETTE[i % PALETTE.len()];
                    @if points.len() == 1 {
                        circle cx=(x(points[0].0)) cy=(y(points[0].1)) r="2.5" fill=(color) {}
                    } @else {
                        polyline fill="none" stroke=(color) stroke-width="1.5"
                            points=(points.iter().map(|(ago, v)| format!("{:.1},{:.1}", x(*ago), y(*v))).collect::<Vec<_>>().join(" ")) {}
                    }
                }
            }
            div.legend {
                @for (i, (name, points)) in series.iter().enumerate() {
                    span {
                        svg width="10" height="10" { rect width="10" height="10" fill=(PALETTE[i % PALETTE.len()]) {} }
                        " "
                        (name) " " span.muted { (points.last().map_or(0.0, |p| p.1)) }
                    }
                }
                @if series.is_empty() {
                    span.muted { "no samples yet (the sampler writes one point per queue per minute)" }
                }
            }
        }
    }
}

fn format_value(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else {
        format!("{v:.0}")
    }
}

/// Minutes between `t` and `now` (0 for this minute).
pub fn minutes_ago(t: DateTime<Utc>, now: DateTime<Utc>) -> i64 {
    (now - t).num_minutes().max(0)
}
