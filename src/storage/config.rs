//! `[storage]` configuration.

use serde::{Deserialize, Serialize};

/// `[storage]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {}
