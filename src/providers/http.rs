//! HTTP plumbing shared by the adapters: the client, API keys, sending a request and
//! turning what went wrong into a [`ProviderError`] that says whether to retry.
//!
//! The one distinction that matters most is where a failure happened. A connection that
//! never opened cannot have created anything, so it is retryable for every operation. A
//! timeout or a dropped connection after a submit was written may have created a paid job
//! at the provider, so a submit then is [`ProviderError::Ambiguous`]. Reads (status,
//! result, list) and cancels are idempotent, so the same failures there are retryable.

use std::fmt;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use reqwest::{RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;

use super::config::Endpoint;
use super::{ProviderError, ProviderKind};
use crate::outbound::body::PROVIDER_BODY_LIMIT;
use crate::outbound::errors::chain;
use crate::outbound::read_capped;

/// Longest provider message kept in an error. Provider messages can quote the input back
/// (validation errors); errors end up in job histories, which are kept longer than inputs.
const MAX_DETAIL_CHARS: usize = 300;

/// What every adapter holds: the shared client, its API's base URL (checked by
/// [`base_url`]) and its key.
#[derive(Debug)]
pub struct Api {
    /// The shared client ([`client`]).
    pub client: reqwest::Client,
    /// The API's base URL, without a trailing slash.
    pub base: String,
    /// The API key.
    pub key: ApiKey,
}

impl Api {
    /// The API of `kind` at the base URL `raw`.
    pub fn new(
        kind: ProviderKind,
        client: reqwest::Client,
        raw: &str,
        key: ApiKey,
    ) -> anyhow::Result<Self> {
        Ok(Self {
            client,
            base: base_url(kind, raw)?,
            key,
        })
    }
}

/// One page of a newest-first listing, read to reconcile an ambiguous submit.
pub struct ListedPage<'a, T> {
    /// The items whose webhook URL carries the generation id, in listing order.
    pub matches: Vec<&'a T>,
    /// Whether every item was created before the window opened: the listing is newest
    /// first, so no later page can hold the submit.
    pub all_older: bool,
}

/// Reads one page of a newest-first listing for the submit of `generation_id`: the items
/// whose webhook URL (`webhook`) carries it, warning when more than one `noun` does, and
/// whether the page is wholly older than `since` (by `created`).
pub fn scan_page<'a, T, C: PartialOrd>(
    kind: ProviderKind,
    noun: &str,
    items: &'a [T],
    generation_id: &str,
    webhook: impl Fn(&T) -> Option<&str>,
    created: impl Fn(&T) -> Option<C>,
    since: C,
) -> ListedPage<'a, T> {
    let matches: Vec<&T> = items
        .iter()
        .filter(|item| webhook(item).is_some_and(|u| u.contains(generation_id)))
        .collect();
    if matches.len() > 1 {
        tracing::warn!(
            generation_id = %generation_id,
            "{kind}: more than one {noun} carries this generation id"
        );
    }
    let all_older = items
        .iter()
        .all(|item| created(item).is_some_and(|c| c < since));
    ListedPage { matches, all_older }
}

/// Builds the client every adapter shares: `timeout` bounds a whole call; redirects are not
/// followed (no provider API redirects, and following one would resend a POST).
pub fn client(timeout: Duration) -> anyhow::Result<reqwest::Client> {
    Ok(crate::outbound::client::api(Some(timeout))?)
}

/// A provider API key. Its `Debug` shows only where it came from, never the key, and the
/// header it builds is marked sensitive.
#[derive(Clone)]
pub struct ApiKey {
    value: Option<String>,
    source: String,
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ApiKey")
            .field("source", &self.source)
            .field("present", &self.value.is_some())
            .finish()
    }
}

impl ApiKey {
    /// No key: requests go without `Authorization`.
    pub fn none() -> Self {
        Self {
            value: None,
            source: "no key configured".into(),
        }
    }

    /// A key given directly (tests).
    pub fn new(value: impl Into<String>) -> Self {
        Self {
            value: Some(value.into()),
            source: "given directly".into(),
        }
    }

