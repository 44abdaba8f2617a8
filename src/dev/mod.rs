//! Development tools, kept apart from the production code paths: the fake providers
//! (fal.ai, BytePlus, Replicate, Plisio) and fake blob stores (Vercel, Supabase) that
//! serve on loopback, the benchmarks behind `genq bench`, and the local demo behind
//! `genq demo`.
//!
//! They ship in the one `genq` binary (so `genq fake-provider`, `genq bench` and
//! `genq demo` need no second build), but nothing on a production path may import
//! this module: only `src/cli`'s dev commands, `src/main.rs` and the tests do. The test
//! `dev_tools::production_code_does_not_import_dev_tools` (tests/engine/dev_tools.rs)
//! keeps it so.

pub mod bench;
pub mod demo;
pub mod fake_provider;
pub mod fake_stores;
pub mod sse;
