//! What the HTTP-speaking stores share: the mapping of HTTP statuses and transport errors to
//! [`StorageError`] and byte counting of a body that is streamed out. The secret wrapper,
//! `Retry-After` parsing and URL-free error text come from [`crate::outbound`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures::StreamExt;
use reqwest::header::HeaderMap;
use reqwest::StatusCode;

use super::{ByteStream, StorageError};

pub(crate) use crate::outbound::errors::chain;
pub(crate) use crate::outbound::retry_after::from_headers as retry_after;
pub(crate) use crate::outbound::Secret;

/// The HTTP client of the Vercel and Supabase stores. No overall timeout: an upload of
/// hundreds of MB may take minutes, and the job's own time limit bounds it.
pub(crate) fn client() -> reqwest::Result<reqwest::Client> {
    crate::outbound::client::api(None)
}

/// Maps a non-success status: 408, 429 and 5xx are retryable (honouring `Retry-After`),
/// every other status is permanent (auth, bad request, missing bucket or store).
pub(crate) fn from_status(
    status: StatusCode,
    headers: &HeaderMap,
    what: &str,
    detail: &str,
) -> StorageError {
    let message = format!("{what}: HTTP {status}{}", describe(detail));
    if is_retryable_status(status) {
        StorageError::Retryable {
            message,
            retry_after: retry_after(headers),
        }
    } else {
        StorageError::Permanent { message }
    }
}

/// 408, 429 and 5xx.
pub(crate) fn is_retryable_status(status: StatusCode) -> bool {
    status == StatusCode::REQUEST_TIMEOUT
        || status == StatusCode::TOO_MANY_REQUESTS
        || status.is_server_error()
}

/// Maps a transport error. Only a request that could not be built is permanent; timeouts,
/// refused or dropped connections and truncated bodies are retryable. The URL is removed
/// from the message: a source URL may carry a signature in its query.
pub(crate) fn from_reqwest(error: reqwest::Error, what: &str) -> StorageError {
    let permanent = error.is_builder();
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let message = format!("{what}: {kind}: {}", chain(&error.without_url()));
    if permanent {
        StorageError::Permanent { message }
    } else {
        StorageError::retryable(message)
    }
}

/// A store's answer as text, read under [`crate::outbound::body::SMALL_BODY_LIMIT`]
/// (store answers are short JSON documents); unreadable or too long reads as empty.
pub(crate) async fn capped_text(response: reqwest::Response) -> String {
    crate::outbound::read_capped(response, crate::outbound::body::SMALL_BODY_LIMIT)
        .await
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default()
}

/// A response body shortened for an error message.
pub(crate) fn describe(detail: &str) -> String {
    let detail = detail.trim();
    if detail.is_empty() {
        return String::new();
    }
    let mut end = detail.len().min(300);
    while !detail.is_char_boundary(end) {
        end -= 1;
    }
    let ellipsis = if end < detail.len() { "…" } else { "" };
    format!(": {}{ellipsis}", &detail[..end])
}

/// Wraps `body` so the bytes it yields are counted into the returned counter.
pub(crate) fn counted(body: ByteStream) -> (ByteStream, Arc<AtomicU64>) {
    let count = Arc::new(AtomicU64::new(0));
    let counter = count.clone();
    let body = body
        .inspect(move |chunk| {
            if let Ok(bytes) = chunk {
                counter.fetch_add(bytes.len() as u64, Ordering::Relaxed);
            }
        })
        .boxed();
    (body, count)
}

/// Appends `key`'s segments to `base`'s path, percent-encoding each one.
pub(crate) fn join_key(base: &url::Url, prefix: &[&str], key: &str) -> url::Url {
    let mut url = base.clone();
    {
        let mut segments = url
            .path_segments_mut()
            .expect("base URLs are checked to be http(s) when a store is built");
        segments.pop_if_empty();
        segments.extend(prefix);
        segments.extend(key.split('/'));
    }
    url
}

/// Parses a configured base URL, requiring http or https.
pub(crate) fn base_url(raw: &str, what: &str) -> anyhow::Result<url::Url> {
    let url = url::Url::parse(raw.trim()).map_err(|e| anyhow::anyhow!("{what} {raw:?}: {e}"))?;
    if !matches!(url.scheme(), "http" | "https") {
        anyhow::bail!("{what} {raw:?}: expected an http(s) URL");
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_what_to_do() {
        let h = HeaderMap::new();
        for s in [408, 429, 500, 502, 503, 504] {
            let e = from_status(StatusCode::from_u16(s).unwrap(), &h, "x", "");
            assert!(e.is_retryable(), "{s}");
        }
        for s in [400, 401, 403, 404, 409, 413] {
            let e = from_status(StatusCode::from_u16(s).unwrap(), &h, "x", "");
            assert!(!e.is_retryable(), "{s}");
        }
    }

    #[test]
    fn keys_are_encoded_per_segment() {
        let base = url::Url::parse("https://h.example/api/").unwrap();
        let u = join_key(&base, &["object", "b"], "a b/c?d#e.mp4");
        assert_eq!(
            u.as_str(),
            "https://h.example/api/object/b/a%20b/c%3Fd%23e.mp4"
        );
    }
}
