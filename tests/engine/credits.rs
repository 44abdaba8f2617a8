//! Scenarios: credits.
