//! Fixture for retention and privacy scenarios: a database, a local store in a temp dir
//! (plus any extra stores a test points at fake servers), a daemon running the retention
//! jobs, and helpers to register, back-date and inspect blobs.

use std::sync::Arc;
use std::time::Duration;

use genq::config::Config;
use genq::credits::{self, NewGeneration};
use genq::jobs::privacy::Retention;
use genq::retention::{blobs, BlobRole};
use genq::storage::local::LocalStore;
use genq::storage::{BlobStore, Stores};
use genq::{DaemonHandle, Registry};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use uuid::Uuid;

use super::{fast_config, wait_until, TestDb};

/// The erasure hash key of the fixture's daemons.
pub const HASH_KEY: &[u8] = b"test-erasure-key";

pub struct RetentionEnv {
    pub db: TestDb,
    pub dir: tempfile::TempDir,
    pub local: Arc<LocalStore>,
    pub config: Config,
}

/// A blob row as the tests inspect it.
#[derive(Debug, sqlx::FromRow)]
pub struct BlobRow {
    pub id: i64,
    pub user_id: String,
    pub role: BlobRole,
    pub store: String,
    pub key: String,
    pub policy: Option<String>,
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    pub deleted_at: Option<chrono::DateTime<chrono::Utc>>,
    pub attempts: i32,
    pub last_error: Option<String>,
}

impl RetentionEnv {
    /// The usual bundle for a retention scenario: a fresh database and [`RetentionEnv::new`].
    pub async fn setup(po: PgPoolOptions, co: PgConnectOptions) -> Self {
        Self::new(TestDb::new(po, co).await).await
    }

    /// [`RetentionEnv::setup`] with the periodic sweep off for good (an interval of a
    /// century), for fault scenarios that must control every sweep themselves.
    pub async fn setup_without_periodic_sweep(po: PgPoolOptions, co: PgConnectOptions) -> Self {
        let mut env = Self::setup(po, co).await;
        env.config.retention.interval = Duration::from_secs(100 * 365 * 24 * 3600);
        env
    }

