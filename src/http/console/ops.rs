//! The Credits, Privacy and Providers pages. The whole-table audits (`check_ledger()`,
//! `check_retention()`) read every ledger or blob row, so they run only when the operator
//! asks (`?check=1`), never on an ordinary page view. Providers: each gate's in-flight calls,
//! tokens, failures and circuit; an admin may open a circuit for some minutes or close it.

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::{Extension, Form};
use maud::{html, Markup};
use serde::Deserialize;

use super::layout::{badge, maybe_time, page, time, Ctx};
use super::{html, opt, record, see_other, PageError, PageResult};
use crate::console::money;
use crate::console::privacy;
use crate::console::sessions::Session;
use crate::http::HttpState;
use crate::providers::gate;

const LIMIT: i64 = 100;

#[derive(Deserialize, Default)]
pub(crate) struct OpsQuery {
    user: Option<String>,
    check: Option<String>,
    notice: Option<String>,
}

fn violations(rows: &[(String, String)], what: &str) -> Markup {
    html! {
        @if rows.is_empty() { p #check-result { (badge("completed")) " " (what) ": no violation" } }
        @else {
            p #check-result { (badge("failed")) " " (rows.len()) " violation(s)" }
            table { tbody { @for (inv, detail) in rows { tr { td { (inv) } td { (detail) } } } } }
        }
    }
}

/// A whole-table audit's section: its result when the operator asked for it (`?check=1`),
/// else the link that runs it and what it reads.
fn invariants(
    title: &str,
    check: Option<&[(String, String)]>,
    what: &str,
    href: &str,
    reads: &str,
) -> Markup {
    html! {
        h2 { (title) }
        div.card {
            @match check {
                Some(rows) => (violations(rows, what)),
                None => p { a href=(href) { "Run " (what) } span.muted { " (reads " (reads) ")" } },
            }
        }
    }
}

pub(crate) async fn credits(
    State(s): State<HttpState>,
    Extension(session): Extension<Session>,
    Query(q): Query<OpsQuery>,
) -> PageResult {
    let pool = s.daemon.pool();
    let user = opt(&q.user);
    let ctx = Ctx {
        session: &session,
        notice: q.notice.as_deref(),
    };
    let check = if q.check.is_some() {
        let mut conn = pool.acquire().await?;
        let v = crate::credits::check_ledger(&mut conn).await?;
        Some(
            v.into_iter()
                .map(|v| (v.invariant, v.detail))
                .collect::<Vec<_>>(),
        )
    } else {
        None
    };
    let account = match &user {
        Some(u) => {
            let mut conn = pool.acquire().await?;
            let balance = crate::credits::balance(&mut conn, u).await?;
            drop(conn);
            Some((
                balance,
                money::ledger(pool, u, LIMIT).await?,
                money::payments(pool, u, LIMIT).await?,
            ))
        }
        None => None,
    };
    let body = html! {
        div.card {
            form.filters method="get" action="/console/credits" {
                label { "User" input type="text" name="user" value=[user.clone()]; }
                button type="submit" { "Show" }
            }
        }
        @if let Some((balance, ledger, payments)) = &account {
            div.card { dl.kv {
                dt { "Available" } dd #available { (balance.available) }
                dt { "Held" } dd { (balance.held) }
            } }
            h2 { "Ledger (latest " (LIMIT) ")" }
            div.card { table {
                thead { tr { th.num { "Id" } th { "Kind" } th.num { "Amount" } th { "Generation" } th { "Note" } th { "At" } } }
                tbody { @for l in ledger { tr {
                    td.num { (l.id) } td { (badge(&l.kind)) } td.num { (l.amount) }
                    td { @if let Some(g) = l.generation_id { a href=(format!("/console/generations/{g}")) { (g.to_string()[..8]) "…" } } }
                    td { (l.note.clone().unwrap_or_default()) } td { (time(l.created_at)) }
                } } }
            } }
            h2 { "Payments" }
            div.card { table {
                thead { tr { th { "Transaction" } th { "Order" } th.num { "Credits" } th { "Status" } th { "Paid" } th { "Granted" } th { "Created" } th.num { "Polls" } th { "Next poll" } } }
                tbody {
                    @for p in payments { tr id=(format!("payment-{}", p.txn_id)) {
                        td { (p.txn_id) } td { (p.order_number) } td.num { (p.credits) } td { (badge(&p.status)) }
                        td { (p.amount.clone().unwrap_or_default()) " " (p.currency.clone().unwrap_or_default()) }
                        td { (maybe_time(p.granted_at)) } td { (time(p.created_at)) }
                        td.num { (p.polls) }
                        td {
                            @if let Some(at) = p.poll_given_up_at {
                                span.badge.poll-given-up title="Plisio never knew this payment: no longer polled (decision 56)" { "poll given up" } " " (time(at))
                            } @else if matches!(p.status.as_str(), "new" | "pending") {
                                (maybe_time(p.next_poll_at))
                            } @else {
                                span.muted { "–" }
                            }
                        }
                    } }
                    @if payments.is_empty() { tr { td colspan="9" .muted { "no payment" } } }
                }
            } }
        }
        (invariants("Ledger invariants", check.as_deref(), "check_ledger()", "/console/credits?check=1", "every ledger and account row"))
    };
    Ok(html(page(&ctx, "credits", "Credits", None, body)))
}

pub(crate) async fn privacy_page(
    State(s): State<HttpState>,
    Extension(session): Extension<Session>,
    Query(q): Query<OpsQuery>,
) -> PageResult {
    let pool = s.daemon.pool();
    let due = privacy::due(pool).await?;
    let deletions = privacy::deletions(pool, LIMIT).await?;
    let requests = privacy::requests(pool, 20).await?;
    let check = if q.check.is_some() {
        let v = crate::retention::check(pool).await?;
        Some(
            v.into_iter()
                .map(|v| (v.invariant, v.detail))
                .collect::<Vec<_>>(),
        )
    } else {
        None
    };
    let ctx = Ctx {
        session: &session,
        notice: q.notice.as_deref(),
    };
    let body = html! {
        h2 { "Due for deletion" }
        div.card { table {
            thead { tr { th { "Role" } th.num { "Due now" } th.num { "Overdue (> 1 h)" } th.num { "Due within a day" } } }
            tbody {
                @for d in &due { tr { td { (d.role) } td.num { (d.due) } td.num { (d.overdue) } td.num { (d.due_within_day) } } }
                @if due.is_empty() { tr { td colspan="4" .muted { "nothing due within a day" } } }
            }
        } }
        h2 { "Erasure and export requests" }
        div.card { table {
            thead { tr { th { "Kind" } th.num { "Id" } th { "User" } th { "Requested" } th { "State" } th { "Due / link expires" } } }
            tbody {
                @for r in &requests { tr {
                    td { (r.kind) } td.num { (r.id) } td { (r.user_id) } td { (time(r.requested_at)) }
                    td { @if r.completed_at.is_some() { (badge("completed")) } @else { (badge("available")) } }
                    td { (maybe_time(r.due_or_expires)) }
                } }
                @if requests.is_empty() { tr { td colspan="6" .muted { "no request" } } }
            }
        } }
        h2 { "Latest deletions" }
        div.card { table {
            thead { tr { th.num { "Id" } th { "At" } th { "Subject" } th { "Outcome" } th { "Policy" } th { "Role" } th { "Store" } } }
            tbody { @for d in &deletions { tr {
                td.num { (d.id) } td { (time(d.at)) } td { (d.subject) } td { (d.outcome) } td { (d.policy) }
                td { (d.role.clone().unwrap_or_default()) } td { (d.store.clone().unwrap_or_default()) }
            } } }
        } }
        (invariants("Retention invariants", check.as_deref(), "check_retention()", "/console/privacy?check=1", "every blob and deletion row"))
    };
    Ok(html(page(&ctx, "privacy", "Privacy", None, body)))
}

pub(crate) async fn providers(
    State(s): State<HttpState>,
    Extension(session): Extension<Session>,
    Query(q): Query<OpsQuery>,
) -> PageResult {
    let gates = gate::gates(s.daemon.pool()).await?;
    let ctx = Ctx {
        session: &session,
        notice: q.notice.as_deref(),
    };
    let body = html! {
        div.card { table {
            thead { tr { th { "Provider" } th { "Circuit" } th.num { "In flight" } th.num { "Tokens" } th.num { "Failures in a row" } th { "Since" }
                @if ctx.can_act() { th { "Actions" } } } }
            tbody {
                @for g in &gates { tr id=(format!("provider-{}", g.provider)) {
                    td { (g.provider) }
                    td { @if g.open { (badge("open")) " until " (maybe_time(g.open_until)) } @else { (badge("closed")) } }
                    td.num { (g.in_flight) } td.num { (format!("{:.1}", g.tokens)) } td.num { (g.consecutive_failures) }
                    td { (time(g.updated_at)) }
                    @if ctx.can_act() { td {
                        @if g.open { (ctx.button(&format!("/console/providers/{}/close", g.provider), "Close circuit", &[], false)) }
                        @else {
                            form.inline method="post" action=(format!("/console/providers/{}/open", g.provider)) {
                                (ctx.csrf())
                                input type="number" min="1" max="1440" name="minutes" value="10" aria-label="minutes";
                                button.danger type="submit" { "Open circuit (minutes)" }
                            }
                        }
                    } }
                } }
                @if gates.is_empty() { tr { td colspan="7" .muted { "no provider called yet (a gate appears with the first call)" } } }
            }
        } }
        p.muted { "The in-flight cap and rate come from each daemon's [providers] config; a circuit opened here refuses calls fleet-wide until it closes." }
    };
    Ok(html(page(&ctx, "providers", "Providers", None, body)))
}

#[derive(Deserialize)]
pub(crate) struct OpenForm {
    minutes: Option<String>,
}

fn no_gate(provider: &str) -> PageError {
    PageError(
        StatusCode::NOT_FOUND,
        format!("provider {provider:?} has no gate (never called)"),
    )
}

pub(crate) async fn open_circuit(
    State(s): State<HttpState>,
    Extension(session): Extension<Session>,
    Path(provider): Path<String>,
    Form(f): Form<OpenForm>,
) -> PageResult {
    let minutes = match opt(&f.minutes).map(|m| m.parse::<u32>()) {
        Some(Ok(m)) if (1..=1440).contains(&m) => m,
        _ => {
            return Err(PageError(
                StatusCode::BAD_REQUEST,
                "minutes is a whole number from 1 to 1440".into(),
            ))
        }
    };
    if !gate::open_circuit(s.daemon.pool(), &provider, f64::from(minutes) * 60.0).await? {
        return Err(no_gate(&provider));
    }
    record(
        &s,
        &session,
        "provider.open_circuit",
        Some(&provider),
        1,
        serde_json::json!({ "minutes": minutes }),
    )
    .await?;
    Ok(see_other(
        "/console/providers",
        &format!("{provider}: circuit opened for {minutes} min"),
    ))
}

pub(crate) async fn close_circuit(
    State(s): State<HttpState>,
    Extension(session): Extension<Session>,
    Path(provider): Path<String>,
) -> PageResult {
    if !gate::close_circuit(s.daemon.pool(), &provider).await? {
        return Err(no_gate(&provider));
    }
    record(
        &s,
        &session,
        "provider.close_circuit",
        Some(&provider),
        1,
        serde_json::json!({}),
    )
    .await?;
    Ok(see_other(
        "/console/providers",
        &format!("{provider}: circuit closed"),
    ))
}
