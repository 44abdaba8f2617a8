//! `GET /v1/generations/{id}/events` and `GET /v1/users/me/events` on the public listener:
//! Server-Sent Events of generation changes (`crate::events` does the work). This edge only
//! reads the token (`Authorization: Bearer`, else `?token=`, since EventSource cannot set
//! headers) and `Last-Event-ID`, and maps outcomes to statuses. Nothing here logs a request
//! line or a query string, so a token in the URL stays out of the logs. Off (404) unless
//! `[events]` configures a token verifier.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use futures::StreamExt;
use serde::Deserialize;
use tower_http::cors::{AllowOrigin, CorsLayer};
use uuid::Uuid;

use super::HttpState;
use crate::events::{AuthError, Caller, Changes, Events, Kind, OpenError, Refused};

/// The routes, with CORS for `allowed_origins` when any are configured.
pub(crate) fn routes(allowed_origins: &[String]) -> Router<HttpState> {
    let router = Router::new()
        .route("/v1/generations/{id}/events", get(one))
        .route("/v1/users/me/events", get(user));
    if allowed_origins.is_empty() {
        return router;
    }
    router.layer(cors(allowed_origins))
}

/// Exact origins, GET only, no credentials (the token travels in the URL or the header,
/// never in a cookie), preflight cached for 10 minutes.
fn cors(allowed_origins: &[String]) -> CorsLayer {
    let origins: Vec<HeaderValue> = allowed_origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([Method::GET])
        .allow_headers([
            header::AUTHORIZATION,
            header::CACHE_CONTROL,
            HeaderName::from_static("last-event-id"),
        ])
        .max_age(Duration::from_secs(600))
}

#[derive(Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

async fn one(
    State(state): State<HttpState>,
    Path(id): Path<String>,
    Query(query): Query<TokenQuery>,
    headers: HeaderMap,
) -> Response {
    let (events, caller) = match authorize(&state, &headers, query).await {
        Ok(v) => v,
        Err(response) => return response,
    };
    // A malformed id answers like a missing generation.
    let Ok(id) = id.parse::<Uuid>() else {
        return not_found();
    };
    let opened = events.open_one(&caller, id, last_event_id(&headers)).await;
    respond(&events, opened, Kind::One)
}

async fn user(
    State(state): State<HttpState>,
    Query(query): Query<TokenQuery>,
    headers: HeaderMap,
) -> Response {
    let (events, caller) = match authorize(&state, &headers, query).await {
        Ok(v) => v,
        Err(response) => return response,
    };
    let opened = events.open_user(&caller, last_event_id(&headers)).await;
    respond(&events, opened, Kind::User)
}

async fn authorize(
    state: &HttpState,
    headers: &HeaderMap,
    query: TokenQuery,
) -> Result<(Arc<Events>, Caller), Response> {
    let Some(events) = state.events.clone() else {
        return Err(error(StatusCode::NOT_FOUND, "not found"));
    };
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let token = bearer.map(str::to_string).or(query.token);
    let Some(token) = token.filter(|t| !t.is_empty()) else {
        return Err(unauthorized(AuthError::Missing));
    };
    match events.auth.verify(&token).await {
        Ok(caller) => Ok((events, caller)),
        Err(AuthError::KeysUnavailable) => Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            &AuthError::KeysUnavailable.to_string(),
        )),
        Err(err) => Err(unauthorized(err)),
    }
}

fn last_event_id(headers: &HeaderMap) -> Option<i64> {
    headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

fn respond(events: &Events, opened: Result<Changes, OpenError>, kind: Kind) -> Response {
    let changes = match opened {
        Ok(changes) => changes,
        Err(OpenError::NotFound) => return not_found(),
        Err(OpenError::Finished) => return StatusCode::NO_CONTENT.into_response(),
        Err(OpenError::Refused(Refused::UserLimit)) => {
            return error(
                StatusCode::TOO_MANY_REQUESTS,
                &Refused::UserLimit.to_string(),
            )
        }
        Err(OpenError::Refused(r)) => {
            return error(StatusCode::SERVICE_UNAVAILABLE, &r.to_string())
        }
        Err(OpenError::Database(err)) => {
            tracing::warn!(error = %err, "cannot open an event stream: database error");
            return error(
                StatusCode::SERVICE_UNAVAILABLE,
                "database unavailable; retry",
            );
        }
    };
    let sse = changes.map(move |change| {
        Ok::<_, Infallible>(
            Event::default()
                .id(kind.event_id(&change).to_string())
                .event("generation")
                .data(&*change.data),
        )
    });
    let mut response = Sse::new(sse)
        .keep_alive(KeepAlive::new().interval(events.config.keepalive))
        .into_response();
    // Reverse proxies (nginx) must not buffer the stream.
    response
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    response
}

fn error(status: StatusCode, message: &str) -> Response {
    (status, Json(serde_json::json!({ "error": message }))).into_response()
}

/// Missing, someone else's, or not listed in the token: one answer for all three.
fn not_found() -> Response {
    error(StatusCode::NOT_FOUND, "no such generation")
}

fn unauthorized(err: AuthError) -> Response {
    let challenge = match err {
        AuthError::Missing => r#"Bearer realm="genq""#,
        _ => r#"Bearer realm="genq", error="invalid_token""#,
    };
    let mut response = error(StatusCode::UNAUTHORIZED, &err.to_string());
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static(challenge),
    );
    response
}
