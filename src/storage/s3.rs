//! A store in an S3-compatible bucket (AWS S3, Cloudflare R2, MinIO, Supabase Storage's S3
//! endpoint), through `object_store`'s S3 client.
//!
//! A body that fits in one part ([`PART_SIZE`]) goes up as a single PUT; a longer one as a
//! multipart upload with at most [`PARTS_IN_FLIGHT`] parts buffered and uploading at once,
//! so memory stays bounded whatever the object's size. A failed upload is aborted. A daemon
//! killed mid-upload leaves an incomplete multipart upload, which S3 keeps (and bills) until
//! a lifecycle rule (`AbortIncompleteMultipartUpload`) removes it: configure one on the
//! bucket. Deletes go one request per key, a few at a time, so each key gets its own outcome.

use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use futures::{FutureExt, StreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{
    Attribute, Attributes, BackoffConfig, ObjectStore, PutMultipartOptions, PutOptions, PutPayload,
    RetryConfig, WriteMultipart,
};

use super::config::S3Config;
use super::http::{chain, join_key};
use super::{validate_key, BlobStore, ByteStream, DeleteReport, StorageError, StoredObject};

/// Size of a multipart part, and the largest body sent as a single PUT. S3's minimum part
/// size is 5 MiB and its maximum part count 10,000: 8 MiB parts allow objects up to 80 GB.
pub const PART_SIZE: usize = 8 * 1024 * 1024;

/// Parts buffered or uploading at once for one object (memory: this many × [`PART_SIZE`]).
pub const PARTS_IN_FLIGHT: usize = 4;

/// Keys deleted concurrently by one [`BlobStore::delete`] call.
const DELETES_IN_FLIGHT: usize = 16;

/// In-call retries of `object_store` (5xx, 429, dropped connections) are kept short: the
/// job's own retry, with its stored backoff, is the long one. `object_store`'s default
/// retries for up to 3 minutes, holding a worker slot all that time.
fn retry_config() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig::default(),
        max_retries: 3,
        retry_timeout: Duration::from_secs(30),
    }
}

/// The S3-compatible store.
pub struct S3Store {
    store: AmazonS3,
    bucket: String,
    public_base_url: Option<url::Url>,
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Store")
            .field("bucket", &self.bucket)
            .field(
                "public_base_url",
                &self.public_base_url.as_ref().map(|u| u.as_str()),
            )
            .finish_non_exhaustive()
    }
}

impl S3Store {
    /// Builds the store, reading the access key pair from the environment variables named
    /// in `cfg` (both, or neither for the instance's credentials).
    pub fn from_config(cfg: &S3Config) -> anyhow::Result<Self> {
        let bucket = cfg.bucket.trim();
        if bucket.is_empty() {
            anyhow::bail!("storage.s3.bucket must be set when storage.backend = \"s3\"");
        }
        let mut builder = AmazonS3Builder::new()
            .with_bucket_name(bucket)
            .with_region(cfg.region.trim())
            .with_virtual_hosted_style_request(cfg.virtual_hosted_style)
            .with_retry(retry_config());
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        match (env(&cfg.access_key_id_env), env(&cfg.secret_access_key_env)) {
            (Some(id), Some(secret)) => {
                builder = builder
                    .with_access_key_id(id.trim())
                    .with_secret_access_key(secret.trim());
            }
            (None, None) => {}
            _ => anyhow::bail!(
                "storage.s3: set both {} and {}, or neither (to use the instance's credentials)",
                cfg.access_key_id_env,
                cfg.secret_access_key_env
            ),
        }
        let endpoint = cfg.endpoint.trim();
        if !endpoint.is_empty() {
            let mut url = url::Url::parse(endpoint)
                .with_context(|| format!("storage.s3.endpoint {endpoint:?}"))?;
            if !matches!(url.scheme(), "http" | "https") {
                anyhow::bail!("storage.s3.endpoint {endpoint:?}: expected an http(s) URL");
            }
            // object_store expects a virtual-hosted endpoint to name the bucket already.
            let host = url.host_str().context("storage.s3.endpoint has no host")?;
            if cfg.virtual_hosted_style && !host.starts_with(&format!("{bucket}.")) {
                let host = format!("{bucket}.{host}");
                url.set_host(Some(&host))
                    .with_context(|| format!("storage.s3.endpoint with bucket host {host:?}"))?;
            }
            builder = builder
                .with_allow_http(url.scheme() == "http")
                .with_endpoint(url.as_str().trim_end_matches('/'));
        }
        let store = builder.build().context("building the S3 client")?;
        let public_base_url = match cfg.public_base_url.trim() {
            "" => None,
            raw => Some(super::http::base_url(raw, "storage.s3.public_base_url")?),
        };
        Ok(Self {
            store,
            bucket: bucket.to_string(),
            public_base_url,
        })
    }

