//! Copying a provider's output into a store. The download is piped into the store's upload
//! chunk by chunk under a size limit, so an output of any size costs a few MB of memory, and
//! the source's failures are classified for the pipeline: an expired output (404, 410, 403)
//! can never be fetched again, a flaky source can.
//!
//! The URL comes from a provider's answer, so it is fetched through the guarded client
//! ([`crate::outbound::Guarded`]): a URL or redirect hop reaching a non-public address is
//! refused before any connection, and that refusal is permanent.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use futures::{Stream, StreamExt};
use reqwest::header::CONTENT_TYPE;

use super::http::{from_reqwest, from_status};
use super::{validate_key, BlobStore, ByteStream, StorageError, StoredObject};
use crate::outbound::errors::without_query;
use crate::outbound::{FetchError, Guarded};

/// Which side of a copy failed: the source (the provider's output URL) or our store. The
/// pipeline treats them differently: an output that cannot be fetched was still paid for at
/// the provider, a store that refuses it is our fault.
#[derive(Debug, Clone)]
pub enum CopyFailure {
    /// The download: refused by the address policy, expired (403/404/410), over the size
    /// limit, or the source failing.
    Source(StorageError),
    /// The store, or the key we chose.
    Store(StorageError),
}

impl CopyFailure {
    /// The error, whichever side it came from.
    pub fn into_inner(self) -> StorageError {
        match self {
            Self::Source(e) | Self::Store(e) => e,
        }
    }
}

/// [`copy_output`] without saying which side failed.
pub async fn copy_from_url(
    store: &dyn BlobStore,
    http: &Guarded,
    url: &str,
    key: &str,
    max_bytes: u64,
) -> Result<StoredObject, StorageError> {
    copy_output(store, http, url, key, max_bytes)
        .await
        .map_err(CopyFailure::into_inner)
}

/// Downloads `url` with the guarded `http` client and stores it under `key`, streaming (never buffering the
/// whole body), refusing more than `max_bytes` (`storage.max_object_bytes`).
///
/// Errors: the source answering 404, 410 or 403 (an expired output) is permanent, as are
/// an object over the limit (nothing is left under `key`) and a URL or redirect the
/// address policy refuses; 408, 429, 5xx, timeouts and
/// dropped connections are retryable; the store's own errors pass through. Messages name
/// the source without its query string, which may hold a signature.
pub async fn copy_output(
    store: &dyn BlobStore,
    http: &Guarded,
    url: &str,
    key: &str,
    max_bytes: u64,
) -> Result<StoredObject, CopyFailure> {
    validate_key(key).map_err(CopyFailure::Store)?;
    let url = url::Url::parse(url).map_err(|e| {
        CopyFailure::Source(StorageError::permanent(format!(
            "source URL is not valid: {e}"
        )))
    })?;
    let what = format!("downloading {}", without_query(&url));
    let response = http.get(&url).await.map_err(|e| {
        CopyFailure::Source(match e {
            FetchError::Refused(why) => StorageError::permanent(format!("{what}: {why}")),
            FetchError::Transport { message, timeout } => {
                let how = if timeout {
                    "timed out"
                } else {
                    "request failed"
                };
                StorageError::retryable(format!("{what}: {how}: {message}"))
            }
        })
    })?;
    let status = response.status();
    if !status.is_success() {
        return Err(CopyFailure::Source(match status.as_u16() {
            403 | 404 | 410 => StorageError::permanent(format!(
                "{what}: HTTP {status}: the output has expired or is not accessible"
            )),
            _ => from_status(status, response.headers(), &what, ""),
        }));
    }
    if let Some(len) = response.content_length().filter(|&len| len > max_bytes) {
        return Err(CopyFailure::Source(too_large(&what, len, max_bytes)));
    }
    let content_type = response
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);

    // The store sees only an io::Error when the download fails or goes over the limit; the
    // real classification is kept here and replaces whatever the store made of it.
    let source_failure = Arc::new(Mutex::new(None));
    let body = limited(
        response.bytes_stream(),
        max_bytes,
        what.clone(),
        source_failure.clone(),
    );
    let stored = store.put(key, body, content_type.as_deref()).await;
    let source_failure = crate::sync::lock(&source_failure).take();
    match (stored, source_failure) {
        (Ok(stored), _) => Ok(stored),
        (Err(_), Some(source_failure)) => Err(CopyFailure::Source(source_failure)),
        (Err(store_failure), None) => Err(CopyFailure::Store(store_failure)),
    }
}

/// Passes `source` through, failing once more than `max_bytes` went by; the failure's
/// classification is written to `failure`.
fn limited(
    source: impl Stream<Item = reqwest::Result<Bytes>> + Send + 'static,
    max_bytes: u64,
    what: String,
    failure: Arc<Mutex<Option<StorageError>>>,
) -> ByteStream {
    let mut total: u64 = 0;
    source
        .map(move |chunk| {
            let error = match chunk {
                Ok(bytes) => {
                    total += bytes.len() as u64;
                    if total <= max_bytes {
                        return Ok(bytes);
                    }
                    too_large(&what, total, max_bytes)
                }
                Err(e) => from_reqwest(e, &what),
            };
            let io = std::io::Error::other(error.message().to_string());
            crate::sync::lock(&failure).get_or_insert(error);
            Err(io)
        })
        .boxed()
}

fn too_large(what: &str, size: u64, max_bytes: u64) -> StorageError {
    StorageError::permanent(format!(
        "{what}: the output is larger than storage.max_object_bytes ({size} > {max_bytes} bytes)"
    ))
}