    /// A local store in a temp dir; the periodic sweep effectively off (tests run it with
    /// [`RetentionEnv::sweep`]) unless a test shortens `config.retention.interval`.
    pub async fn new(db: TestDb) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut config = fast_config();
        config.storage.local.dir = dir.path().to_string_lossy().into_owned();
        config.retention.interval = Duration::from_secs(3600);
        // Only the retention jobs: a generation.submit of a test's generation must not be
        // claimed (and discarded as unknown) by these daemons.
        config
            .queues
            .retain(|name, _| name == "retention" || name == "maintenance");
        let local = Arc::new(LocalStore::new(dir.path()).unwrap());
        Self {
            db,
            dir,
            local,
            config,
        }
    }

    /// The retention jobs' context, with `extra` stores (e.g. pointed at fake servers).
    pub fn retention(&self, extra: Vec<Arc<dyn BlobStore>>) -> Arc<Retention> {
        let mut stores = Stores::new(&self.config.storage, self.local.clone());
        for s in extra {
            stores = stores.with(s);
        }
        Arc::new(Retention {
            stores,
            config: self.config.retention.clone(),
            hash_key: Some(HASH_KEY.to_vec()),
        })
    }

    /// A daemon running the retention jobs with `extra` stores.
    pub fn daemon_with(&self, extra: Vec<Arc<dyn BlobStore>>) -> DaemonHandle {
        let mut registry = Registry::new();
        self.retention(extra).register(&mut registry);
        self.db.daemon(self.config.clone(), registry)
    }

    pub fn daemon(&self) -> DaemonHandle {
        self.daemon_with(Vec::new())
    }

    /// Writes an object into the local store's directory.
    pub fn put_local(&self, key: &str, bytes: &[u8]) {
        let path = self.dir.path().join(key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }

    pub fn local_exists(&self, key: &str) -> bool {
        self.dir.path().join(key).exists()
    }

    /// Writes `key` locally and registers it.
    pub async fn upload(
        &self,
        user: &str,
        role: BlobRole,
        key: &str,
        generation: Option<Uuid>,
    ) -> i64 {
        self.put_local(key, b"bytes");
        self.register(user, role, "local", key, generation).await
    }

    pub async fn register(
        &self,
        user: &str,
        role: BlobRole,
        store: &str,
        key: &str,
        generation: Option<Uuid>,
    ) -> i64 {
        let mut conn = self.db.pool.acquire().await.unwrap();
        blobs::register(&mut conn, user, role, store, key, generation)
            .await
            .expect("register_blob")
    }

    /// Moves a blob's creation and due date `by` into the past (as if registered earlier).
    pub async fn backdate_blob(&self, id: i64, by: Duration) {
        sqlx::query(
            "UPDATE genq.blobs SET created_at = created_at - make_interval(secs => $2),
                    expires_at = expires_at - make_interval(secs => $2) WHERE id = $1",
        )
        .bind(id)
        .bind(by.as_secs_f64())
        .execute(&self.db.pool)
        .await
        .unwrap();
    }

    /// Moves a generation's end `by` into the past (its blobs keep their own dates).
    pub async fn backdate_generation(&self, id: Uuid, by: Duration) {
        sqlx::query(
            "UPDATE genq.generations SET finished_at = finished_at - make_interval(secs => $2),
                    created_at = created_at - make_interval(secs => $2) WHERE id = $1",
        )
        .bind(id)
        .bind(by.as_secs_f64())
        .execute(&self.db.pool)
        .await
        .unwrap();
    }

    pub async fn blob(&self, id: i64) -> BlobRow {
        sqlx::query_as(
            "SELECT id, user_id, role, store, key, policy, expires_at, deleted_at, attempts, last_error
               FROM genq.blobs WHERE id = $1",
        )
        .bind(id)
        .fetch_one(&self.db.pool)
        .await
        .unwrap()
    }

    /// Runs one sweep and waits until it and every delete job it (or earlier runs)
    /// enqueued are final.
    pub async fn sweep(&self) {
        self.sweep_once().await;
        self.wait_for_deletes().await;
    }

    /// Waits until no retention.delete job is pending or running.
    pub async fn wait_for_deletes(&self) {
        wait_until(Duration::from_secs(30), "delete jobs to finish", || async {
            let open: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM genq.jobs WHERE kind = 'retention.delete'
                   AND state IN ('available', 'running')",
            )
            .fetch_one(&self.db.pool)
            .await
            .unwrap();
            open == 0
        })
        .await;
    }

    /// Grants `user` credits and requests a generation costing 10 (state `queued`).
    pub async fn generation(&self, user: &str) -> Uuid {
        let mut conn = self.db.pool.acquire().await.unwrap();
        credits::grant(&mut conn, user, 10, &format!("grant:{}", Uuid::new_v4()))
            .await
            .unwrap();
        credits::enqueue_generation(
            &mut conn,
            &NewGeneration {
                user_id: user.into(),
                provider: "fal".into(),
                model: "fal-ai/flux/dev".into(),
                input: serde_json::json!({"prompt": format!("a portrait of {user}")}),
                cost: 10,
                idempotency_key: Uuid::new_v4().to_string(),
            },
        )
        .await
        .unwrap()
    }

    /// Ends a queued generation as succeeded (credits captured), as the pipeline would.
    pub async fn succeed(&self, id: Uuid) {
        let mut tx = self.db.pool.begin().await.unwrap();
        sqlx::query(
            "UPDATE genq.generations SET state = 'succeeded',
                    output = '{\"test\": true}' WHERE id = $1",
        )
        .bind(id)
        .execute(&mut *tx)
        .await
        .unwrap();
        assert!(credits::capture(&mut tx, id).await.unwrap());
        tx.commit().await.unwrap();
    }

    /// Cancels a queued generation (it ends at once, credits released).
    pub async fn cancel(&self, id: Uuid) {
        let mut conn = self.db.pool.acquire().await.unwrap();
        credits::cancel_generation(&mut conn, id).await.unwrap();
    }

    /// Panics with every broken privacy invariant (`genq.check_retention()`), if any.
    pub async fn assert_retention_clean(&self) {
        let violations = genq::retention::check(&self.db.pool).await.unwrap();
        assert!(
            violations.is_empty(),
            "privacy invariants broken: {violations:#?}"
        );
    }

    pub async fn assert_ledger_clean(&self) {
        let mut conn = self.db.pool.acquire().await.unwrap();
        let violations = credits::check_ledger(&mut conn).await.unwrap();
        assert!(
            violations.is_empty(),
            "ledger invariants violated: {violations:#?}"
        );
    }

    /// Deletion log rows for a blob: (outcome, policy).
    pub async fn log_for_blob(&self, id: i64) -> Vec<(String, String)> {
        sqlx::query_as(
            "SELECT outcome, policy FROM genq.deletion_log WHERE blob_id = $1 ORDER BY id",
        )
        .bind(id)
        .fetch_all(&self.db.pool)
        .await
        .unwrap()
    }
}

/// Requests the erasure of `user` (`genq.request_erasure`); returns the request id.
pub async fn request_erasure(pool: &sqlx::PgPool, user: &str) -> i64 {
    sqlx::query_scalar("SELECT genq.request_erasure($1)")
        .bind(user)
        .fetch_one(pool)
        .await
        .expect("request_erasure")
}

/// Waits until erasure request `id` is complete and returns it.
pub async fn wait_erased(
    pool: &sqlx::PgPool,
    id: i64,
    within: Duration,
) -> genq::retention::erasure::ErasureRequest {
    wait_until(within, "the erasure to complete", || async {
        let r = genq::retention::erasure::get(pool, id).await.unwrap();
        r.is_some_and(|r| r.completed_at.is_some())
    })
    .await;
    genq::retention::erasure::get(pool, id)
        .await
        .unwrap()
        .unwrap()
}

/// Requests an export for `user` (`genq.request_export`); returns the request id.
pub async fn request_export(pool: &sqlx::PgPool, user: &str) -> i64 {
    sqlx::query_scalar("SELECT genq.request_export($1)")
        .bind(user)
        .fetch_one(pool)
        .await
        .expect("request_export")
}

/// Waits until export request `id` is written and returns it.
pub async fn wait_exported(
    pool: &sqlx::PgPool,
    id: i64,
    within: Duration,
) -> genq::retention::export_archive::ExportRequest {
    wait_until(within, "the export to be written", || async {
        let r = genq::retention::export_archive::get(pool, id)
            .await
            .unwrap();
        r.is_some_and(|r| r.completed_at.is_some())
    })
    .await;
    genq::retention::export_archive::get(pool, id)
        .await
        .unwrap()
        .unwrap()
}

/// The job's recorded error messages, oldest first.
pub fn error_messages(job: &genq::queue::job_control::JobRow) -> Vec<String> {
    job.errors
        .as_array()
        .expect("errors is an array")
        .iter()
        .map(|e| e["error"].as_str().unwrap_or_default().to_string())
        .collect()
}