    /// Reads the key of an endpoint: its `api_key_file` when set (an unreadable file is an
    /// error), else the environment variable `api_key_env`; neither gives no key.
    pub fn load(kind: ProviderKind, endpoint: &Endpoint) -> Result<Self, String> {
        if !endpoint.api_key_file.is_empty() {
            let path = &endpoint.api_key_file;
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("cannot read api_key_file {path}: {e}"))?;
            let key = text.trim();
            if key.is_empty() {
                return Err(format!("api_key_file {path} is empty"));
            }
            return Self::checked(key, format!("file {path}"));
        }
        let var = &endpoint.api_key_env;
        match std::env::var(var).ok().filter(|v| !v.trim().is_empty()) {
            Some(key) if !var.is_empty() => Self::checked(key.trim(), format!("${var}")),
            _ => {
                tracing::info!(provider = %kind, variable = %var,
                    "no API key configured; requests to this provider go without Authorization");
                Ok(Self {
                    value: None,
                    source: if var.is_empty() {
                        "no key configured".into()
                    } else {
                        format!("${var} is not set")
                    },
                })
            }
        }
    }

    fn checked(key: &str, source: String) -> Result<Self, String> {
        // Validated here so a bad character fails at start, not on every request.
        HeaderValue::from_str(key).map_err(|_| {
            format!("the API key from {source} contains characters not allowed in a header")
        })?;
        Ok(Self {
            value: Some(key.to_string()),
            source,
        })
    }

    /// Adds `Authorization: <scheme> <key>` when there is a key.
    pub(crate) fn authorize(&self, req: RequestBuilder, scheme: &str) -> RequestBuilder {
        match &self.value {
            Some(key) => match HeaderValue::from_str(&format!("{scheme} {key}")) {
                Ok(mut value) => {
                    value.set_sensitive(true);
                    req.header(AUTHORIZATION, value)
                }
                Err(_) => req,
            },
            None => req,
        }
    }

    /// A hint for 401/403 errors: where the key should come from.
    pub(crate) fn hint(&self) -> String {
        format!("API key: {}", self.source)
    }
}

/// The operation a call belongs to, which decides how transport failures are classified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Create a job (not idempotent).
    Submit,
    /// Read a job's status.
    Status,
    /// Read a finished job's result (fal).
    Result,
    /// Cancel a job.
    Cancel,
    /// List recent jobs (reconciliation).
    List,
}

impl Op {
    /// Lower-case name for messages.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Submit => "submit",
            Self::Status => "status",
            Self::Result => "result",
            Self::Cancel => "cancel",
            Self::List => "list",
        }
    }
}

/// A complete answer: status, headers and the whole body.
#[derive(Debug)]
pub struct Reply {
    /// HTTP status.
    pub status: StatusCode,
    /// Response headers.
    pub headers: HeaderMap,
    /// The body (empty if it could not be read on an error status).
    pub body: bytes::Bytes,
}

impl Reply {
    /// The body as JSON, if it is JSON.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// `Retry-After`, as a wait from now.
    pub fn retry_after(&self) -> Option<Duration> {
        crate::outbound::retry_after::from_headers(&self.headers)
    }

    /// Decodes a successful body. A body that is not the expected JSON is retryable for
    /// reads; for a submit it is ambiguous (the provider said yes, we cannot read the id).
    pub fn parse<T: DeserializeOwned>(
        &self,
        kind: ProviderKind,
        op: Op,
    ) -> Result<T, ProviderError> {
        serde_json::from_slice(&self.body).map_err(|e| {
            let message = format!(
                "{kind} {}: HTTP {} with an unreadable body ({e})",
                op.as_str(),
                self.status.as_u16()
            );
            if op == Op::Submit {
                ProviderError::ambiguous(format!("{message}; the request may have been accepted"))
            } else {
                ProviderError::retryable(message)
            }
        })
    }
}

/// Sends a request and reads the answer, at most [`PROVIDER_BODY_LIMIT`] bytes of it.
/// Transport failures are classified here; HTTP error statuses are returned as a [`Reply`]
/// for the adapter to classify.
pub async fn send(req: RequestBuilder, kind: ProviderKind, op: Op) -> Result<Reply, ProviderError> {
    let response = req.send().await.map_err(|e| transport_error(e, kind, op))?;
    let status = response.status();
    let headers = response.headers().clone();
    match read_capped(response, PROVIDER_BODY_LIMIT).await {
        Ok(body) => Ok(Reply {
            status,
            headers,
            body,
        }),
        // An error status is an error whatever its body said.
        Err(_) if !status.is_success() => Ok(Reply {
            status,
            headers,
            body: bytes::Bytes::new(),
        }),
        Err(e) => {
            let message = format!(
                "{kind} {}: HTTP {} but the body could not be read: {e}",
                op.as_str(),
                status.as_u16(),
            );
            Err(if op == Op::Submit {
                ProviderError::ambiguous(format!("{message}; the request may have been accepted"))
            } else {
                ProviderError::retryable(message)
            })
        }
    }
}

