//! Connections and migrations.
//!
//! The migration history lives in `genq._sqlx_migrations`, not `public`, so genq never
//! collides with the product's own migrator. sqlx creates its history table unqualified,
//! so migrations run on a dedicated connection whose `search_path` is `genq`.

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};

use crate::config::DatabaseConfig;

/// The embedded migrations (`migrations/`).
pub static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// Parses a database URL and applies the session settings every genq connection uses.
pub fn connect_options(
    url: &str,
    config: &DatabaseConfig,
) -> Result<PgConnectOptions, sqlx::Error> {
    Ok(session_options(PgConnectOptions::from_str(url)?, config))
}

/// Applies genq's session settings: `application_name = genq` (so operators can find the
/// daemon's sessions) and an `idle_in_transaction_session_timeout`.
pub fn session_options(options: PgConnectOptions, config: &DatabaseConfig) -> PgConnectOptions {
    let idle_ms = config.idle_in_transaction_timeout.as_millis().max(1);
    options
        .application_name("genq")
        .options([(
            "idle_in_transaction_session_timeout",
            format!("{idle_ms}ms"),
        )])
        .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(2))
}

/// Opens the daemon's pool. Connections are made lazily and re-made after a Postgres
/// restart, so a database outage never ends the process. Connections are not pinged before
/// use (a round trip per acquire); instead, once any caller has seen the connection lost
/// ([`note_connection_loss`]), every pooled connection opened before that is discarded at
/// its next acquire, so after a restart each stale connection does not fail one more caller.
pub fn pool(options: PgConnectOptions, config: &DatabaseConfig) -> PgPool {
    PgPoolOptions::new()
        .max_connections(config.max_connections.max(1))
        .acquire_timeout(config.acquire_timeout)
        .test_before_acquire(false)
        .before_acquire(|_conn, meta| {
            let keep = !opened_before_last_loss(meta.age);
            Box::pin(async move { Ok(keep) })
        })
        .connect_lazy_with(options)
}

/// When this process last saw the database lost, in ms since [`clock_origin`] plus one
/// (0: never). Process-wide: every pool of the process reconnects after a loss.
static LAST_LOSS: AtomicU64 = AtomicU64::new(0);

fn clock_origin() -> Instant {
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now)
}

/// Records that the database connection was lost (the server restarted, failed over or
/// dropped connections): pooled connections opened before now are stale.
pub fn note_connection_loss() {
    let ms = clock_origin().elapsed().as_millis() as u64 + 1;
    LAST_LOSS.fetch_max(ms, Ordering::Relaxed);
}

/// [`is_connection_loss`], noting the loss when it is one.
pub fn note_if_connection_loss(err: &sqlx::Error) -> bool {
    let lost = is_connection_loss(err);
    if lost {
        note_connection_loss();
    }
    lost
}

/// Whether a pooled connection of age `age` was opened before the last noted loss.
fn opened_before_last_loss(age: Duration) -> bool {
    let last = LAST_LOSS.load(Ordering::Relaxed);
    if last == 0 {
        return false;
    }
    let opened_ms = clock_origin().elapsed().saturating_sub(age).as_millis() as u64 + 1;
    opened_ms <= last
}

/// Applies every pending migration. Safe to run concurrently from several daemons:
/// sqlx serialises migrators with an advisory lock.
pub async fn migrate(options: &PgConnectOptions) -> Result<(), sqlx::migrate::MigrateError> {
    let mut conn = PgConnection::connect_with(options).await?;
    sqlx::query("CREATE SCHEMA IF NOT EXISTS genq")
        .execute(&mut conn)
        .await?;
    sqlx::query("SET search_path TO genq")
        .execute(&mut conn)
        .await?;
    MIGRATOR.run(&mut conn).await?;
    conn.close().await?;
    Ok(())
}

/// Whether the database has every migration this binary embeds (used by readiness checks).
pub async fn migrations_current(pool: &PgPool) -> Result<bool, sqlx::Error> {
    let applied: Vec<i64> = sqlx::query_scalar(
        "SELECT version FROM genq._sqlx_migrations WHERE success ORDER BY version",
    )
    .fetch_all(pool)
    .await
    .or_else(|e| match &e {
        sqlx::Error::Database(d) if d.code().as_deref() == Some("42P01") => Ok(Vec::new()),
        _ => Err(e),
    })?;
    Ok(MIGRATOR
        .iter()
        .all(|m| applied.binary_search(&m.version).is_ok()))
}

/// Whether the database itself was out of reach, rather than anything the statement did:
/// the connection was refused, reset or timed out, the pool had no connection to give, or
/// the server is shutting down, starting up or was failed over (SQLSTATE class 08, 57P01
/// `admin_shutdown`, 57P02 `crash_shutdown`, 57P03 `cannot_connect_now`, 53300
/// `too_many_connections`). A job interrupted by it is handed back without spending an
/// attempt (see [`crate::daemon::JobError::Interrupted`]).
pub fn is_connection_loss(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(d) => d.code().is_some_and(|c| {
            c.starts_with("08") || matches!(&*c, "57P01" | "57P02" | "57P03" | "53300")
        }),
        _ => false,
    }
}

/// Whether an error is worth retrying: connection loss, a restarting server, pool
/// exhaustion, serialization failures. Anything else is a bug or bad input.
pub fn is_transient(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Protocol(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(d) => d.code().is_some_and(|c| {
            // 08: connection exception, 40: rollback (serialization, deadlock),
            // 57P: operator intervention (admin shutdown, terminated backend), 53: resources.
            c.starts_with("08")
                || c.starts_with("40")
                || c.starts_with("57P")
                || c.starts_with("53")
        }),
        _ => false,
    }
}
