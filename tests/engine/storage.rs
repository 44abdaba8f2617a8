//! Scenarios: storage.
