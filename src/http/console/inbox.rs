//! The Webhooks page: the inbox of verified callbacks (all, orphans, unprocessed), newest
//! first, and redrive of one generation callback through `webhooks::inbox::redrive`.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Extension;
use maud::html;
use serde::Deserialize;

use super::layout::{badge, maybe_time, page, time, Ctx};
use super::{html, opt, record, see_other, PageError, PageResult};
use crate::console::sessions::Session;
use crate::console::webhooks::{self as events, SCAN_WINDOW};
use crate::http::HttpState;
use crate::webhooks::inbox::{self, RedriveError};

const PAGE_SIZE: i64 = 100;
const VIEWS: &[&str] = &["all", "orphans", "unprocessed"];

#[derive(Deserialize, Default)]
pub(crate) struct InboxQuery {
    show: Option<String>,
    before: Option<String>,
    notice: Option<String>,
}

pub(crate) async fn list(
    State(s): State<HttpState>,
    Extension(session): Extension<Session>,
    Query(q): Query<InboxQuery>,
) -> PageResult {
    let which = opt(&q.show).unwrap_or_else(|| "all".into());
    if !VIEWS.contains(&which.as_str()) {
        return Err(PageError(
            StatusCode::BAD_REQUEST,
            format!("`show` is one of {}", VIEWS.join(", ")),
        ));
    }
    let before = opt(&q.before)
        .map(|b| {
            b.parse::<i64>()
                .map_err(|_| PageError(StatusCode::BAD_REQUEST, "`before` is an event id".into()))
        })
        .transpose()?;
    let rows = events::page(s.daemon.pool(), &which, before, PAGE_SIZE).await?;
    let ctx = Ctx {
        session: &session,
        notice: q.notice.as_deref(),
    };
    let body = html! {
        p { @for v in VIEWS { a href=(format!("/console/webhooks?show={v}")) { @if *v == which { strong { (v) } } @else { (v) } } " " } }
        div.card { table {
            thead { tr { th.num { "Id" } th { "Provider" } th { "Received" } th { "Generation" } th { "Request id" } th { "State" } th { "Job" } th.num { "Body bytes" }
                @if ctx.can_act() { th { "Action" } } } }
            tbody {
                @for e in &rows { tr id=(format!("event-{}", e.id)) {
                    td.num { (e.id) } td { (e.provider) } td { (time(e.received_at)) }
                    td { @if let Some(g) = e.generation_id { a href=(format!("/console/generations/{g}")) { (g.to_string()[..8]) "…" } } }
                    td { (e.request_id.clone().unwrap_or_default()) }
                    td { @if e.orphan { (badge("orphan")) } @else if e.processed_at.is_some() { (badge("completed")) " " (maybe_time(e.processed_at)) } @else { (badge("available")) " unprocessed" } }
                    td { @if let Some(j) = e.job_id { a href=(format!("/console/jobs/{j}")) { (j) } } }
                    td.num { (e.body_bytes.unwrap_or(0)) }
                    @if ctx.can_act() { td { @if e.provider != "plisio" && e.generation_id.is_some() {
                        (ctx.button(&format!("/console/webhooks/{}/redrive", e.id), "Redrive", &[], false))
                    } } }
                } }
                @if rows.is_empty() { tr { td colspan="9" .muted { "no event in this window" } } }
            }
        } }
        @if let Some(last) = rows.last().map(|e| e.id).or(before.map(|b| (b - SCAN_WINDOW).max(1))) {
            @if last > 1 { div.pager { a href=(format!("/console/webhooks?show={which}&before={last}")) { "older »" } } }
        }
        p.muted { "Bodies are never shown (user data); each page scans at most " (SCAN_WINDOW) " ids." }
    };
    Ok(html(page(&ctx, "webhooks", "Webhooks", None, body)))
}

pub(crate) async fn redrive(
    State(s): State<HttpState>,
    Extension(session): Extension<Session>,
    Path(id): Path<i64>,
) -> PageResult {
    let job = match inbox::redrive(s.daemon.pool(), id).await {
        Ok(job) => job,
        Err(RedriveError::NotFound(_)) => {
            return Err(PageError(
                StatusCode::NOT_FOUND,
                format!("webhook event {id} not found"),
            ))
        }
        Err(e @ RedriveError::NotRedrivable(..)) => {
            return Err(PageError(StatusCode::CONFLICT, e.to_string()))
        }
        Err(RedriveError::Database(e)) => return Err(e.into()),
    };
    record(
        &s,
        &session,
        "webhook.redrive",
        Some(&id.to_string()),
        1,
        serde_json::json!({ "job_id": job }),
    )
    .await?;
    Ok(see_other(
        "/console/webhooks",
        &format!("event {id} redriven: reconcile job {job}"),
    ))
}
