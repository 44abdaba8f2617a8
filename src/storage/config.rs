//! `[storage]` configuration.
//!
//! Secrets are never configuration values: the file names the environment variable that
//! holds each one, and the store reads it when it is built (so a config dump, `Debug` output
//! or an error message can never contain a key).

use serde::{Deserialize, Serialize};

/// `[storage]`: which store outputs are copied to, and each backend's settings.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct StorageConfig {
    /// The store: `local`, `s3`, `vercel` or `supabase`. Defaults to `local`.
    pub backend: String,
    /// Largest object copied from a provider's URL; a bigger output fails permanently.
    /// Defaults to 2 GiB (2147483648).
    pub max_object_bytes: u64,
    /// `[storage.local]`.
    pub local: LocalConfig,
    /// `[storage.s3]`.
    pub s3: S3Config,
    /// `[storage.vercel]`.
    pub vercel: VercelConfig,
    /// `[storage.supabase]`.
    pub supabase: SupabaseConfig,
}

/// `[storage.local]`: a directory on this machine (or a shared mount).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct LocalConfig {
    /// Root directory of the store; created if missing. Defaults to `./data/blobs`.
    pub dir: String,
}

/// `[storage.s3]`: any S3-compatible store (AWS S3, Cloudflare R2, MinIO, Supabase
/// Storage's S3 endpoint).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct S3Config {
    /// Bucket name; required when `backend = "s3"`. Defaults to empty.
    pub bucket: String,
    /// Region (`auto` for R2). Defaults to `us-east-1`.
    pub region: String,
    /// Endpoint URL for a non-AWS store, e.g. `https://<account>.r2.cloudflarestorage.com`;
    /// an `http://` endpoint allows plain HTTP. Defaults to empty (AWS).
    pub endpoint: String,
    /// Environment variable holding the access key id. If neither key variable is set, the
    /// instance's credentials (EC2/ECS metadata) are used. Defaults to `AWS_ACCESS_KEY_ID`.
    pub access_key_id_env: String,
    /// Environment variable holding the secret access key. Defaults to
    /// `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key_env: String,
    /// Address objects as `https://<bucket>.<endpoint>/<key>` instead of
    /// `<endpoint>/<bucket>/<key>`. AWS buckets created after September 2020 need it.
    /// Defaults to false (path style, which MinIO, R2 and Supabase expect).
    pub virtual_hosted_style: bool,
    /// Public URL prefix of the bucket (a CDN or R2 public domain); a stored object's URL is
    /// `<public_base_url>/<key>`. Defaults to empty, meaning `s3://<bucket>/<key>`.
    pub public_base_url: String,
}

/// `[storage.vercel]`: Vercel Blob.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct VercelConfig {
    /// API base URL. Defaults to `https://blob.vercel-storage.com`.
    pub base_url: String,
    /// Environment variable holding the store's read-write token. Defaults to
    /// `BLOB_READ_WRITE_TOKEN`.
    pub token_env: String,
}

/// `[storage.supabase]`: Supabase Storage (its own REST API).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SupabaseConfig {
    /// Project URL, e.g. `https://<project>.supabase.co`. Defaults to empty.
    pub url: String,
    /// Bucket name. Defaults to empty.
    pub bucket: String,
    /// Environment variable holding the service-role (or `sb_secret_…`) key. Defaults to
    /// `SUPABASE_SERVICE_ROLE_KEY`.
    pub service_key_env: String,
}

/// Default of [`StorageConfig::max_object_bytes`]: 2 GiB.
pub const DEFAULT_MAX_OBJECT_BYTES: u64 = 2 * 1024 * 1024 * 1024;

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            backend: "local".into(),
            max_object_bytes: DEFAULT_MAX_OBJECT_BYTES,
            local: LocalConfig::default(),
            s3: S3Config::default(),
            vercel: VercelConfig::default(),
            supabase: SupabaseConfig::default(),
        }
    }
}

impl Default for LocalConfig {
    fn default() -> Self {
        Self {
            dir: "./data/blobs".into(),
        }
    }
}

impl Default for S3Config {
    fn default() -> Self {
        Self {
            bucket: String::new(),
            region: "us-east-1".into(),
            endpoint: String::new(),
            access_key_id_env: "AWS_ACCESS_KEY_ID".into(),
            secret_access_key_env: "AWS_SECRET_ACCESS_KEY".into(),
            virtual_hosted_style: false,
            public_base_url: String::new(),
        }
    }
}

impl Default for VercelConfig {
    fn default() -> Self {
        Self {
            base_url: "https://blob.vercel-storage.com".into(),
            token_env: "BLOB_READ_WRITE_TOKEN".into(),
        }
    }
}

impl Default for SupabaseConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            bucket: String::new(),
            service_key_env: "SUPABASE_SERVICE_ROLE_KEY".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::tests::env;
    use crate::config::Config;

    #[test]
    fn environment_overrides_reach_nested_storage_keys() {
        let c = Config::from_toml_and_env(
            "",
            "test",
            &env(&[
                ("GENQ_STORAGE_BACKEND", "s3"),
                ("GENQ_STORAGE_MAX_OBJECT_BYTES", "1000"),
                ("GENQ_STORAGE_S3_BUCKET", "media"),
                ("GENQ_STORAGE_S3_VIRTUAL_HOSTED_STYLE", "true"),
                ("GENQ_STORAGE_VERCEL_TOKEN_ENV", "MY_BLOB_TOKEN"),
            ]),
        )
        .unwrap();
        let s = &c.storage;
        assert_eq!(s.backend, "s3");
        assert_eq!(s.max_object_bytes, 1000);
        assert_eq!(s.s3.bucket, "media");
        assert!(s.s3.virtual_hosted_style);
        assert_eq!(s.vercel.token_env, "MY_BLOB_TOKEN");
    }

    #[test]
    fn unknown_storage_keys_are_refused() {
        let err = Config::from_toml_and_env("[storage.s3]\nbuckt = \"x\"\n", "t", &[])
            .unwrap_err()
            .to_string();
        assert!(err.contains("buckt"), "{err}");
    }
}
