//! The Jobs pages: a filtered list (queue, kind, state, text, time range) paged by id, a
//! job's detail (payload, attempts, error history, worker, lease, timing), retry and cancel
//! through `job_control` (the admin API's path), and bulk retry or cancel of a filter after
//! a confirmation page that shows how many jobs it will touch.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Form};
use chrono::{DateTime, NaiveDateTime, Utc};
use maud::{html, Markup};
use serde::Deserialize;

use super::layout::{badge, json, maybe_time, page, query, time, Ctx};
use super::{html, opt, record, see_other, PageError, PageResult};
use crate::console::jobs::{self as list, JobFilter, BULK_MAX, SCAN_WINDOW};
use crate::console::sessions::Session;
use crate::http::HttpState;
use crate::queue::job_control;
use crate::queue::JobState;

const PAGE_SIZE: i64 = 50;

const STATES: &[&str] = &[
    "available",
    "running",
    "retryable",
    "completed",
    "discarded",
    "cancelled",
];

/// The filter as the list's GET form (and the bulk forms' hidden fields) carry it.
#[derive(Deserialize, Default, Debug)]
pub(crate) struct FilterQuery {
    queue: Option<String>,
    kind: Option<String>,
    state: Option<String>,
    q: Option<String>,
    from: Option<String>,
    to: Option<String>,
    before: Option<String>,
    notice: Option<String>,
    action: Option<String>,
}

impl FilterQuery {
    fn filter(&self) -> Result<JobFilter, PageError> {
        let state = match opt(&self.state) {
            None => None,
            Some(s) => Some(parse_state(&s)?),
        };
        let text = opt(&self.q);
        if text.as_ref().is_some_and(|t| t.len() > 200) {
            return Err(bad("the search text is at most 200 characters"));
        }
        Ok(JobFilter {
            queue: opt(&self.queue),
            kind: opt(&self.kind),
            state,
            text,
            from: parse_time("from", &self.from)?,
            to: parse_time("to", &self.to)?,
        })
    }

    fn before(&self) -> Result<Option<i64>, PageError> {
        opt(&self.before)
            .map(|b| b.parse::<i64>().map_err(|_| bad("`before` is a job id")))
            .transpose()
    }

    /// The filter's own fields as query pairs (no paging, no notice).
    fn pairs(&self) -> Vec<(&'static str, Option<String>)> {
        vec![
            ("queue", opt(&self.queue)),
            ("kind", opt(&self.kind)),
            ("state", opt(&self.state)),
            ("q", opt(&self.q)),
            ("from", opt(&self.from)),
            ("to", opt(&self.to)),
        ]
    }
}

fn bad(message: &str) -> PageError {
    PageError(StatusCode::BAD_REQUEST, message.to_string())
}

fn parse_state(s: &str) -> Result<JobState, PageError> {
    serde_json::from_value(serde_json::Value::String(s.to_string())).map_err(|_| {
        bad(&format!(
            "unknown job state {s:?}: one of {}",
            STATES.join(", ")
        ))
    })
}

/// `2026-01-02T03:04` (what `datetime-local` inputs send, taken as UTC) or RFC 3339.
fn parse_time(name: &str, v: &Option<String>) -> Result<Option<DateTime<Utc>>, PageError> {
    let Some(v) = opt(v) else { return Ok(None) };
    if let Ok(t) = DateTime::parse_from_rfc3339(&v) {
        return Ok(Some(t.with_timezone(&Utc)));
    }
    for format in ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(&v, format) {
            return Ok(Some(t.and_utc()));
        }
    }
    Err(bad(&format!(
        "`{name}` is a time like 2026-01-02T03:04 (UTC), got {v:?}"
    )))
}

fn filter_form(f: &FilterQuery) -> Markup {
    let state = opt(&f.state).unwrap_or_default();
    html! {
        form.filters method="get" action="/console/jobs" {
            label { "Queue" input type="text" name="queue" value=[opt(&f.queue)]; }
            label { "Kind" input type="text" name="kind" value=[opt(&f.kind)]; }
            label { "State" select name="state" {
                option value="" { "any" }
                @for s in STATES { option value=(s) selected[state == *s] { (s) } }
            } }
            label { "Text in payload or errors" input type="text" name="q" value=[opt(&f.q)]; }
            label { "Created from (UTC)" input type="datetime-local" name="from" value=[opt(&f.from)]; }
            label { "to" input type="datetime-local" name="to" value=[opt(&f.to)]; }
            button type="submit" { "Filter" }
            a href="/console/jobs" { "clear" }
        }
    }
}