    fn url_of(&self, key: &str) -> String {
        match &self.public_base_url {
            Some(base) => join_key(base, &[], key).to_string(),
            None => format!("s3://{}/{key}", self.bucket),
        }
    }

    async fn multipart(
        &self,
        location: &Path,
        attributes: Attributes,
        first: Vec<Bytes>,
        mut body: ByteStream,
    ) -> Result<u64, StorageError> {
        let opts = PutMultipartOptions {
            attributes,
            ..Default::default()
        };
        let upload = self
            .store
            .put_multipart_opts(location, opts)
            .await
            .map_err(|e| classify(e, "starting a multipart upload"))?;
        let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
        let mut size = 0u64;
        for chunk in first {
            size += chunk.len() as u64;
            writer.put(chunk);
        }
        let pumped: Result<(), StorageError> = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(body_error)?;
                writer
                    .wait_for_capacity(PARTS_IN_FLIGHT)
                    .await
                    .map_err(|e| classify(e, "uploading a part"))?;
                size += chunk.len() as u64;
                writer.put(chunk);
            }
            Ok(())
        }
        .await;
        match pumped {
            Ok(()) => {
                writer
                    .finish()
                    .await
                    .map_err(|e| classify(e, "completing the multipart upload"))?;
                Ok(size)
            }
            Err(e) => {
                if let Err(abort) = writer.abort().await {
                    tracing::warn!(key = %location, error = %chain(&abort), "aborting a failed multipart upload failed");
                }
                Err(e)
            }
        }
    }

    async fn delete_one(&self, key: &str) -> Result<(), StorageError> {
        let location = location(key)?;
        match self.store.delete(&location).await {
            Ok(()) => Ok(()),
            // S3 answers 204 for a missing key; a 404 means the bucket is missing, and a
            // wrong bucket name must not make deletions look done.
            Err(e @ object_store::Error::NotFound { .. }) if chain(&e).contains("NoSuchBucket") => {
                Err(classify(e, "deleting"))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(classify(e, "deleting")),
        }
    }
}

#[async_trait::async_trait]
impl BlobStore for S3Store {
    fn name(&self) -> &str {
        "s3"
    }

    async fn put(
        &self,
        key: &str,
        mut body: ByteStream,
        content_type: Option<&str>,
    ) -> Result<StoredObject, StorageError> {
        let location = location(key)?;
        let mut attributes = Attributes::new();
        if let Some(ct) = content_type {
            attributes.insert(Attribute::ContentType, ct.to_string().into());
        }
        // Read up to one part: a short body is one PUT instead of three multipart calls.
        let mut first = Vec::new();
        let mut buffered = 0usize;
        let mut ended = false;
        while buffered < PART_SIZE {
            match body.next().await {
                Some(chunk) => {
                    let chunk = chunk.map_err(body_error)?;
                    buffered += chunk.len();
                    first.push(chunk);
                }
                None => {
                    ended = true;
                    break;
                }
            }
        }
        let size = if ended {
            let opts = PutOptions {
                attributes,
                ..Default::default()
            };
            self.store
                .put_opts(&location, PutPayload::from_iter(first), opts)
                .await
                .map_err(|e| classify(e, "uploading"))?;
            buffered as u64
        } else {
            self.multipart(&location, attributes, first, body).await?
        };
        tracing::debug!(key, size, bucket = %self.bucket, "stored in S3");
        Ok(StoredObject::as_given(
            self.name(),
            key,
            self.url_of(key),
            size,
            content_type,
        ))
    }

