//! Every store a blob may live in, by name. Outputs go to one store (`storage.backend`),
//! but the backend registers its uploads in whichever store it uses (`genq.blobs.store`),
//! so the retention jobs need each of them: a store is built from its `[storage.NAME]`
//! section the first time a blob of it is deleted, and kept.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::{build, BlobStore, StorageConfig, StorageError};

/// The stores of this daemon, built on first use.
pub struct Stores {
    config: StorageConfig,
    output: Arc<dyn BlobStore>,
    built: Mutex<HashMap<String, Arc<dyn BlobStore>>>,
}

impl Stores {
    /// The stores configured in `config`, with `output` (the store outputs are copied to)
    /// already built.
    pub fn new(config: &StorageConfig, output: Arc<dyn BlobStore>) -> Self {
        let mut built = HashMap::new();
        built.insert(output.name().to_string(), output.clone());
        Self {
            config: config.clone(),
            output,
            built: Mutex::new(built),
        }
    }

    /// Adds (or replaces) a store under its own name, e.g. one pointed at a test server.
    pub fn with(self, store: Arc<dyn BlobStore>) -> Self {
        crate::sync::lock(&self.built).insert(store.name().to_string(), store);
        self
    }

    /// The store outputs and exports are written to.
    pub fn output(&self) -> &Arc<dyn BlobStore> {
        &self.output
    }

    /// The store called `name`, built from its configuration section if not yet built. A
    /// store whose section is incomplete is a retryable error: the blob stays due (and
    /// counts as overdue) until an operator configures the store.
    pub fn get(&self, name: &str) -> Result<Arc<dyn BlobStore>, StorageError> {
        if let Some(store) = crate::sync::lock(&self.built).get(name) {
            return Ok(store.clone());
        }
        let store = build(name, &self.config).map_err(|e| {
            StorageError::retryable(format!(
                "store {name:?} is not usable in this daemon: {e:#} (configure [storage.{name}])"
            ))
        })?;
        Ok(crate::sync::lock(&self.built)
            .entry(name.to_string())
            .or_insert(store)
            .clone())
    }
}
