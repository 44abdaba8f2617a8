//! Helpers for retention fault scenarios: a daemon that reaches Postgres through a
//! [`PgProxy`] (cut it to play a database restart), the real binary pointed at a fake
//! Vercel Blob by environment and killed with SIGKILL, and queries that show what a fault
//! left behind: the daemons' sessions, row locks, statements blocked waiting, expired
//! leases, and rows that still name a user after an erasure.

use std::sync::Arc;
use std::time::Duration;

use genq::storage::vercel::VercelStore;
use genq::storage::BlobStore;
use genq::{Daemon, DaemonHandle, Registry};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use sqlx::postgres::PgConnectOptions;

use super::proxy::PgProxy;
use super::retention::RetentionEnv;
use super::{wait_until, RunningBinary};
use genq::dev::fake_stores::vercel::FakeVercel;

/// The token the fake Vercel Blob of the fault scenarios accepts.
pub const VERCEL_TOKEN: &str = "vercel_blob_rw_FAULTS_notarealsecret";

/// A Vercel store pointed at `fake`, for in-process daemons.
pub fn vercel_store(fake: &FakeVercel) -> Arc<dyn BlobStore> {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    Arc::new(VercelStore::new(&fake.base_url, VERCEL_TOKEN, http).unwrap())
}

impl RetentionEnv {
    /// A proxy in front of this test's Postgres, and connect options that go through it.
    pub async fn pg_proxy(&self) -> (PgProxy, PgConnectOptions) {
        let host = self.db.options.get_host().to_string();
        let port = self.db.options.get_port();
        let upstream = tokio::net::lookup_host((host.as_str(), port))
            .await
            .unwrap()
            .next()
            .expect("the database host resolves");
        let proxy = PgProxy::start(upstream).await;
        let options = self
            .db
            .options
            .clone()
            .host("127.0.0.1")
            .port(proxy.addr.port());
        (proxy, options)
    }

    /// A daemon running the retention jobs with `extra` stores that reaches Postgres with
    /// `options` (e.g. through a [`PgProxy`]).
    pub fn daemon_via(
        &self,
        options: PgConnectOptions,
        extra: Vec<Arc<dyn BlobStore>>,
    ) -> DaemonHandle {
        let mut registry = Registry::new();
        self.retention(extra).register(&mut registry);
        Daemon::with_connect_options(self.config.clone(), registry, options).start()
    }

    /// `genq run` (the real binary) on this database, running the retention jobs with its
    /// Vercel store pointed at `fake`: `storage.vercel.base_url` from
    /// `GENQ_STORAGE_VERCEL_BASE_URL` and the token from the variable `storage.vercel.token_env`
    /// names (default `BLOB_READ_WRITE_TOKEN`), as `VercelStore::from_config` reads them.
    /// Leases are short (2 s) and the periodic sweep is out of the way.
    pub async fn binary_with_vercel(&self, fake: &FakeVercel) -> RunningBinary {
        let url = self.db.url().await;
        let local = self.dir.path().to_string_lossy().into_owned();
        RunningBinary::start(
            &url,
            &[
                ("GENQ_STORAGE_VERCEL_BASE_URL", fake.base_url.as_str()),
                ("GENQ_STORAGE_VERCEL_TOKEN_ENV", "BLOB_READ_WRITE_TOKEN"),
                ("BLOB_READ_WRITE_TOKEN", VERCEL_TOKEN),
                ("GENQ_STORAGE_LOCAL_DIR", local.as_str()),
                ("GENQ_WORKER_LEASE", "2s"),
                ("GENQ_WORKER_HEARTBEAT", "300ms"),
                ("GENQ_WORKER_RESCUE_INTERVAL", "200ms"),
                ("GENQ_RETENTION_INTERVAL", "36500d"),
                ("GENQ_LOG", "warn"),
            ],
        )
        .await
    }

    /// Sessions of genq daemons (`application_name = genq`) on this test's database.
    pub async fn daemon_sessions(&self) -> i64 {
        sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
              WHERE datname = current_database() AND application_name = 'genq'",
        )
        .fetch_one(&self.db.pool)
        .await
        .unwrap()
    }

    /// Sessions on this database blocked in a statement containing `needle`: waiting for a
    /// lock, or sleeping in a wait loop (`pg_sleep`).
    pub async fn waiting_in(&self, needle: &str) -> i64 {
        sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
              WHERE datname = current_database() AND pid <> pg_backend_pid()
                AND state = 'active' AND wait_event_type IN ('Lock', 'Timeout')
                AND strpos(query, $1) > 0",
        )
        .bind(needle)
        .fetch_one(&self.db.pool)
        .await
        .unwrap()
    }

    /// Whether no transaction holds a row lock on any of the blobs `ids` right now (the
    /// probe's own locks end with its statement).
    pub async fn blobs_unlocked(&self, ids: &[i64]) -> bool {
        sqlx::query("SELECT id FROM genq.blobs WHERE id = ANY($1) FOR UPDATE NOWAIT")
            .bind(ids)
            .fetch_all(&self.db.pool)
            .await
            .is_ok()
    }

    /// Waits until job `id` holds no valid lease (its daemon stopped heartbeating, or it
    /// is no longer running).
    pub async fn wait_lease_expired(&self, id: i64, within: Duration) {
        wait_until(
            within,
            &format!("the lease of job {id} to expire"),
            || async {
                sqlx::query_scalar::<_, bool>(
                    "SELECT state <> 'running' OR lease_until IS NULL OR lease_until < now()
                   FROM genq.jobs WHERE id = $1",
                )
                .bind(id)
                .fetch_one(&self.db.pool)
                .await
                .unwrap()
            },
        )
        .await;
    }

    /// Rows anywhere that still name `user` (its id in a column, a key, an input or a
    /// webhook body): 0 after a completed erasure.
    pub async fn rows_naming(&self, user: &str) -> i64 {
        sqlx::query_scalar(
            "SELECT (SELECT count(*) FROM genq.ledger WHERE user_id = $1)
                  + (SELECT count(*) FROM genq.accounts WHERE user_id = $1)
                  + (SELECT count(*) FROM genq.generations WHERE user_id = $1)
                  + (SELECT count(*) FROM genq.payments WHERE user_id = $1)
                  + (SELECT count(*) FROM genq.blobs WHERE user_id = $1 OR strpos(key, $1) > 0)
                  + (SELECT count(*) FROM genq.deletion_log WHERE user_id = $1 OR strpos(key, $1) > 0)
                  + (SELECT count(*) FROM genq.erasure_requests WHERE user_id = $1)
                  + (SELECT count(*) FROM genq.export_requests WHERE user_id = $1)
                  + (SELECT count(*) FROM genq.generations WHERE strpos(input::text, $1) > 0)
                  + (SELECT count(*) FROM genq.webhook_events
                      WHERE strpos(convert_from(body, 'UTF8'), $1) > 0)",
        )
        .bind(user)
        .fetch_one(&self.db.pool)
        .await
        .unwrap()
    }
}

impl RunningBinary {
    /// SIGKILL: the process dies at once, draining nothing and handing nothing back (its
    /// jobs keep their leases until they expire). Waits for the exit.
    pub async fn kill9(&mut self) {
        kill(Pid::from_raw(self.child.id() as i32), Signal::SIGKILL).unwrap();
        let child = &mut self.child;
        wait_until(Duration::from_secs(10), "the killed daemon to exit", || {
            let exited = child.try_wait().unwrap().is_some();
            async move { exited }
        })
        .await;
    }
}
