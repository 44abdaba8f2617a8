//! A store in a Supabase Storage bucket, through its REST API with the service key.
//!
//! Put is `POST /storage/v1/object/{bucket}/{key}` with `x-upsert: true` (a repeated put
//! replaces the object). Delete is `DELETE /storage/v1/object/{bucket}` with up to
//! [`DELETE_BATCH`] keys as `prefixes`; the answer lists the objects it removed and leaves out
//! those that were not there, which count as deleted, so a batch that answers 2xx is done.
//! The URL of a stored object is its public URL, which serves only from a public bucket; for a
//! private bucket the product signs a URL from the bucket and key. [`BlobStore::share_url`]
//! signs one (`POST /storage/v1/object/sign/{bucket}/{key}`), used for data exports.

use std::time::Duration;

use reqwest::header::{AUTHORIZATION, CONTENT_TYPE};
use reqwest::Body;

use super::config::SupabaseConfig;
use super::http::{base_url, capped_text, counted, from_reqwest, from_status, join_key, Secret};
use super::{validate_key, BlobStore, ByteStream, DeleteReport, StorageError, StoredObject};

/// Keys per delete request: the API's maximum.
pub const DELETE_BATCH: usize = 1000;

/// The Supabase Storage store.
pub struct SupabaseStore {
    base: url::Url,
    bucket: String,
    key: Secret,
    http: reqwest::Client,
}

impl std::fmt::Debug for SupabaseStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SupabaseStore")
            .field("base", &self.base.as_str())
            .field("bucket", &self.bucket)
            .field("key", &self.key)
            .finish_non_exhaustive()
    }
}

impl SupabaseStore {
    /// Builds the store, reading the service key from the variable named by
    /// `cfg.service_key_env`.
    pub fn from_config(cfg: &SupabaseConfig, http: reqwest::Client) -> anyhow::Result<Self> {
        let key = Secret::from_env(&cfg.service_key_env, "storage.supabase")?;
        Self::with_secret(&cfg.url, &cfg.bucket, key, http)
    }

    /// Builds the store with a service key given directly.
    pub fn new(
        url: &str,
        bucket: &str,
        service_key: &str,
        http: reqwest::Client,
    ) -> anyhow::Result<Self> {
        Self::with_secret(url, bucket, Secret::new(service_key), http)
    }

    fn with_secret(
        url: &str,
        bucket: &str,
        key: Secret,
        http: reqwest::Client,
    ) -> anyhow::Result<Self> {
        if url.trim().is_empty() || bucket.trim().is_empty() {
            anyhow::bail!("storage.supabase.url and storage.supabase.bucket must be set");
        }
        if bucket.contains('/') {
            anyhow::bail!("storage.supabase.bucket {bucket:?} must not contain '/'");
        }
        Ok(Self {
            base: base_url(url, "storage.supabase.url")?,
            bucket: bucket.trim().to_string(),
            key,
            http,
        })
    }

    /// A request with the service key: as `apikey`, and as a bearer token too unless it is a
    /// new-style `sb_secret_…` key, which is accepted in `apikey` only.
    fn request(&self, method: reqwest::Method, url: url::Url) -> reqwest::RequestBuilder {
        let key = self.key.expose();
        let request = self.http.request(method, url).header("apikey", key);
        if key.starts_with("sb_secret_") {
            request
        } else {
            request.header(AUTHORIZATION, format!("Bearer {key}"))
        }
    }

    /// Sends `body` as JSON and returns the answer's text; an error status is mapped.
    async fn call_json(
        &self,
        method: reqwest::Method,
        url: url::Url,
        body: &serde_json::Value,
        what: &str,
    ) -> Result<String, StorageError> {
        let response = self
            .request(method, url)
            .json(body)
            .send()
            .await
            .map_err(|e| from_reqwest(e, what))?;
        let status = response.status();
        let headers = response.headers().clone();
        let text = capped_text(response).await;
        if !status.is_success() {
            return Err(from_status(status, &headers, what, &text));
        }
        Ok(text)
    }

