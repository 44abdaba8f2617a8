//! Inbound webhooks as a domain: [`verify`] checks a callback on its raw bytes (signatures,
//! tokens, timestamps, fal's JWKS) and [`inbox`] stores it once in `genq.webhook_events`
//! and acts on it. The axum handlers (`crate::http::webhooks`) only read headers and map
//! outcomes to status codes.

pub mod inbox;
pub mod verify;

pub use verify::Webhooks;
