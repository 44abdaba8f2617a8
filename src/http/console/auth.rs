//! Login, logout and the gate in front of every console page: the session cookie, the
//! CSRF token of every POST (constant-time), and the role (read-only sessions may only log
//! out). Login and logout are audited like every other action.

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use serde::Deserialize;
use subtle::ConstantTimeEq;

use super::{html_headers, layout, record, PageError, PageResult};
use crate::console::sessions::{self, Role, Session, SESSION_TTL};
use crate::http::{HttpState, MAX_BODY_BYTES};

/// The session cookie's name.
pub const COOKIE: &str = "genq_console";

/// 404 when neither token is configured: the console is off, never open.
pub(crate) async fn require_enabled(
    State(s): State<HttpState>,
    request: Request,
    next: Next,
) -> Response {
    if !enabled(&s) {
        return disabled();
    }
    next.run(request).await
}

fn enabled(s: &HttpState) -> bool {
    s.admin_token.is_some() || s.console.readonly_token.is_some()
}

fn disabled() -> Response {
    PageError(
        StatusCode::NOT_FOUND,
        "the console is disabled: set GENQ_ADMIN_TOKEN (or admin.token_file) or GENQ_ADMIN_READONLY_TOKEN (or admin.readonly_token_file)".into(),
    )
    .into_response()
}

/// The session of the request's cookie, or a redirect to the login page; on POST also
/// the CSRF token and the role. Puts the [`Session`] into the request's extensions.
pub(crate) async fn require_session(
    State(s): State<HttpState>,
    request: Request,
    next: Next,
) -> Response {
    if !enabled(&s) {
        return disabled();
    }
    let Some(id) = cookie(request.headers()) else {
        return Redirect::to("/console/login").into_response();
    };
    let session = match sessions::lookup(s.daemon.pool(), &id).await {
        Ok(Some(session)) => session,
        Ok(None) => return Redirect::to("/console/login").into_response(),
        Err(e) => return PageError::from(e).into_response(),
    };
    let mut request = request;
    if request.method() == Method::POST {
        let (parts, body) = request.into_parts();
        let bytes = match to_bytes(body, MAX_BODY_BYTES).await {
            Ok(b) => b,
            Err(_) => {
                return PageError(StatusCode::PAYLOAD_TOO_LARGE, "form too large".into())
                    .into_response()
            }
        };
        let presented = url::form_urlencoded::parse(&bytes)
            .find(|(k, _)| k == "csrf")
            .map(|(_, v)| v.into_owned());
        let ok = presented.is_some_and(|p| bool::from(p.as_bytes().ct_eq(session.csrf.as_bytes())));
        if !ok {
            return PageError(
                StatusCode::FORBIDDEN,
                "missing or wrong CSRF token: reload the page and try again".into(),
            )
            .into_response();
        }
        if session.role != Role::Admin && parts.uri.path() != "/console/logout" {
            return PageError(
                StatusCode::FORBIDDEN,
                "this session logged in with the read-only token: actions are refused".into(),
            )
            .into_response();
        }
        request = Request::from_parts(parts, Body::from(bytes));
    }
    request.extensions_mut().insert(session);
    next.run(request).await
}

fn cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_string())
        .filter(|v| !v.is_empty())
}

pub(crate) async fn login_form() -> Response {
    (html_headers(), layout::login(None).into_string()).into_response()
}

#[derive(Deserialize)]
pub(crate) struct LoginForm {
    #[serde(default)]
    token: String,
}

pub(crate) async fn login(
    State(s): State<HttpState>,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> PageResult {
    let presented = form.token.trim();
    let role = if s.admin_token.as_ref().is_some_and(|t| t.matches(presented)) {
        Some(Role::Admin)
    } else if s
        .console
        .readonly_token
        .as_ref()
        .is_some_and(|t| t.matches(presented))
    {
        Some(Role::Readonly)
    } else {
        None
    };
    let Some(role) = role else {
        crate::console::audit::record(
            s.daemon.pool(),
            "anonymous",
            "login.refused",
            None,
            0,
            serde_json::json!({}),
        )
        .await?;
        let page = layout::login(Some("wrong token"));
        return Ok((StatusCode::UNAUTHORIZED, html_headers(), page.into_string()).into_response());
    };
    let (id, session) = sessions::create(s.daemon.pool(), role).await?;
    record(&s, &session, "login", None, 1, serde_json::json!({})).await?;
    let secure = s.console.secure_cookie
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|p| p.eq_ignore_ascii_case("https"));
    let cookie = format!(
        "{COOKIE}={id}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={}{}",
        SESSION_TTL.as_secs(),
        if secure { "; Secure" } else { "" }
    );
    let mut response = Redirect::to("/console/").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_str(&cookie)
            .map_err(|e| PageError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?,
    );
    Ok(response)
}

pub(crate) async fn logout(
    State(s): State<HttpState>,
    Extension(session): Extension<Session>,
) -> PageResult {
    sessions::delete(s.daemon.pool(), &session).await?;
    record(&s, &session, "logout", None, 1, serde_json::json!({})).await?;
    let mut response = Redirect::to("/console/login").into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static(
            "genq_console=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0",
        ),
    );
    Ok(response)
}
