//! Scenarios: providers.
