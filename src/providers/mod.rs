//! AI providers (fal.ai, BytePlus ModelArk, Replicate) behind one trait, and the fake
//! provider that serves their dialects on loopback.

pub mod config;

pub use config::ProvidersConfig;
