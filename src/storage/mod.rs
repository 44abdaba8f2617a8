//! Where generated outputs are copied, and where the retention jobs delete them: one
//! [`BlobStore`] trait with a local-directory, an S3-compatible, a Vercel Blob and a Supabase
//! Storage backend, and [`copy_from_url`], which streams a provider's output into a store.
//!
//! Providers delete outputs within hours (Replicate after 1 h), so the pipeline copies each
//! output as soon as a generation succeeds, under a key derived from the generation: a copy
//! repeated after a crash overwrites the same object instead of leaving a second one. Bodies
//! are streamed end to end (outputs can be hundreds of MB) and never held in memory whole.
//!
//! Errors say what the job should do next ([`StorageError::Retryable`] with the store's
//! `Retry-After`, or [`StorageError::Permanent`]), so a caller decides with a `match`.
//! Keys are checked once, here ([`validate_key`]), so every backend accepts and refuses the
//! same keys. Secrets are read from the environment when a store is built and appear in no
//! `Debug` output, log line or error. See `docs/storage.md`.

pub mod config;
mod copy;
mod http;
pub mod local;
mod registry;
pub mod s3;
pub mod supabase;
pub mod vercel;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};

pub use config::StorageConfig;
pub use copy::{copy_from_url, copy_output, CopyFailure};
pub use registry::Stores;

/// A body to store: a stream of chunks, read once. Outputs can be hundreds of MB, so no
/// backend collects it whole (S3 buffers one multipart part at a time).
pub type ByteStream = futures::stream::BoxStream<'static, Result<bytes::Bytes, std::io::Error>>;

/// Where a stored object lives: store name (`local` | `s3` | `vercel` | `supabase`), key
/// (the path inside the store, as given to [`BlobStore::put`]), and a URL the product can
/// hand out (`file://` for local, the object's URL for S3, Vercel and Supabase).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StoredObject {
    /// The store's name ([`BlobStore::name`]).
    pub store: String,
    /// The key inside the store; [`BlobStore::delete`] takes it back.
    pub key: String,
    /// A URL for the object.
    pub url: String,
    /// Bytes stored.
    pub size: u64,
    /// The content type given to `put`, if any.
    pub content_type: Option<String>,
}

impl StoredObject {
    /// What `store` stored under `key`, as given to `put` with `content_type`: the record
    /// of a backend that keeps the key and content type it was given.
    pub fn as_given(
        store: &str,
        key: &str,
        url: String,
        size: u64,
        content_type: Option<&str>,
    ) -> Self {
        Self {
            store: store.to_string(),
            key: key.to_string(),
            url,
            size,
            content_type: content_type.map(str::to_string),
        }
    }
}

/// Why a store operation failed, and therefore whether to try again.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StorageError {
    /// Try again later: rate limits, 5xx, timeouts, dropped connections, a full disk.
    #[error("storage (retryable): {message}")]
    Retryable {
        /// What failed; never contains a secret.
        message: String,
        /// How long the store asked us to wait (`Retry-After`), if it said.
        retry_after: Option<Duration>,
    },
    /// Trying again cannot help: bad credentials, a missing bucket or store, a refused key,
    /// an expired source, an object over the size limit.
    #[error("storage (permanent): {message}")]
    Permanent {
        /// What failed; never contains a secret.
        message: String,
    },
}

impl StorageError {
    /// A retryable error without a requested delay.
    pub fn retryable(message: impl Into<String>) -> Self {
        Self::Retryable {
            message: message.into(),
            retry_after: None,
        }
    }

    /// A permanent error.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self::Permanent {
            message: message.into(),
        }
    }

    /// Whether trying again may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Retryable { .. })
    }

    /// The message, without the retryable/permanent prefix of `Display`.
    pub fn message(&self) -> &str {
        match self {
            Self::Retryable { message, .. } | Self::Permanent { message } => message,
        }
    }
}

/// Outcome of a batch delete; "already gone" counts as deleted.
#[derive(Debug, Default)]
pub struct DeleteReport {
    /// Keys that no longer exist in the store.
    pub deleted: Vec<String>,
    /// Keys that may still exist, with why.
    pub failed: Vec<(String, StorageError)>,
}

impl DeleteReport {
    /// True when every key was deleted (or was already gone).
    pub fn is_complete(&self) -> bool {
        self.failed.is_empty()
    }

