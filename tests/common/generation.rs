//! Fixture for generation scenarios: a fake provider on loopback, a local output store in a
//! temp dir, and a daemon running the real pipeline against both.

use std::sync::Arc;
use std::time::Duration;

use genq::config::{Config, QueueConfig};
use genq::credits::{self, Balance, Generation, GenerationState, NewGeneration};
use genq::dev::fake_provider::{self as fake, FakeConfig, FakeServer};
use genq::jobs::generation::Pipeline;
use genq::{DaemonHandle, Registry};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use uuid::Uuid;

use super::{fast_config, wait_until, TestDb};

pub struct GenEnv {
    pub db: TestDb,
    pub fake: FakeServer,
    pub blobs: tempfile::TempDir,
    pub config: Config,
}

/// How long the fake renders in most generation scenarios.
pub const FAST_RENDER: Duration = Duration::from_millis(400);

impl GenEnv {
    /// The usual bundle for a generation scenario: a fresh database, a fake provider
    /// rendering for [`FAST_RENDER`], an output store and a config pointing at both (start
    /// the daemon with [`GenEnv::daemon`] once the scenario has set its faults and config).
    pub async fn setup(po: PgPoolOptions, co: PgConnectOptions) -> Self {
        Self::new(TestDb::new(po, co).await, FAST_RENDER).await
    }

    /// A fake provider rendering for `render_time`, and a config pointing at it.
    pub async fn new(db: TestDb, render_time: Duration) -> Self {
        Self::with_fake(
            db,
            FakeConfig {
                render_time,
                ..FakeConfig::default()
            },
        )
        .await
    }

    /// A fake provider configured with `fake`, and a config pointing at it.
    pub async fn with_fake(db: TestDb, fake: FakeConfig) -> Self {
        let fake = fake::serve("127.0.0.1:0".parse().unwrap(), fake)
            .await
            .expect("fake provider");
        let blobs = tempfile::tempdir().unwrap();
        let mut config = fast_config();
        config.providers = fake.providers_config();
        // The fake serves its output files on loopback, which downloads refuse by default.
        config.outbound.allow_private = vec!["127.0.0.0/8".into()];
        // Callbacks go nowhere (port 9, discard) but carry the generation id, which lets
        // BytePlus and Replicate submits be reconciled.
        config.providers.webhook_base_url = "http://127.0.0.1:9".into();
        config.providers.request_timeout = Duration::from_secs(2);
        config.storage.local.dir = blobs.path().to_string_lossy().into_owned();
        config
            .queues
            .insert("generation".into(), QueueConfig::with_concurrency(50));
        Self {
            db,
            fake,
            blobs,
            config,
        }
    }

    /// A daemon running the pipeline with `config`.
    pub fn daemon_with(&self, config: Config) -> DaemonHandle {
        let mut registry = Registry::new();
        Arc::new(Pipeline::from_config(&config).expect("pipeline")).register(&mut registry);
        self.db.daemon(config, registry)
    }

    /// A daemon running the pipeline and the retention jobs (sharing the output store),
    /// with the erasure hash key of the retention fixture.
    pub fn daemon_with_retention(&self) -> DaemonHandle {
        self.daemon_with_retention_as(self.db.daemon_options())
    }

    /// [`Self::daemon_with_retention`], its pool logged in with `options` (e.g. as a login
    /// role granted only the database's worker role).
    pub fn daemon_with_retention_as(
        &self,
        options: sqlx::postgres::PgConnectOptions,
    ) -> DaemonHandle {
        let mut registry = Registry::new();
        let pipeline = Arc::new(Pipeline::from_config(&self.config).expect("pipeline"));
        let retention = Arc::new(genq::jobs::privacy::Retention {
            stores: genq::storage::Stores::new(&self.config.storage, pipeline.store.clone()),
            config: self.config.retention.clone(),
            hash_key: Some(super::retention::HASH_KEY.to_vec()),
        });
        pipeline.register(&mut registry);
        retention.register(&mut registry);
        genq::Daemon::with_connect_options(self.config.clone(), registry, options).start()
    }

