//! The Generations pages: a list by user, state, provider and model (no prompts: user data
//! only on the detail page), and one generation's detail with its provider request id,
//! input (or "scrubbed"), outputs, ledger rows and webhook events. Cancel goes through
//! `credits::cancel_generation`, the path the backend's `genq.cancel_generation` takes.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::Extension;
use chrono::{DateTime, Utc};
use maud::html;
use serde::Deserialize;
use uuid::Uuid;

use super::layout::{badge, json, maybe_time, page, query, time, Ctx};
use super::{html, opt, record, see_other, PageError, PageResult};
use crate::console::generations::{self as list, Cursor, GenerationFilter};
use crate::console::sessions::Session;
use crate::credits::{self, CreditError};
use crate::generation::{self, GenerationState};
use crate::http::HttpState;

const PAGE_SIZE: i64 = 50;
const STATES: &[&str] = &[
    "queued",
    "submitting",
    "submitted",
    "succeeded",
    "failed",
    "cancelled",
];

#[derive(Deserialize, Default)]
pub(crate) struct GenQuery {
    user: Option<String>,
    state: Option<String>,
    provider: Option<String>,
    model: Option<String>,
    before: Option<String>,
    notice: Option<String>,
}

fn bad(message: String) -> PageError {
    PageError(StatusCode::BAD_REQUEST, message)
}

impl GenQuery {
    fn filter(&self) -> Result<GenerationFilter, PageError> {
        let state = match opt(&self.state) {
            None => None,
            Some(s) => Some(
                serde_json::from_value::<GenerationState>(serde_json::Value::String(s.clone()))
                    .map_err(|_| {
                        bad(format!(
                            "unknown generation state {s:?}: one of {}",
                            STATES.join(", ")
                        ))
                    })?,
            ),
        };
        Ok(GenerationFilter {
            user: opt(&self.user),
            state,
            provider: opt(&self.provider),
            model: opt(&self.model),
        })
    }

    /// `before` is `<rfc3339>_<uuid>`, the last row of the previous page.
    fn before(&self) -> Result<Option<Cursor>, PageError> {
        let Some(b) = opt(&self.before) else {
            return Ok(None);
        };
        let parsed = b.rsplit_once('_').and_then(|(t, id)| {
            Some((
                DateTime::parse_from_rfc3339(t).ok()?.with_timezone(&Utc),
                Uuid::parse_str(id).ok()?,
            ))
        });
        parsed
            .map(Some)
            .ok_or_else(|| bad(format!("`before` is not a page cursor: {b:?}")))
    }

    fn pairs(&self) -> Vec<(&'static str, Option<String>)> {
        vec![
            ("user", opt(&self.user)),
            ("state", opt(&self.state)),
            ("provider", opt(&self.provider)),
            ("model", opt(&self.model)),
        ]
    }
}

pub(crate) async fn list(
    State(s): State<HttpState>,
    Extension(session): Extension<Session>,
    Query(gq): Query<GenQuery>,
) -> PageResult {
    let filter = gq.filter()?;
    let rows = list::page(s.daemon.pool(), &filter, gq.before()?, PAGE_SIZE).await?;
    let ctx = Ctx {
        session: &session,
        notice: gq.notice.as_deref(),
    };
    let base = query(&gq.pairs());
    let state = opt(&gq.state).unwrap_or_default();
    let body = html! {
        div.card {
            form.filters method="get" action="/console/generations" {
                label { "User" input type="text" name="user" value=[opt(&gq.user)]; }
                label { "State" select name="state" {
                    option value="" { "any" }
                    @for st in STATES { option value=(st) selected[state == *st] { (st) } }
                } }
                label { "Provider" input type="text" name="provider" value=[opt(&gq.provider)]; }
                label { "Model" input type="text" name="model" value=[opt(&gq.model)]; }
                button type="submit" { "Filter" }
                a href="/console/generations" { "clear" }
            }
        }
        div.card {
            table {
                thead { tr { th { "Id" } th { "User" } th { "Provider" } th { "Model" } th { "State" } th.num { "Cost" } th { "Created" } th { "Finished" } } }
                tbody {
                    @for g in &rows {
                        tr {
                            td { a href=(format!("/console/generations/{}", g.id)) { (g.id.to_string()[..8]) "…" } }
                            td { a href=(format!("/console/generations?user={}", g.user_id)) { (g.user_id) } }
                            td { (g.provider) }
                            td { (g.model) }
                            td { (badge(g.state.as_str())) @if g.scrubbed { " " span.muted { "scrubbed" } } }
                            td.num { (g.cost) }
                            td { (time(g.created_at)) }
                            td { (maybe_time(g.finished_at)) }
                        }
                    }
                    @if rows.is_empty() { tr { td colspan="8" .muted { "no generation matches" } } }
                }
            }
            div.pager {
                @if gq.before.is_some() { a href=(format!("/console/generations?{base}")) { "« newest" } }
                @if rows.len() as i64 == PAGE_SIZE {
                    @if let Some(last) = rows.last() {
                        a href=(format!("/console/generations?{}", query(&[("user", opt(&gq.user)), ("state", opt(&gq.state)), ("provider", opt(&gq.provider)), ("model", opt(&gq.model)), ("before", Some(format!("{}_{}", last.created_at.to_rfc3339(), last.id)))]))) { "older »" }
                    }
                }
            }
        }
    };
    Ok(html(page(&ctx, "generations", "Generations", None, body)))
}