/// Classifies a failure to get an answer at all.
pub fn transport_error(err: reqwest::Error, kind: ProviderKind, op: Op) -> ProviderError {
    // Without the URL: it can carry a callback URL with a per-job token.
    let err = err.without_url();
    let what = format!("{kind} {}", op.as_str());
    if err.is_builder() {
        return ProviderError::permanent(format!("{what}: invalid request: {}", chain(&err)));
    }
    if err.is_connect() {
        // Nothing was written: no connection, no job.
        return ProviderError::retryable(format!("{what}: cannot connect: {}", chain(&err)));
    }
    let how = if err.is_timeout() {
        "timed out"
    } else {
        "connection failed"
    };
    if op == Op::Submit {
        ProviderError::ambiguous(format!(
            "{what}: {how} after the request may have been sent ({}); reconcile before resubmitting",
            chain(&err)
        ))
    } else {
        ProviderError::retryable(format!("{what}: {how}: {}", chain(&err)))
    }
}

/// The usual classification of an error status, given the provider's own description.
/// 408, 429 and 5xx are retryable (with `Retry-After` when present); other statuses are
/// permanent. Adapters handle their special cases before calling this.
pub fn status_error(
    kind: ProviderKind,
    op: Op,
    reply: &Reply,
    detail: &str,
    key: &ApiKey,
) -> ProviderError {
    let status = reply.status;
    let mut message = format!("{kind} {}: HTTP {}", op.as_str(), status.as_u16());
    if !detail.is_empty() {
        message.push_str(": ");
        message.push_str(&truncate(detail));
    }
    match status.as_u16() {
        408 | 429 | 500..=599 => ProviderError::Retryable {
            message,
            retry_after: reply.retry_after(),
        },
        401 | 403 => ProviderError::permanent(format!("{message} ({})", key.hint())),
        _ => ProviderError::permanent(message),
    }
}

/// Cuts a provider message to a bounded length, on a character boundary.
pub fn truncate(text: &str) -> String {
    let text = text.trim();
    match text.char_indices().nth(MAX_DETAIL_CHARS) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

/// Whether `path` is a safe sequence of URL path segments (`owner/app/sub/path`): letters,
/// digits, `-`, `_`, `.`, no empty or dot-only segment. Model ids come from the database;
/// they must not be able to reach another endpoint of the API.
pub fn is_safe_path(path: &str) -> bool {
    !path.is_empty()
        && path.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && seg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        })
}

/// Checks and normalises a configured base URL (no trailing slash).
pub fn base_url(kind: ProviderKind, raw: &str) -> anyhow::Result<String> {
    let parsed = url::Url::parse(raw)
        .map_err(|e| anyhow::anyhow!("providers.{kind}.base_url {raw:?} is not a URL: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        anyhow::bail!("providers.{kind}.base_url {raw:?} must be http or https");
    }
    Ok(raw.trim_end_matches('/').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_details_are_cut_on_a_character_boundary() {
        let long = "é".repeat(1000);
        let cut = truncate(&long);
        assert_eq!(cut.chars().count(), MAX_DETAIL_CHARS + 1);
        assert_eq!(truncate(" short "), "short");
    }

    #[test]
    fn model_paths_cannot_escape() {
        assert!(is_safe_path(
            "fal-ai/kling-video/v2.1/master/image-to-video"
        ));
        assert!(!is_safe_path("fal-ai/../admin"));
        assert!(!is_safe_path("/fal-ai/x"));
        assert!(!is_safe_path("a/b?x=1"));
        assert!(!is_safe_path(""));
    }

    #[test]
    fn keys_never_show_in_debug() {
        let key = ApiKey::new("sekrit-123");
        assert!(!format!("{key:?}").contains("sekrit"));
    }
}