    pub fn daemon(&self) -> DaemonHandle {
        self.daemon_with(self.config.clone())
    }

    pub async fn grant(&self, user: &str, amount: i64) {
        let mut conn = self.db.pool.acquire().await.unwrap();
        credits::grant(
            &mut conn,
            user,
            amount,
            &format!("grant:{user}:{amount}:{}", Uuid::new_v4()),
        )
        .await
        .unwrap();
    }

    pub async fn request(&self, user: &str, provider: &str, cost: i64) -> Uuid {
        let input = serde_json::json!({"prompt": "a red fox running through snow", "image_url": "https://example.com/fox.png"});
        self.request_with_input(user, provider, cost, input).await
    }

    /// A generation with the model input `input`.
    pub async fn request_with_input(
        &self,
        user: &str,
        provider: &str,
        cost: i64,
        input: serde_json::Value,
    ) -> Uuid {
        let mut conn = self.db.pool.acquire().await.unwrap();
        credits::enqueue_generation(
            &mut conn,
            &NewGeneration {
                user_id: user.into(),
                provider: provider.into(),
                model: model_for(provider).into(),
                input,
                cost,
                idempotency_key: Uuid::new_v4().to_string(),
            },
        )
        .await
        .unwrap()
    }

    pub async fn generation(&self, id: Uuid) -> Generation {
        let mut conn = self.db.pool.acquire().await.unwrap();
        credits::load(&mut conn, id)
            .await
            .unwrap()
            .expect("generation exists")
    }

    pub async fn wait_final(&self, id: Uuid, within: Duration) -> Generation {
        wait_until(within, &format!("generation {id} to end"), || async {
            self.generation(id).await.state.is_final()
        })
        .await;
        self.generation(id).await
    }

    pub async fn balance(&self, user: &str) -> Balance {
        let mut conn = self.db.pool.acquire().await.unwrap();
        credits::balance(&mut conn, user).await.unwrap()
    }

    /// Ledger entries of a generation, by kind.
    pub async fn entries(&self, id: Uuid) -> Vec<String> {
        sqlx::query_scalar(
            "SELECT kind::text FROM genq.ledger WHERE generation_id = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(&self.db.pool)
        .await
        .unwrap()
    }

    /// Panics with every violated invariant, if any.
    pub async fn assert_ledger_clean(&self) {
        let mut conn = self.db.pool.acquire().await.unwrap();
        let violations = credits::check_ledger(&mut conn).await.unwrap();
        assert!(
            violations.is_empty(),
            "ledger invariants violated: {violations:#?}"
        );
    }

    /// Panics with every broken privacy invariant (`genq.check_retention()`), if any.
    pub async fn assert_retention_clean(&self) {
        let violations = genq::retention::check(&self.db.pool).await.unwrap();
        assert!(
            violations.is_empty(),
            "privacy invariants broken: {violations:#?}"
        );
    }

    /// Checks a succeeded generation's stored output exists on disk.
    pub fn assert_output_stored(&self, g: &Generation) {
        assert_eq!(g.state, GenerationState::Succeeded, "{g:?}");
        let outputs = g
            .output
            .as_ref()
            .and_then(|o| o.as_array())
            .expect("output list");
        assert!(!outputs.is_empty());
        for o in outputs {
            let key = o["key"].as_str().unwrap();
            let path = self.blobs.path().join(key);
            let size = std::fs::metadata(&path)
                .unwrap_or_else(|e| panic!("{path:?}: {e}"))
                .len();
            assert!(size > 0);
        }
    }
}

pub fn model_for(provider: &str) -> &'static str {
    match provider {
        "fal" => "fal-ai/kling-video/v2.1/master/image-to-video",
        "byteplus" => "doubao-seedance-1-0-pro-250528",
        _ => "bytedance/seedance-1-pro",
    }
}
