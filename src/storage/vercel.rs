//! A store in Vercel Blob, through its HTTP API (`x-api-version: 9`).
//!
//! Keys are pathnames: a put sends `PUT {base_url}/{pathname}` with random suffixes off and
//! overwriting allowed, so the blob's pathname is the key and a repeated put replaces the
//! object; [`StoredObject::url`] is the blob's public URL from the response. Delete takes the
//! same keys: the API's `urls` field accepts pathnames as well as blob URLs (so either may be
//! passed), and a blob that does not exist is not an error. A put cannot be retried inside
//! the call (its body stream is consumed), so every failure goes back to the job with the
//! API's `retry-after`.

use reqwest::header::{HeaderMap, AUTHORIZATION};
use reqwest::{Body, Response};
use serde::Deserialize;

use super::config::VercelConfig;
use super::http::{
    base_url, capped_text, counted, describe, from_reqwest, from_status, join_key, retry_after,
    Secret,
};
use super::{validate_key, BlobStore, ByteStream, DeleteReport, StorageError, StoredObject};

/// The API version this client speaks (`x-api-version`).
pub const API_VERSION: &str = "9";

/// Keys per `POST /delete`. The API documents no maximum; 100 keeps one request small and
/// one failure from failing a whole sweep.
pub const DELETE_BATCH: usize = 100;

/// The Vercel Blob store.
pub struct VercelStore {
    base: url::Url,
    token: Secret,
    http: reqwest::Client,
}

impl std::fmt::Debug for VercelStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VercelStore")
            .field("base", &self.base.as_str())
            .field("token", &self.token)
            .finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PutResponse {
    url: String,
    #[serde(default)]
    pathname: Option<String>,
    #[serde(default)]
    content_type: Option<String>,
}

#[derive(Deserialize, Default)]
struct ErrorBody {
    #[serde(default)]
    error: ErrorDetail,
}

#[derive(Deserialize, Default)]
struct ErrorDetail {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

impl VercelStore {
    /// Builds the store, reading the token from the variable named by `cfg.token_env`.
    pub fn from_config(cfg: &VercelConfig, http: reqwest::Client) -> anyhow::Result<Self> {
        let token = Secret::from_env(&cfg.token_env, "storage.vercel")?;
        Self::with_secret(&cfg.base_url, token, http)
    }

    /// Builds the store with a token given directly.
    pub fn new(base_url: &str, token: &str, http: reqwest::Client) -> anyhow::Result<Self> {
        Self::with_secret(base_url, Secret::new(token), http)
    }

    fn with_secret(base: &str, token: Secret, http: reqwest::Client) -> anyhow::Result<Self> {
        Ok(Self {
            base: base_url(base, "storage.vercel.base_url")?,
            token,
            http,
        })
    }

    fn request(&self, method: reqwest::Method, url: url::Url) -> reqwest::RequestBuilder {
        self.http
            .request(method, url)
            .header(AUTHORIZATION, format!("Bearer {}", self.token.expose()))
            .header("x-api-version", API_VERSION)
    }

    async fn delete_batch(&self, keys: &[String]) -> Result<(), StorageError> {
        let what = "Vercel Blob delete";
        let response = self
            .request(reqwest::Method::POST, join_key(&self.base, &[], "delete"))
            .json(&serde_json::json!({ "urls": keys }))
            .send()
            .await
            .map_err(|e| from_reqwest(e, what))?;
        if response.status().is_success() {
            return Ok(());
        }
        match api_error(response, what).await {
            // Deleting what is not there is done, whatever the API calls it.
            (code, _) if code == "not_found" => Ok(()),
            (_, e) => Err(e),
        }
    }
}

#[async_trait::async_trait]
impl BlobStore for VercelStore {
    fn name(&self) -> &str {
        "vercel"
    }

    async fn put(
        &self,
        key: &str,
        body: ByteStream,
        content_type: Option<&str>,
    ) -> Result<StoredObject, StorageError> {
        validate_key(key)?;
        let what = "Vercel Blob put";
        let (body, size) = counted(body);
        let mut request = self
            .request(reqwest::Method::PUT, join_key(&self.base, &[], key))
            .header("x-add-random-suffix", "0")
            .header("x-allow-overwrite", "1")
            .body(Body::wrap_stream(body));
        if let Some(ct) = content_type {
            request = request.header("x-content-type", ct);
        }
        let response = request.send().await.map_err(|e| from_reqwest(e, what))?;
        if !response.status().is_success() {
            return Err(api_error(response, what).await.1);
        }
        let put: PutResponse = serde_json::from_str(&capped_text(response).await)
            .map_err(|e| StorageError::retryable(format!("{what}: unreadable response: {e}")))?;
        let size = size.load(std::sync::atomic::Ordering::Relaxed);
        tracing::debug!(key, size, "stored in Vercel Blob");
        Ok(StoredObject {
            store: self.name().to_string(),
            key: put
                .pathname
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| key.to_string()),
            url: put.url,
            size,
            content_type: put
                .content_type
                .or_else(|| content_type.map(str::to_string)),
        })
    }

    async fn delete(&self, keys: &[String]) -> DeleteReport {
        let mut report = DeleteReport::default();
        let mut valid = Vec::with_capacity(keys.len());
        for key in keys {
            // Blob URLs are accepted as they are; pathnames must be valid keys.
            let is_url = key.starts_with("https://") || key.starts_with("http://");
            match validate_key(key) {
                Err(e) if !is_url => report.failed.push((key.clone(), e)),
                _ => valid.push(key.clone()),
            }
        }
        for batch in valid.chunks(DELETE_BATCH) {
            match self.delete_batch(batch).await {
                Ok(()) => report.deleted.extend_from_slice(batch),
                Err(e) => report.fail_all(batch, &e),
            }
        }
        report
    }
}

/// Reads an error response `{"error":{"code","message"}}`: returns the code and the error.
/// `rate_limited`, `service_unavailable` and `unknown_error` are retryable (with
/// `retry-after`); `forbidden`, `bad_request`, `store_not_found`, `store_suspended` and the
/// other documented codes are permanent; an unknown code is judged by the status.
async fn api_error(response: Response, what: &str) -> (String, StorageError) {
    let status = response.status();
    let headers: HeaderMap = response.headers().clone();
    let text = capped_text(response).await;
    let detail = serde_json::from_str::<ErrorBody>(&text)
        .map(|b| b.error)
        .unwrap_or_default();
    let code = detail.code;
    let message = if code.is_empty() {
        format!("{what}: HTTP {status}{}", describe(&text))
    } else {
        format!("{what}: HTTP {status} {code}{}", describe(&detail.message))
    };
    let error = match code.as_str() {
        "rate_limited" | "service_unavailable" | "unknown_error" | "internal_server_error" => {
            StorageError::Retryable {
                message,
                retry_after: retry_after(&headers),
            }
        }
        "forbidden"
        | "bad_request"
        | "store_not_found"
        | "store_suspended"
        | "not_found"
        | "not_allowed"
        | "content_type_not_allowed"
        | "file_too_large"
        | "client_token_pathname_mismatch"
        | "client_token_expired" => StorageError::Permanent { message },
        _ => match from_status(status, &headers, what, "") {
            StorageError::Retryable { retry_after, .. } => StorageError::Retryable {
                message,
                retry_after,
            },
            StorageError::Permanent { .. } => StorageError::Permanent { message },
        },
    };
    (code, error)
}
