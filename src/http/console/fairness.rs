//! The Fairness page (read-only): fair queues and their default key limit, limit groups
//! and their use, and the keys with waiting work, marking those held back by their limit.
//! The queries are in `crate::console::fairness`; why fairness works this way:
//! docs/fairness.md.

use axum::extract::{Query, State};
use axum::Extension;
use maud::html;
use serde::Deserialize;

use super::layout::{badge, page, Ctx};
use super::{html, PageResult};
use crate::console::fairness;
use crate::console::sessions::Session;
use crate::http::HttpState;

/// Keys listed at most.
const KEYS: i64 = 50;
/// Queues and groups listed at most.
const ROWS: i64 = 200;

#[derive(Deserialize, Default)]
pub(crate) struct FairQuery {
    notice: Option<String>,
}

fn limit(v: Option<i32>) -> String {
    v.map_or_else(|| "none".to_string(), |n| n.to_string())
}

pub(crate) async fn show(
    State(s): State<HttpState>,
    Extension(session): Extension<Session>,
    Query(q): Query<FairQuery>,
) -> PageResult {
    let pool = s.daemon.pool();
    let queues = fairness::queues(pool, ROWS).await?;
    let groups = fairness::groups(pool, ROWS).await?;
    let keys = fairness::keys(pool, KEYS).await?;
    let ctx = Ctx {
        session: &session,
        notice: q.notice.as_deref(),
    };
    let body = html! {
        h2 { "Queues" }
        div.card { table {
            thead { tr { th { "Queue" } th { "Fair" } th.num { "Key limit (default)" } th.num { "Keys waiting" } th.num { "Slots in use" } } }
            tbody {
                @for r in &queues { tr id=(format!("fair-queue-{}", r.name)) {
                    td { (r.name) }
                    td { @if r.fair { "on" } @else { "off" } }
                    td.num { (limit(r.key_max_active)) }
                    td.num { (r.keys_waiting) } td.num { (r.slots) }
                } }
                @if queues.is_empty() { tr { td colspan="5" .muted { "no queue yet" } } }
            }
        } }
        h2 { "Limit groups" }
        div.card { table {
            thead { tr { th { "Group" } th.num { "Max active" } th.num { "Active" } } }
            tbody {
                @for g in &groups { tr id=(format!("group-{}", g.name)) {
                    td { (g.name) } td.num { (limit(g.max_active)) } td.num { (g.active) }
                } }
                @if groups.is_empty() { tr { td colspan="3" .muted { "no limit group configured" } } }
            }
        } }
        h2 { "Keys with waiting work (first " (KEYS) ", least served first)" }
        div.card { table {
            thead { tr { th { "Queue" } th { "Key" } th.num { "Weight" } th.num { "Max active" } th.num { "Slots in use" } th.num { "Due jobs" } th.num { "Virtual time" } th { "State" } } }
            tbody {
                @for k in &keys { tr id=(format!("key-{}-{}", k.queue, k.key)) {
                    td { (k.queue) } td { (k.key) } td.num { (k.weight) }
                    td.num { @if k.max_active.is_some() { (limit(k.max_active)) } @else { (limit(k.key_limit)) " (default)" } }
                    td.num { (k.slots) } td.num { (k.backlog) } td.num { (format!("{:.2}", k.vtime)) }
                    td { @if k.at_limit { (badge("held")) " at limit" } @else if k.waiting { (badge("available")) " waiting" } @else { (badge("scheduled")) " not in the walk" } }
                } }
                @if keys.is_empty() { tr { td colspan="8" .muted { "no key has waiting work" } } }
            }
        } }
        p.muted { "Read-only: queue settings come from config [queues.NAME], weights and key limits from genq.set_fair_key (docs/fairness.md). Due jobs are counted up to 10,000 per key." }
    };
    Ok(html(page(&ctx, "fairness", "Fairness", None, body)))
}