fn parse_id(id: &str) -> Result<Uuid, PageError> {
    Uuid::parse_str(id).map_err(|_| {
        PageError(
            StatusCode::NOT_FOUND,
            format!("no generation {id:?}: not a uuid"),
        )
    })
}

pub(crate) async fn show(
    State(s): State<HttpState>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    Query(gq): Query<GenQuery>,
) -> PageResult {
    let id = parse_id(&id)?;
    let pool = s.daemon.pool();
    let mut conn = pool.acquire().await?;
    let g = generation::load(&mut conn, id)
        .await?
        .ok_or_else(|| PageError(StatusCode::NOT_FOUND, format!("generation {id} not found")))?;
    drop(conn);
    let scrubbed = list::is_scrubbed(pool, id).await?;
    let ledger = list::ledger(pool, id).await?;
    let events = list::webhooks(pool, id).await?;
    let ctx = Ctx {
        session: &session,
        notice: gq.notice.as_deref(),
    };
    let body = html! {
        div.card {
            dl.kv {
                dt { "State" } dd #state { (badge(g.state.as_str()))
                    @if let Some(at) = g.cancel_requested_at { " " span.muted { "cancel requested " (time(at)) } } }
                dt { "User" } dd { a href=(format!("/console/generations?user={}", g.user_id)) { (g.user_id) } }
                dt { "Provider / model" } dd { (g.provider) " / " (g.model) }
                dt { "Provider request id" } dd { (g.provider_request_id.clone().unwrap_or_else(|| "–".into())) }
                dt { "Cost" } dd { (g.cost) " credits" }
                dt { "Submit attempts" } dd { (g.submit_attempts) }
                dt { "Created" } dd { (time(g.created_at)) }
                dt { "Submitted" } dd { (maybe_time(g.submitted_at)) }
                dt { "Finished" } dd { (maybe_time(g.finished_at)) }
                dt { "Error" } dd { (g.error.clone().unwrap_or_else(|| "–".into())) }
            }
            @if !g.state.is_final() && g.cancel_requested_at.is_none() {
                p { (ctx.button(&format!("/console/generations/{id}/cancel"), "Cancel generation", &[], true)) }
            }
        }
        h2 { "Input" }
        div.card { @if scrubbed { p.muted { "scrubbed" } } @else { (json(&g.input)) } }
        h2 { "Output" }
        div.card {
            @match &g.output {
                Some(o) => (json(o)),
                None => p.muted { @if scrubbed { "scrubbed" } @else { "none" } },
            }
        }
        h2 { "Ledger" }
        div.card { table {
            thead { tr { th.num { "Id" } th { "Kind" } th.num { "Amount" } th { "Note" } th { "At" } } }
            tbody { @for l in &ledger { tr {
                td.num { (l.id) } td { (badge(&l.kind)) } td.num { (l.amount) }
                td { (l.note.clone().unwrap_or_default()) } td { (time(l.created_at)) }
            } } }
        } }
        h2 { "Webhook events" }
        div.card { table {
            thead { tr { th.num { "Id" } th { "Provider" } th { "Received" } th { "Request id" } th { "Job" } th { "Processed" } th.num { "Body bytes" } } }
            tbody {
                @for e in &events { tr {
                    td.num { (e.id) } td { (e.provider) } td { (time(e.received_at)) }
                    td { (e.request_id.clone().unwrap_or_default()) }
                    td { @if let Some(j) = e.job_id { a href=(format!("/console/jobs/{j}")) { (j) } } }
                    td { (maybe_time(e.processed_at)) }
                    td.num { (e.body_bytes.unwrap_or(0)) }
                } }
                @if events.is_empty() { tr { td colspan="7" .muted { "no webhook event named this generation" } } }
            }
        } }
    };
    Ok(html(page(
        &ctx,
        "generations",
        &format!("Generation {id}"),
        None,
        body,
    )))
}

pub(crate) async fn cancel(
    State(s): State<HttpState>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> PageResult {
    let id = parse_id(&id)?;
    let mut conn = s.daemon.pool().acquire().await?;
    let state = match credits::cancel_generation(&mut conn, id).await {
        Ok(state) => state,
        Err(CreditError::NotFound(_)) => {
            return Err(PageError(
                StatusCode::NOT_FOUND,
                format!("generation {id} not found"),
            ))
        }
        Err(CreditError::Database(e)) => return Err(e.into()),
        Err(e) => return Err(PageError(StatusCode::CONFLICT, e.to_string())),
    };
    drop(conn);
    record(
        &s,
        &session,
        "generation.cancel",
        Some(&id.to_string()),
        1,
        serde_json::json!({ "state_after": state.as_str() }),
    )
    .await?;
    let notice = if state == GenerationState::Cancelled {
        "generation cancelled, hold released".to_string()
    } else {
        format!("cancellation requested (generation is {state})")
    };
    Ok(see_other(&format!("/console/generations/{id}"), &notice))
}