pub(crate) async fn list(
    State(s): State<HttpState>,
    Extension(session): Extension<Session>,
    Query(fq): Query<FilterQuery>,
) -> PageResult {
    let filter = fq.filter()?;
    let page_ = list::page(s.daemon.pool(), &filter, fq.before()?, PAGE_SIZE).await?;
    let ctx = Ctx {
        session: &session,
        notice: fq.notice.as_deref(),
    };
    let filtered = filter != JobFilter::default();
    let base = query(&fq.pairs());
    let body = html! {
        div.card { (filter_form(&fq)) }
        @if ctx.can_act() && filtered {
            p {
                a href=(format!("/console/jobs/bulk?{base}&action=retry")) { "Retry all matching…" } " · "
                a href=(format!("/console/jobs/bulk?{base}&action=cancel")) { "Cancel all matching…" }
            }
        }
        div.card {
            table {
                thead { tr { th.num { "Id" } th { "Queue" } th { "Kind" } th { "State" } th.num { "Attempt" } th { "Created" } th { "Run at / finished" } th { "Last error" } } }
                tbody {
                    @for j in &page_.jobs {
                        tr {
                            td.num { a href=(format!("/console/jobs/{}", j.id)) { (j.id) } }
                            td { (j.queue) }
                            td { (j.kind) }
                            td { (badge(j.state.as_str())) }
                            td.num { (j.attempt) "/" (j.max_attempts) }
                            td { (time(j.created_at)) }
                            td { @if j.finished_at.is_some() { (maybe_time(j.finished_at)) } @else { (time(j.run_at)) } }
                            td { @if let Some(e) = &j.last_error { span.muted { (e) } } }
                        }
                    }
                    @if page_.jobs.is_empty() { tr { td colspan="8" .muted { "no job matches in this window" } } }
                }
            }
            div.pager {
                @if fq.before.is_some() { a href=(format!("/console/jobs?{base}")) { "« newest" } }
                @if let Some(older) = page_.older {
                    a href=(format!("/console/jobs?{base}&before={older}")) { "older »" }
                }
            }
            p.muted { "Each page scans at most " (SCAN_WINDOW) " ids below its start; a sparse filter may show short pages: follow “older”." }
        }
    };
    Ok(html(page(&ctx, "jobs", "Jobs", None, body)))
}

pub(crate) async fn show(
    State(s): State<HttpState>,
    Extension(session): Extension<Session>,
    Path(id): Path<i64>,
    Query(fq): Query<FilterQuery>,
) -> PageResult {
    let job = job_control::show(s.daemon.pool(), id).await?;
    let ctx = Ctx {
        session: &session,
        notice: fq.notice.as_deref(),
    };
    let can_retry = !matches!(job.state, JobState::Running);
    let can_cancel = matches!(
        job.state,
        JobState::Available | JobState::Retryable | JobState::Running
    );
    let errors = job.errors.as_array().cloned().unwrap_or_default();
    let body = html! {
        div.card {
            dl.kv {
                dt { "State" } dd #state { (badge(job.state.as_str())) }
                dt { "Queue" } dd { (job.queue) }
                dt { "Kind" } dd { (job.kind) }
                dt { "Priority" } dd { (job.priority) }
                dt { "Attempt" } dd { (job.attempt) " of " (job.max_attempts) " (" (job.failures) " failed)" }
                dt { "Worker" } dd { (job.worker_id.clone().unwrap_or_else(|| "–".into())) }
                dt { "Lease until" } dd { (maybe_time(job.lease_until)) }
                dt { "Created" } dd { (time(job.created_at)) }
                dt { "Run at" } dd { (time(job.run_at)) }
                dt { "Last attempt" } dd { (maybe_time(job.attempted_at)) }
                dt { "Finished" } dd { (maybe_time(job.finished_at)) }
                dt { "Unique key" } dd { (job.unique_key.clone().unwrap_or_else(|| "–".into())) }
            }
            p {
                @if can_retry { (ctx.button(&format!("/console/jobs/{id}/retry"), "Retry", &[], false)) }
                @if can_cancel { (ctx.button(&format!("/console/jobs/{id}/cancel"), "Cancel", &[], true)) }
            }
        }
        h2 { "Payload" }
        div.card { (json(&job.payload)) }
        h2 { "Error history (" (errors.len()) ")" }
        div.card {
            table {
                thead { tr { th.num { "Attempt" } th { "At" } th { "Worker" } th { "Error" } } }
                tbody {
                    @for e in errors.iter().rev() {
                        tr {
                            td.num { (e.get("attempt").map(|v| v.to_string()).unwrap_or_default()) }
                            td { (e.get("at").and_then(|v| v.as_str()).unwrap_or("")) }
                            td { (e.get("worker").and_then(|v| v.as_str()).unwrap_or("")) }
                            td { pre { (e.get("error").and_then(|v| v.as_str()).unwrap_or("")) } }
                        }
                    }
                }
            }
        }
    };
    Ok(html(page(&ctx, "jobs", &format!("Job {id}"), None, body)))
}