    async fn delete(&self, keys: &[String]) -> DeleteReport {
        let deletes: Vec<_> = keys
            .iter()
            .map(|key| {
                let key = key.clone();
                async move {
                    let outcome = self.delete_one(&key).await;
                    (key, outcome)
                }
                .boxed()
            })
            .collect();
        let outcomes: Vec<_> = futures::stream::iter(deletes)
            .buffer_unordered(DELETES_IN_FLIGHT)
            .collect()
            .await;
        let mut report = DeleteReport::default();
        for (key, outcome) in outcomes {
            match outcome {
                Ok(()) => report.deleted.push(key),
                Err(e) => report.failed.push((key, e)),
            }
        }
        report
    }

    /// A SigV4 presigned GET, valid for `ttl` capped at 7 days (SigV4's longest).
    async fn share_url(&self, key: &str, ttl: Duration) -> Result<Option<String>, StorageError> {
        use object_store::signer::Signer;
        let location = location(key)?;
        let ttl = ttl.min(MAX_PRESIGN);
        let url = self
            .store
            .signed_url(reqwest::Method::GET, &location, ttl)
            .await
            .map_err(|e| classify(e, "presigning"))?;
        Ok(Some(url.to_string()))
    }
}

/// SigV4 presigned URLs last at most 7 days.
const MAX_PRESIGN: Duration = Duration::from_secs(7 * 24 * 3600);

fn location(key: &str) -> Result<Path, StorageError> {
    validate_key(key)?;
    Path::parse(key).map_err(|e| StorageError::permanent(format!("key {key:?} refused: {e}")))
}

fn body_error(e: std::io::Error) -> StorageError {
    StorageError::retryable(format!("reading the body to store: {e}"))
}

/// Maps an `object_store` error. Its typed variants cover 404, 401, 403, 409 and 412; every
/// other HTTP failure arrives as `Generic` wrapping a `RetryError` that `object_store` 0.12
/// does not export, so the status is read from its message ("status code: 400 …"), here and
/// nowhere else. Anything unrecognised is retryable: the job's attempt limit bounds it.
fn classify(e: object_store::Error, what: &str) -> StorageError {
    use object_store::Error as E;
    let message = format!("S3 {what}: {}", chain(&e));
    match &e {
        E::NotFound { .. } => {
            StorageError::permanent(format!("{message} (does the bucket exist?)"))
        }
        E::PermissionDenied { .. }
        | E::Unauthenticated { .. }
        | E::InvalidPath { .. }
        | E::NotSupported { .. }
        | E::NotImplemented
        | E::UnknownConfigurationKey { .. }
        | E::AlreadyExists { .. }
        | E::Precondition { .. } => StorageError::permanent(message),
        E::Generic { .. } => match status_in(&message) {
            Some(s) if (400..500).contains(&s) && s != 408 && s != 429 => {
                StorageError::permanent(message)
            }
            _ if message.contains("incorrectly configured region") => {
                StorageError::permanent(message)
            }
            _ => StorageError::retryable(message),
        },
        _ => StorageError::retryable(message),
    }
}

/// The HTTP status in an `object_store` error message, if it has one.
fn status_in(message: &str) -> Option<u16> {
    let at = message.find("status code: ")? + "status code: ".len();
    message.get(at..at + 3)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_is_read_from_generic_errors() {
        assert_eq!(
            status_in("Error performing PUT http://x in 1ms - Server returned non-2xx status code: 400 Bad Request: <Error/>"),
            Some(400)
        );
        assert_eq!(status_in("connection refused"), None);
    }

    #[test]
    fn config_needs_a_bucket_and_both_keys_or_neither() {
        let cfg = S3Config::default();
        assert!(S3Store::from_config(&cfg).is_err());
        let cfg = S3Config {
            bucket: "b".into(),
            access_key_id_env: "GENQ_TEST_S3_ONLY_ID".into(),
            secret_access_key_env: "GENQ_TEST_S3_UNSET_SECRET".into(),
            ..S3Config::default()
        };
        std::env::set_var("GENQ_TEST_S3_ONLY_ID", "id");
        let err = S3Store::from_config(&cfg).unwrap_err().to_string();
        assert!(err.contains("both"), "{err}");
    }
}