    /// Records the same failure for each of `keys` (a batch request that failed as a whole).
    fn fail_all(&mut self, keys: &[String], error: &StorageError) {
        self.failed
            .extend(keys.iter().map(|k| (k.clone(), error.clone())));
    }
}

/// A place to keep blobs. Implementations: [`local::LocalStore`], [`s3::S3Store`],
/// [`vercel::VercelStore`], [`supabase::SupabaseStore`].
#[async_trait::async_trait]
pub trait BlobStore: Send + Sync {
    /// The store's name, recorded in [`StoredObject::store`].
    fn name(&self) -> &str;

    /// Stores `body` (streamed; outputs can be hundreds of MB) under `key`, overwriting: the
    /// same key twice is idempotent (the pipeline may copy an output again after a crash).
    /// If `body` yields an error, nothing is left under `key` and the error is returned.
    async fn put(
        &self,
        key: &str,
        body: ByteStream,
        content_type: Option<&str>,
    ) -> Result<StoredObject, StorageError>;

    /// Deletes `keys`; a key that does not exist counts as deleted. Never fails as a whole:
    /// each key is reported in [`DeleteReport::deleted`] or [`DeleteReport::failed`].
    async fn delete(&self, keys: &[String]) -> DeleteReport;

    /// A URL to hand out for `key` that stops working after `ttl` (a presigned or signed
    /// URL), where the store can make one; `Ok(None)` where it cannot, and then
    /// [`StoredObject::url`] is what there is (see `docs/security.md`).
    async fn share_url(&self, key: &str, ttl: Duration) -> Result<Option<String>, StorageError> {
        let _ = (key, ttl);
        Ok(None)
    }
}

/// Builds the configured store (`storage.backend`), reading its secret from the environment.
pub fn from_config(cfg: &StorageConfig) -> anyhow::Result<Arc<dyn BlobStore>> {
    build(&cfg.backend, cfg)
}

/// Builds the store called `name` from its section of `cfg`.
fn build(name: &str, cfg: &StorageConfig) -> anyhow::Result<Arc<dyn BlobStore>> {
    let store: Arc<dyn BlobStore> = match name {
        "local" => Arc::new(local::LocalStore::new(&cfg.local.dir)?),
        "s3" => Arc::new(s3::S3Store::from_config(&cfg.s3)?),
        "vercel" => Arc::new(vercel::VercelStore::from_config(
            &cfg.vercel,
            http::client().context("building the HTTP client for Vercel Blob")?,
        )?),
        "supabase" => Arc::new(supabase::SupabaseStore::from_config(
            &cfg.supabase,
            http::client().context("building the HTTP client for Supabase Storage")?,
        )?),
        other => {
            anyhow::bail!("store {other:?}: expected \"local\", \"s3\", \"vercel\" or \"supabase\"")
        }
    };
    Ok(store)
}

/// A [`ByteStream`] of one chunk (small bodies, tests).
pub fn stream_from_bytes(bytes: impl Into<bytes::Bytes>) -> ByteStream {
    Box::pin(futures::stream::once(std::future::ready(Ok(bytes.into()))))
}

/// Longest key accepted (S3 allows 1024 bytes; Vercel's pathname limit is 950).
pub const MAX_KEY_LEN: usize = 950;

/// Checks that `key` is a relative `/`-separated path that means the same thing in every
/// store: no empty, `.` or `..` segment, no leading `/`, no backslash or control character,
/// at most [`MAX_KEY_LEN`] bytes. A local store could otherwise be made to write outside its
/// directory, and the HTTP stores would resolve `..` in a URL to another object.
pub fn validate_key(key: &str) -> Result<(), StorageError> {
    let refuse = |why: &str| {
        Err(StorageError::permanent(format!(
            "key {key:?} refused: {why}"
        )))
    };
    if key.is_empty() {
        return refuse("empty");
    }
    if key.len() > MAX_KEY_LEN {
        return refuse("longer than 950 bytes");
    }
    if key.starts_with('/') {
        return refuse("absolute path");
    }
    if key.chars().any(|c| c == '\\' || c.is_control()) {
        return refuse("backslash or control character");
    }
    if key
        .split('/')
        .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return refuse("empty, '.' or '..' path segment");
    }
    Ok(())
}
