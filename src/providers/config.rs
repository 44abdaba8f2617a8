//! `[providers]` configuration.

use serde::{Deserialize, Serialize};

/// `[providers]`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct ProvidersConfig {}
