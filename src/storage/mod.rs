//! Where generated outputs are copied: a `BlobStore` with local, S3-compatible and Vercel
//! Blob backends.

pub mod config;

pub use config::StorageConfig;
