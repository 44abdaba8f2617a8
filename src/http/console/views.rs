//! Read-only pages that are a single table: the Audit page (every console action, newest
//! first, paged by id).

use axum::extract::{Query, State};
use axum::Extension;
use maud::html;
use serde::Deserialize;

use super::layout::{json, page, time, Ctx};
use super::{html, PageResult};
use crate::console::audit;
use crate::console::sessions::Session;
use crate::http::HttpState;

const PAGE_SIZE: i64 = 100;

#[derive(Deserialize, Default)]
pub(crate) struct AuditQuery {
    before: Option<i64>,
}

pub(crate) async fn audit(
    State(s): State<HttpState>,
    Extension(session): Extension<Session>,
    Query(q): Query<AuditQuery>,
) -> PageResult {
    let rows = audit::list(s.daemon.pool(), q.before, PAGE_SIZE).await?;
    let ctx = Ctx {
        session: &session,
        notice: None,
    };
    let body = html! {
        div.card {
            table {
                thead { tr { th.num { "Id" } th { "At" } th { "Actor" } th { "Action" } th { "Target" } th.num { "Affected" } th { "Detail" } } }
                tbody {
                    @for r in &rows {
                        tr {
                            td.num { (r.id) }
                            td { (time(r.at)) }
                            td { (r.actor) }
                            td { (r.action) }
                            td { (r.target.clone().unwrap_or_default()) }
                            td.num { (r.affected_count) }
                            td { (json(&r.detail)) }
                        }
                    }
                    @if rows.is_empty() { tr { td colspan="7" .muted { "no action yet" } } }
                }
            }
            @if rows.len() as i64 == PAGE_SIZE {
                @if let Some(last) = rows.last() {
                    div.pager { a href=(format!("/console/audit?before={}", last.id)) { "older »" } }
                }
            }
        }
    };
    Ok(html(page(&ctx, "audit", "Audit", None, body)))
}
