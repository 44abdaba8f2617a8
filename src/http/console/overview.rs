//! The Overview page (queues with their counts, pause state and cap; charts of the last
//! hour; live daemons) and the queue actions: pause, resume, drain (with a progress page
//! that refreshes itself) and cap. Actions call `queue_control`, the path the CLI and the
//! admin API use.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Form};
use chrono::Utc;
use maud::html;
use serde::Deserialize;

use super::charts::{line_chart, minutes_ago, Series};
use super::layout::{age, badge, maybe_time, page, time, Ctx};
use super::{html, opt, record, see_other, PageError, PageResult};
use crate::console::sessions::Session;
use crate::http::HttpState;
use crate::maintenance::fleet;
use crate::queue::queue_control::{self, Target};

/// `?notice=` after an action.
#[derive(Deserialize, Default)]
pub(crate) struct Notice {
    notice: Option<String>,
}

const CHART_MINUTES: i64 = 60;

/// A daemon silent for longer than this is shown as silent (it may be gone).
const ALIVE_SECS: f64 = 60.0;

pub(crate) async fn show(
    State(s): State<HttpState>,
    Extension(session): Extension<Session>,
    Query(q): Query<Notice>,
) -> PageResult {
    let pool = s.daemon.pool();
    let queues = queue_control::list(pool).await?;
    let daemons = fleet::daemons(pool).await?;
    let history = fleet::history(pool, CHART_MINUTES as i32).await?;
    let now = Utc::now();
    let mut depth: BTreeMap<String, Series> = BTreeMap::new();
    let mut throughput: BTreeMap<String, Series> = BTreeMap::new();
    let mut discarded_hour: BTreeMap<String, i64> = BTreeMap::new();
    for h in &history {
        let ago = minutes_ago(h.minute, now);
        depth
            .entry(h.queue.clone())
            .or_default()
            .push((ago, (h.available + h.retryable) as f64));
        throughput
            .entry(h.queue.clone())
            .or_default()
            .push((ago, h.completed as f64));
        *discarded_hour.entry(h.queue.clone()).or_default() += h.discarded;
    }
    let ctx = Ctx {
        session: &session,
        notice: q.notice.as_deref(),
    };
    let body = html! {
        div.card {
            table {
                thead { tr {
                    th { "Queue" } th { "State" } th.num { "Available" } th.num { "Scheduled" }
                    th.num { "Running" } th.num { "Retryable" } th.num { "Discarded (1h)" }
                    th.num { "Oldest waiting" } th.num { "Cap" }
                    @if ctx.can_act() { th { "Actions" } }
                } }
                tbody {
                    @for q in &queues {
                        @let url = format!("/console/queues/{}", q.name);
                        tr id=(format!("queue-{}", q.name)) {
                            td { a href=(format!("/console/jobs?queue={}", q.name)) { (q.name) } }
                            td {
                                @if q.paused {
                                    (badge("paused"))
                                    @if let Some(r) = &q.pause_reason { " " span.muted { (r) } }
                                    @if let Some(at) = q.paused_at { br; span.muted { "since " (time(at)) } }
                                } @else { (badge("active")) }
                            }
                            td.num { (q.available) }
                            td.num { (q.scheduled) }
                            td.num { (q.running) }
                            td.num { (q.retryable) }
                            td.num { a href=(format!("/console/jobs?queue={}&state=discarded", q.name)) { (discarded_hour.get(&q.name).copied().unwrap_or(0).max(q.discarded_last_minute)) } }
                            td.num { (q.oldest_available_age_secs.map_or("–".to_string(), age)) }
                            td.num { (q.max_running.map_or("none".to_string(), |m| m.to_string())) }
                            @if ctx.can_act() {
                                td {
                                    @if q.paused {
                                        (ctx.button(&format!("{url}/resume"), "Resume", &[], false))
                                    } @else {
                                        form.inline method="post" action=(format!("{url}/pause")) {
                                            (ctx.csrf())
                                            input type="text" name="reason" placeholder="reason" aria-label="pause reason";
                                            button type="submit" { "Pause" }
                                        }
                                    }
                                    form.inline method="post" action=(format!("{url}/drain")) {
                                        (ctx.csrf())
                                        button.danger type="submit" { "Drain" }
                                    }
                                    form.inline method="post" action=(format!("{url}/cap")) {
                                        (ctx.csrf())
                                        input type="number" min="0" name="max_running" placeholder="cap" aria-label="cap" value=[q.max_running];
                                        button.plain type="submit" { "Set cap" }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Last hour" }
        div.card.charts {
            (line_chart("Depth (available + retryable)", &depth, CHART_MINUTES))
            (line_chart("Throughput (completed per minute)", &throughput, CHART_MINUTES))
        }
        h2 { "Daemons" }
        div.card {
            table {
                thead { tr { th { "Worker" } th { "State" } th { "Version" } th { "Queues" } th.num { "Running" } th { "Last heartbeat" } th { "Started" } } }
                tbody {
                    @for d in &daemons {
                        tr {
                            td { (d.worker_id) }
                            td {
                                @if d.silent_secs > ALIVE_SECS { (badge("silent")) }
                                @else if d.draining { (badge("draining")) }
                                @else { (badge("alive")) }
                            }
                            td { (d.version) }
                            td { (d.queues.join(", ")) }
                            td.num { (d.running) }
                            td { (time(d.heartbeat_at)) " " span.muted { "(" (age(d.silent_secs)) " ago)" } }
                            td { (maybe_time(Some(d.started_at))) }
                        }
                    }
                    @if daemons.is_empty() { tr { td colspan="7" .muted { "no daemon has reported in the last hour" } } }
                }
            }
        }
        p.muted { a href="/console/" { "Refresh" } " · counts are live; charts come from the per-minute history." }
    };
    Ok(html(page(&ctx, "overview", "Overview", None, body)))
}

fn checked_queue(queue: &str) -> Result<(), PageError> {
    let ok = !queue.is_empty()
        && queue.len() <= 128
        && queue
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_.:-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(PageError(
            StatusCode::BAD_REQUEST,
            "a queue name is 1 to 128 letters, digits, '_', '.', ':' or '-'".into(),
        ))
    }
}

#[derive(Deserialize)]
pub(crate) struct ReasonForm {
    reason: Option<String>,
}

impl ReasonForm {
    /// The reason, if any, at most 500 characters.
    fn reason(&self) -> Result<Option<String>, PageError> {
        let reason = opt(&self.reason);
        if reason.as_ref().is_some_and(|r| r.chars().count() > 500) {
            return Err(PageError(
                StatusCode::BAD_REQUEST,
                "a reason is at most 500 characters".into(),
            ));
        }
        Ok(reason)
    }
}

pub(crate) async fn pause(
    State(s): State<HttpState>,
    Extension(session): Extension<Session>,
    Path(queue): Path<String>,
    Form(f): Form<ReasonForm>,
) -> PageResult {
    checked_queue(&queue)?;
    let reason = f.reason()?;
    let paused =
        queue_control::pause(s.daemon.pool(), Target::One(&queue), reason.as_deref()).await?;
    record(
        &s,
        &session,
        "queue.pause",
        Some(&queue),
        paused.len() as i64,
        serde_json::json!({ "reason": reason }),
    )
    .await?;
    Ok(see_other("/console/", &format!("queue {queue} paused")))
}

pub(crate) async fn resume(
    State(s): State<HttpState>,
    Extension(session): Extension<Session>,
    Path(queue): Path<String>,
) -> PageResult {
    checked_queue(&queue)?;
    let resumed = queue_control::resume(s.daemon.pool(), Target::One(&queue)).await?;
    record(
        &s,
        &session,
        "queue.resume",
        Some(&queue),
        resumed.len() as i64,
        serde_json::json!({}),
    )
    .await?;
    let notice = if resumed.is_empty() {
        format!("queue {queue} was not paused")
    } else {
        format!("queue {queue} resumed")
    };
    Ok(see_other("/console/", &notice))
}

/// Pauses the queue (the drain's first step, through `queue_control::drain` with no
/// wait) and sends the operator to the progress page, which polls until nothing runs.
pub(crate) async fn drain(
    State(s): State<HttpState>,
    Extension(session): Extension<Session>,
    Path(queue): Path<String>,
    Form(f): Form<ReasonForm>,
) -> PageResult {
    checked_queue(&queue)?;
    let reason = f.reason()?;
    let result = queue_control::drain(
        s.daemon.pool(),
        &queue,
        reason.as_deref(),
        Duration::ZERO,
        Duration::ZERO,
        |_| {},
    )
    .await?;
    record(
        &s,
        &session,
        "queue.drain",
        Some(&queue),
        result.running,
        serde_json::json!({ "reason": reason, "running_at_start": result.running }),
    )
    .await?;
    Ok(see_other(
        &format!("/console/queues/{queue}/drain"),
        &format!("queue {queue} paused for draining"),
    ))
}

pub(crate) async fn drain_progress(
    State(s): State<HttpState>,
    Extension(session): Extension<Session>,
    Path(queue): Path<String>,
    Query(q): Query<Notice>,
) -> PageResult {
    checked_queue(&queue)?;
    let running = queue_control::running(s.daemon.pool(), &queue).await?;
    let ctx = Ctx {
        session: &session,
        notice: q.notice.as_deref(),
    };
    let done = running == 0;
    let body = html! {
        div.card {
            @if done {
                p { strong { "Drained." } " No job of queue " (queue) " is running. The queue stays paused until resumed." }
                (ctx.button(&format!("/console/queues/{queue}/resume"), "Resume", &[], false))
            } @else {
                p { strong #remaining { (running) } " job(s) of queue " (queue) " still running. This page refreshes every 2 seconds." }
            }
            p { a href="/console/" { "Back to the overview" } }
        }
    };
    let title = format!("Draining {queue}");
    Ok(html(page(
        &ctx,
        "overview",
        &title,
        (!done).then_some(2),
        body,
    )))
}

#[derive(Deserialize)]
pub(crate) struct CapForm {
    max_running: Option<String>,
}

pub(crate) async fn cap(
    State(s): State<HttpState>,
    Extension(session): Extension<Session>,
    Path(queue): Path<String>,
    Form(f): Form<CapForm>,
) -> PageResult {
    checked_queue(&queue)?;
    let cap = match opt(&f.max_running) {
        None => None,
        Some(v) => match v.parse::<i32>() {
            Ok(n) if n >= 0 => Some(n),
            _ => {
                return Err(PageError(
                    StatusCode::BAD_REQUEST,
                    format!("a cap is a whole number, 0 or more (got {v:?}); leave it empty to remove the cap"),
                ))
            }
        },
    };
    queue_control::set_max_running(s.daemon.pool(), &queue, cap).await?;
    record(
        &s,
        &session,
        "queue.cap",
        Some(&queue),
        1,
        serde_json::json!({ "max_running": cap }),
    )
    .await?;
    let notice = match cap {
        Some(n) => format!("queue {queue} capped at {n} running"),
        None => format!("queue {queue} cap removed"),
    };
    Ok(see_other("/console/", &notice))
}