pub(crate) async fn retry(
    State(s): State<HttpState>,
    Extension(session): Extension<Session>,
    Path(id): Path<i64>,
) -> PageResult {
    let row = job_control::retry(s.daemon.pool(), id).await?;
    record(
        &s,
        &session,
        "job.retry",
        Some(&id.to_string()),
        1,
        serde_json::json!({ "queue": row.queue, "kind": row.kind }),
    )
    .await?;
    Ok(see_other(
        &format!("/console/jobs/{id}"),
        &format!("job {id} retried"),
    ))
}

pub(crate) async fn cancel(
    State(s): State<HttpState>,
    Extension(session): Extension<Session>,
    Path(id): Path<i64>,
) -> PageResult {
    let (row, from) = job_control::cancel(s.daemon.pool(), id).await?;
    record(
        &s,
        &session,
        "job.cancel",
        Some(&id.to_string()),
        1,
        serde_json::json!({ "queue": row.queue, "kind": row.kind, "from": from.as_str() }),
    )
    .await?;
    Ok(see_other(
        &format!("/console/jobs/{id}"),
        &format!("job {id} cancelled (was {from})"),
    ))
}

fn bulk_action(fq: &FilterQuery) -> Result<&'static str, PageError> {
    match opt(&fq.action).as_deref() {
        Some("retry") => Ok("retry"),
        Some("cancel") => Ok("cancel"),
        _ => Err(bad("a bulk action is `retry` or `cancel`")),
    }
}

fn require_filter(filter: &JobFilter) -> Result<(), PageError> {
    if *filter == JobFilter::default() {
        return Err(bad(
            "a bulk action needs a filter (queue, kind, state, text or time)",
        ));
    }
    Ok(())
}

pub(crate) async fn bulk_confirm(
    State(s): State<HttpState>,
    Extension(session): Extension<Session>,
    Query(fq): Query<FilterQuery>,
) -> PageResult {
    let action = bulk_action(&fq)?;
    let filter = fq.filter()?;
    require_filter(&filter)?;
    let ids = list::bulk_ids(s.daemon.pool(), &filter).await?;
    let ctx = Ctx {
        session: &session,
        notice: None,
    };
    let mut fields: Vec<(&str, String)> = fq
        .pairs()
        .into_iter()
        .filter_map(|(k, v)| v.map(|v| (k, v)))
        .collect();
    fields.push(("action", action.to_string()));
    fields.push(("expected", ids.len().to_string()));
    let field_refs: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let body = html! {
        div.card {
            p { strong #match-count { (ids.len()) } " job(s) match"
                @if ids.len() as i64 == BULK_MAX { " (at least: one action touches at most " (BULK_MAX) ", the newest)" }
                "." }
            p.muted { "Jobs whose state does not allow the action (e.g. retrying a running job) are skipped and counted." }
            @if ids.is_empty() { p { "Nothing to do." } }
            @else { (ctx.button("/console/jobs/bulk", &format!("{} {} job(s)", if action == "retry" { "Retry" } else { "Cancel" }, ids.len()), &field_refs, true)) }
            p { a href=(format!("/console/jobs?{}", query(&fq.pairs()))) { "Back to the list" } }
        }
    };
    Ok(html(page(
        &ctx,
        "jobs",
        &format!("Confirm bulk {action}"),
        None,
        body,
    )))
}

pub(crate) async fn bulk(
    State(s): State<HttpState>,
    Extension(session): Extension<Session>,
    Form(fq): Form<FilterQuery>,
) -> PageResult {
    let action = bulk_action(&fq)?;
    let filter = fq.filter()?;
    require_filter(&filter)?;
    let pool = s.daemon.pool();
    let ids = list::bulk_ids(pool, &filter).await?;
    let (mut done, mut skipped) = (0_i64, 0_i64);
    for id in &ids {
        let outcome = if action == "retry" {
            job_control::retry(pool, *id).await.map(|_| ())
        } else {
            job_control::cancel(pool, *id).await.map(|_| ())
        };
        match outcome {
            Ok(()) => done += 1,
            Err(job_control::ControlError::Database(e)) => return Err(e.into()),
            Err(_) => skipped += 1,
        }
    }
    let pairs = fq.pairs();
    let detail: serde_json::Map<String, serde_json::Value> = pairs
        .iter()
        .filter_map(|(k, v)| {
            v.clone()
                .map(|v| (k.to_string(), serde_json::Value::String(v)))
        })
        .collect();
    record(
        &s,
        &session,
        &format!("jobs.bulk_{action}"),
        Some(&query(&pairs)),
        done,
        serde_json::json!({ "filter": detail, "matched": ids.len(), "skipped": skipped }),
    )
    .await?;
    Ok(see_other(
        &format!("/console/jobs?{}", query(&pairs)),
        &format!("{action}: {done} job(s) done, {skipped} skipped"),
    ))
}
