//! A store in a local directory (development, the demo, single-machine deployments, or a
//! shared mount).
//!
//! A put writes a hidden sibling file (`.<name>.<uuid>.partial`), syncs it, then renames it
//! over the key: a reader never sees half an object, a second put of the same key replaces
//! the first atomically, and a failed or over-limit upload leaves nothing under the key. A
//! crash mid-upload can leave a `.partial` file behind; any older than a day can be removed.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use anyhow::Context;
use futures::StreamExt;
use tokio::io::AsyncWriteExt;

use super::{validate_key, BlobStore, ByteStream, DeleteReport, StorageError, StoredObject};

/// The local-directory store.
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    /// Opens (creating if needed) the store rooted at `dir`. The root is made absolute, so
    /// the `file://` URLs of stored objects do not depend on the working directory.
    pub fn new(dir: impl AsRef<Path>) -> anyhow::Result<Self> {
        let dir = dir.as_ref();
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating storage.local.dir {}", dir.display()))?;
        let root = dir
            .canonicalize()
            .with_context(|| format!("resolving storage.local.dir {}", dir.display()))?;
        Ok(Self { root })
    }

    /// The absolute root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The file that holds `key` (which must have passed [`validate_key`]).
    pub fn path_of(&self, key: &str) -> Result<PathBuf, StorageError> {
        validate_key(key)?;
        Ok(key.split('/').fold(self.root.clone(), |p, s| p.join(s)))
    }

    /// Removes the directories a deleted key leaves empty, up to the root: key paths
    /// often name their user (`outputs/<user>/...`), and an erased user's name must not
    /// stay behind as an empty directory. Stops at the first directory that is not empty.
    async fn remove_empty_parents(&self, path: &Path) {
        let mut dir = path.parent();
        while let Some(d) = dir {
            if d == self.root
                || !d.starts_with(&self.root)
                || tokio::fs::remove_dir(d).await.is_err()
            {
                return;
            }
            dir = d.parent();
        }
    }

    async fn write(&self, path: &Path, mut body: ByteStream) -> Result<u64, StorageError> {
        let parent = path.parent().expect("a key has at least one segment");
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|e| io_error("creating the key's directory", e))?;
        let name = path.file_name().expect("a key's last segment is a name");
        let temp = parent.join(format!(
            ".{}.{}.partial",
            name.to_string_lossy(),
            uuid::Uuid::new_v4().simple()
        ));
        let result = async {
            // A delete may remove the (empty) directory between its creation and this
            // file's: create it once more then.
            let mut file = match tokio::fs::File::create(&temp).await {
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    tokio::fs::create_dir_all(parent)
                        .await
                        .map_err(|e| io_error("creating the key's directory", e))?;
                    tokio::fs::File::create(&temp).await
                }
                other => other,
            }
            .map_err(|e| io_error("creating the temporary file", e))?;
            let mut size = 0u64;
            while let Some(chunk) = body.next().await {
                let chunk = chunk.map_err(|e| {
                    StorageError::retryable(format!("reading the body to store: {e}"))
                })?;
                file.write_all(&chunk)
                    .await
                    .map_err(|e| io_error("writing the temporary file", e))?;
                size += chunk.len() as u64;
            }
            // Durable before it is visible: the pipeline records the output as stored in the
            // database right after this returns.
            file.sync_all()
                .await
                .map_err(|e| io_error("syncing the temporary file", e))?;
            drop(file);
            tokio::fs::rename(&temp, path)
                .await
                .map_err(|e| io_error("renaming the temporary file over the key", e))?;
            Ok(size)
        }
        .await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&temp).await;
        }
        result
    }
}

#[async_trait::async_trait]
impl BlobStore for LocalStore {
    fn name(&self) -> &str {
        "local"
    }

    async fn put(
        &self,
        key: &str,
        body: ByteStream,
        content_type: Option<&str>,
    ) -> Result<StoredObject, StorageError> {
        let path = self.path_of(key)?;
        let size = self.write(&path, body).await?;
        let url = url::Url::from_file_path(&path)
            .map_err(|()| StorageError::permanent(format!("{} has no file URL", path.display())))?;
        tracing::debug!(key, size, "stored in the local store");
        Ok(StoredObject::as_given(
            self.name(),
            key,
            url.to_string(),
            size,
            content_type,
        ))
    }

    async fn delete(&self, keys: &[String]) -> DeleteReport {
        let mut report = DeleteReport::default();
        for key in keys {
            let outcome = match self.path_of(key) {
                Ok(path) => match tokio::fs::remove_file(&path).await {
                    Ok(()) => {
                        self.remove_empty_parents(&path).await;
                        Ok(())
                    }
                    Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(io_error("removing the file", e)),
                },
                Err(e) => Err(e),
            };
            match outcome {
                Ok(()) => report.deleted.push(key.clone()),
                Err(e) => report.failed.push((key.clone(), e)),
            }
        }
        report
    }
}

/// Permission and path-shape errors cannot heal by themselves; a full disk, a read-only
/// remount or an I/O error of a network mount may.
fn io_error(what: &str, e: std::io::Error) -> StorageError {
    let message = format!("local store: {what}: {e}");
    match e.kind() {
        ErrorKind::PermissionDenied
        | ErrorKind::InvalidInput
        | ErrorKind::IsADirectory
        | ErrorKind::NotADirectory => StorageError::permanent(message),
        _ => StorageError::retryable(message),
    }
}