    async fn delete_batch(&self, keys: &[String]) -> Result<usize, StorageError> {
        let what = "Supabase Storage delete";
        let url = join_key(&self.base, &["storage", "v1", "object"], &self.bucket);
        let body = serde_json::json!({ "prefixes": keys });
        let text = self
            .call_json(reqwest::Method::DELETE, url, &body, what)
            .await?;
        // Only for the log: how many existed. Missing ones are left out of the answer.
        let removed = serde_json::from_str::<Vec<serde_json::Value>>(&text).map_or(0, |v| v.len());
        Ok(removed)
    }
}

#[async_trait::async_trait]
impl BlobStore for SupabaseStore {
    fn name(&self) -> &str {
        "supabase"
    }

    async fn put(
        &self,
        key: &str,
        body: ByteStream,
        content_type: Option<&str>,
    ) -> Result<StoredObject, StorageError> {
        validate_key(key)?;
        let what = "Supabase Storage put";
        let (body, size) = counted(body);
        let url = join_key(&self.base, &["storage", "v1", "object", &self.bucket], key);
        let response = self
            .request(reqwest::Method::POST, url)
            .header("x-upsert", "true")
            .header(
                CONTENT_TYPE,
                content_type.unwrap_or("application/octet-stream"),
            )
            .body(Body::wrap_stream(body))
            .send()
            .await
            .map_err(|e| from_reqwest(e, what))?;
        let status = response.status();
        if !status.is_success() {
            let headers = response.headers().clone();
            let text = capped_text(response).await;
            return Err(from_status(status, &headers, what, &text));
        }
        let size = size.load(std::sync::atomic::Ordering::Relaxed);
        let public = join_key(
            &self.base,
            &["storage", "v1", "object", "public", &self.bucket],
            key,
        );
        tracing::debug!(key, size, bucket = %self.bucket, "stored in Supabase Storage");
        Ok(StoredObject::as_given(
            self.name(),
            key,
            public.to_string(),
            size,
            content_type,
        ))
    }

    async fn delete(&self, keys: &[String]) -> DeleteReport {
        let mut report = DeleteReport::default();
        let mut valid = Vec::with_capacity(keys.len());
        for key in keys {
            match validate_key(key) {
                Ok(()) => valid.push(key.clone()),
                Err(e) => report.failed.push((key.clone(), e)),
            }
        }
        for batch in valid.chunks(DELETE_BATCH) {
            match self.delete_batch(batch).await {
                Ok(removed) => {
                    tracing::debug!(
                        requested = batch.len(),
                        removed,
                        bucket = %self.bucket,
                        "deleted from Supabase Storage (the rest were already gone)"
                    );
                    report.deleted.extend_from_slice(batch);
                }
                Err(e) => report.fail_all(batch, &e),
            }
        }
        report
    }

    /// A signed URL from `POST /storage/v1/object/sign/{bucket}/{key}`, valid for `ttl`.
    async fn share_url(&self, key: &str, ttl: Duration) -> Result<Option<String>, StorageError> {
        validate_key(key)?;
        let what = "Supabase Storage sign";
        let url = join_key(
            &self.base,
            &["storage", "v1", "object", "sign", &self.bucket],
            key,
        );
        let body = serde_json::json!({ "expiresIn": ttl.as_secs().max(1) });
        let text = self
            .call_json(reqwest::Method::POST, url, &body, what)
            .await?;
        // `signedURL` is relative to the Storage API: `/object/sign/{bucket}/{key}?token=…`.
        let signed = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["signedURL"].as_str().map(str::to_string))
            .ok_or_else(|| {
                StorageError::retryable(format!("{what}: no signedURL in the answer"))
            })?;
        let full = self
            .base
            .join(&format!("storage/v1/{}", signed.trim_start_matches('/')))
            .map_err(|e| StorageError::permanent(format!("{what}: unusable signedURL: {e}")))?;
        Ok(Some(full.to_string()))
    }
}
