//! The console's page shell and small building blocks: navigation, forms that carry the
//! session's CSRF token, times and states. Markup is maud (escaped by default); no
//! JavaScript anywhere, so every page reads and acts with plain links and forms.

use chrono::{DateTime, Utc};
use maud::{html, Markup, PreEscaped, DOCTYPE};

use crate::console::sessions::{Role, Session};

/// The stylesheet, embedded in the binary and served at `/console/assets/console.css`.
pub const CSS: &str = include_str!("assets/console.css");

const NAV: &[(&str, &str)] = &[
    ("overview", "Overview"),
    ("jobs", "Jobs"),
    ("generations", "Generations"),
    ("providers", "Providers"),
    ("fairness", "Fairness"),
    ("webhooks", "Webhooks"),
    ("credits", "Credits"),
    ("privacy", "Privacy"),
    ("audit", "Audit"),
];

/// What every page knows: the session (for the CSRF token and whether to show actions)
/// and an optional notice from the action that led here.
pub struct Ctx<'a> {
    /// The session.
    pub session: &'a Session,
    /// A one-line notice (e.g. "queue x paused").
    pub notice: Option<&'a str>,
}

impl Ctx<'_> {
    /// Whether actions are shown.
    pub fn can_act(&self) -> bool {
        self.session.role == Role::Admin
    }

    /// A POST form to `action` carrying the CSRF token, with `fields` and a button.
    /// Read-only sessions get nothing (the server refuses their actions anyway).
    pub fn button(
        &self,
        action: &str,
        label: &str,
        fields: &[(&str, &str)],
        danger: bool,
    ) -> Markup {
        if !self.can_act() {
            return html! {};
        }
        html! {
            form.inline method="post" action=(action) {
                input type="hidden" name="csrf" value=(self.session.csrf);
                @for (name, value) in fields {
                    input type="hidden" name=(name) value=(value);
                }
                button class=[danger.then_some("danger")] type="submit" { (label) }
            }
        }
    }

    /// The hidden CSRF field, for forms built by hand.
    pub fn csrf(&self) -> Markup {
        html! { input type="hidden" name="csrf" value=(self.session.csrf); }
    }
}

/// The `<head>` of every page: the stylesheet, a viewport for phones, an optional refresh.
fn head(title: &str, refresh: Option<u32>) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            @if let Some(secs) = refresh {
                meta http-equiv="refresh" content=(secs);
            }
            title { (title) " · genq" }
            link rel="stylesheet" href="/console/assets/console.css";
        }
    }
}

/// A whole page.
pub fn page(ctx: &Ctx<'_>, here: &str, title: &str, refresh: Option<u32>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(title, refresh))
            body {
                header {
                    span.brand { "genq" }
                    nav {
                        @for (slug, label) in NAV {
                            a class=[(*slug == here).then_some("here")] href=(format!("/console/{}", if *slug == "overview" { "" } else { slug })) { (label) }
                            " "
                        }
                    }
                    span.who {
                        (ctx.session.role.as_str())
                        form.inline method="post" action="/console/logout" {
                            (ctx.csrf())
                            button.plain type="submit" { "Log out" }
                        }
                    }
                }
                main {
                    h1 { (title) }
                    @if let Some(n) = ctx.notice {
                        div.notice role="status" { (n) }
                    }
                    (body)
                }
            }
        }
    }
}

/// The login page (no session yet).
pub fn login(error: Option<&str>) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head("Log in", None))
            body {
                main.login {
                    div.card {
                        h1 { "genq console" }
                        @if let Some(e) = error {
                            div.error role="alert" { (e) }
                        }
                        form method="post" action="/console/login" {
                            p { label for="token" { "Admin or read-only token" } }
                            p { input id="token" type="password" name="token" autocomplete="current-password" required autofocus; }
                            p { button type="submit" { "Log in" } }
                        }
                        p.muted { "The admin token acts; the read-only token only reads. Sessions last 12 hours." }
                    }
                }
            }
        }
    }
}

/// An error page with the shell (signed in) or bare.
pub fn error_page(status: u16, message: &str) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            (head(&format!("Error {status}"), None))
            body { main {
                h1 { "Error " (status) }
                div.error role="alert" { (message) }
                p { a href="/console/" { "Back to the overview" } }
            } }
        }
    }
}

/// A time, UTC, to the second.
pub fn time(t: DateTime<Utc>) -> Markup {
    html! { time datetime=(t.to_rfc3339()) { (t.format("%Y-%m-%d %H:%M:%S")) } }
}

/// An optional time, or a dash.
pub fn maybe_time(t: Option<DateTime<Utc>>) -> Markup {
    match t {
        Some(t) => time(t),
        None => html! { span.muted { "–" } },
    }
}

/// A duration in seconds, short ("3m 20s").
pub fn age(secs: f64) -> String {
    let s = secs.max(0.0) as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m {}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h {}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d {}h", s / 86_400, (s % 86_400) / 3600),
    }
}

/// A state badge (its class colours it).
pub fn badge(state: &str) -> Markup {
    html! { span class=(format!("badge {state}")) { (state) } }
}

/// JSON, pretty-printed and escaped.
pub fn json(v: &serde_json::Value) -> Markup {
    let text = serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string());
    html! { pre { (text) } }
}

/// Builds a query string from the present pairs (values percent-encoded).
pub fn query(pairs: &[(&str, Option<String>)]) -> String {
    let mut out = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        if let Some(v) = v {
            if !v.is_empty() {
                out.append_pair(k, v);
            }
        }
    }
    out.finish()
}

/// Nothing, for `PreEscaped` call sites that need an empty fragment.
pub fn empty() -> Markup {
    PreEscaped(String::new())
}
