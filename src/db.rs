//! Connections and migrations.
//!
//! The migration history lives in `genq._sqlx_migrations`, not `public`, so genq never
//! collides with the product's own migrator. sqlx creates its history table unqualified,
//! so migrations run on a dedicated connection whose `search_path` is `genq`. Migrations
//! need a session (sqlx holds an advisory lock across them): run them on a direct
//! connection, never through a transaction-mode pooler.
//!
//! Every statement goes through [`query`], [`query_as`] and [`query_scalar`] (clippy
//! forbids sqlx's own, see `clippy.toml`), so how a statement travels to Postgres is
//! decided here, once: see [`pooler`].

pub mod config;
pub mod pooler;
mod query;

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection, PgPool};

pub use config::{DatabaseConfig, DEFAULT_DATABASE_URL};
pub use pooler::Pooler;
pub use query::{begin, query, query_as, query_scalar, Query, QueryAs, QueryScalar};

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
/// daemon's sessions) and, straight to Postgres, an `idle_in_transaction_session_timeout`
/// as a startup option. A pooler refuses startup options, so behind one the timeout is
/// set after connecting (session mode) or left to the role (transaction mode), see
/// [`pooler`].
pub fn session_options(options: PgConnectOptions, config: &DatabaseConfig) -> PgConnectOptions {
    let options = options
        .application_name("genq")
        .log_slow_statements(tracing::log::LevelFilter::Warn, Duration::from_secs(2));
    match config.pooler {
        Pooler::None => options.options([(
            "idle_in_transaction_session_timeout",
            format!("{}ms", idle_ms(config)),
        )]),
        Pooler::Session | Pooler::Transaction => pooler::startup_options(options, config.pooler),
    }
}

fn idle_ms(config: &DatabaseConfig) -> u128 {
    config.idle_in_transaction_timeout.as_millis().max(1)
}

/// Opens the daemon's pool. Connections are made lazily and re-made after a Postgres
/// restart, so a database outage never ends the process. Connections are not pinged before
/// use (a round trip per acquire); instead, once any caller has seen the connection lost
/// ([`note_connection_loss`]), every pooled connection opened before that is discarded at
/// its next acquire, so after a restart each stale connection does not fail one more caller.
pub fn pool(options: PgConnectOptions, config: &DatabaseConfig) -> PgPool {
    pool_options(config)
        .max_connections(config.max_connections.max(1))
        .acquire_timeout(config.acquire_timeout)
        .test_before_acquire(false)
        .before_acquire(|_conn, meta| {
            let keep = !opened_before_last_loss(meta.age);
            Box::pin(async move { Ok(keep) })
        })
        .connect_lazy_with(options)
}

/// Pool options every genq pool starts from: behind a pooler they set the session up
/// after connecting and switch statements to their pooler-safe form (see [`pooler`]).
pub fn pool_options(config: &DatabaseConfig) -> PgPoolOptions {
    pooler::pool_options(PgPoolOptions::new(), config.pooler, idle_ms(config))
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

/// Applies every pending migration, then `genq.secure_objects` (migration 0011): every
/// object in schema genq, including those a later migration created as the migrating role,
/// is given to the database's owner role and the backend and worker roles get exactly their
/// rights. `role_prefix` names the roles (`""`: the prefix the database already uses, else
/// `genq`). Safe to run concurrently from several daemons: sqlx serialises migrators with
/// an advisory lock, and `secure_objects` takes its own.
// A direct connection of its own, never a pooled one: sqlx's own statements are right here.
#[allow(clippy::disallowed_methods)]
pub async fn migrate(
    options: &PgConnectOptions,
    role_prefix: &str,
) -> Result<(), sqlx::migrate::MigrateError> {
    let mut conn = PgConnection::connect_with(options).await?;
    sqlx::query("CREATE SCHEMA IF NOT EXISTS genq")
        .execute(&mut conn)
        .await?;
    sqlx::query("SET search_path TO genq")
        .execute(&mut conn)
        .await?;
    sqlx::query("SELECT set_config('genq.role_prefix', $1, false)")
        .bind(role_prefix)
        .execute(&mut conn)
        .await?;
    MIGRATOR.run(&mut conn).await?;
    sqlx::query("SELECT genq.secure_objects($1)")
        .bind(role_prefix)
        .execute(&mut conn)
        .await?;
    conn.close().await?;
    Ok(())
}

/// Whether `prefix` may name genq's roles (the rule `genq.secure_objects` applies).
pub fn valid_role_prefix(prefix: &str) -> bool {
    let mut chars = prefix.chars();
    prefix.len() <= 40
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Drops the three roles of `prefix` (after the database they served was dropped, e.g. a
/// benchmark's throwaway database).
// An administrator's direct connection, never a pooled one.
#[allow(clippy::disallowed_methods)]
pub async fn drop_roles(conn: &mut PgConnection, prefix: &str) -> Result<(), sqlx::Error> {
    if !valid_role_prefix(prefix) {
        return Err(sqlx::Error::Protocol(format!(
            "invalid role prefix {prefix:?}"
        )));
    }
    sqlx::query(&format!(
        "DROP ROLE IF EXISTS {prefix}_owner, {prefix}_backend, {prefix}_worker"
    ))
    .execute(conn)
    .await?;
    Ok(())
}

/// Whether the database has every migration this binary embeds (used by readiness checks).
pub async fn migrations_current(pool: &PgPool) -> Result<bool, sqlx::Error> {
    let applied: Vec<i64> =
        query_scalar("SELECT version FROM genq._sqlx_migrations WHERE success ORDER BY version")
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
