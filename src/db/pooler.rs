//! Connection poolers in front of Postgres (`database.pooler`).
//!
//! PgBouncer and Supavisor refuse startup parameters they do not know (`extra_float_digits`,
//! `options`), so behind either genq sends none. In **session** mode a client keeps its
//! server connection, so the session is set up after connecting and everything else works
//! as on a direct connection.
//!
//! In **transaction** mode (Supabase's port 6543) the pooler may hand the client's next
//! message to another server connection whenever the server reports it is idle outside a
//! transaction. sqlx runs a statement with arguments in two round trips (Parse + Describe +
//! Sync, then Bind + Execute + Sync), so outside a transaction the Bind can reach a server
//! where another client's statement is prepared: binds that do not match, or a statement
//! that ran and committed while the caller got a decoding error (a claim committed that the
//! daemon believed failed). And sqlx names its statements `sqlx_s_1`, `sqlx_s_2`, ... per
//! client connection, so two clients sharing a server collide ("already exists"). Hence,
//! in transaction mode:
//! - every statement runs inside a transaction ([`super::query`] opens one around a
//!   statement sent outside any), so both round trips reach the same server;
//! - statements are unnamed and uncached (`persistent(false)`, cache capacity 0);
//! - every transaction genq opens starts with `DEALLOCATE ALL`, in the same message as
//!   `BEGIN`: sqlx's own type lookups (the OID of `genq.job_state`, once per client
//!   connection) still use named statements that outlive their transaction, and this
//!   clears any such leftover before genq's statements can collide with it;
//! - the same message sets `idle_in_transaction_session_timeout` for the transaction
//!   (`SET LOCAL`), since the session-wide setting cannot be sent;
//! - no LISTEN (the daemon polls every `worker.poll_interval`), no session state.
//!
//! The mode is process-wide: once a pool in transaction mode exists, every statement of the
//! process takes the pooler-safe form, which is correct on any connection, only slower.

use std::fmt;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::Executor;

/// What `database.url` points at.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooler {
    /// Postgres itself (or a pooler in session mode that accepts genq's startup options).
    #[default]
    None,
    /// PgBouncer/Supavisor in session mode: one server connection per client connection.
    Session,
    /// PgBouncer/Supavisor in transaction mode: a server connection per transaction.
    Transaction,
}

impl fmt::Display for Pooler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Pooler::None => "none",
            Pooler::Session => "session",
            Pooler::Transaction => "transaction",
        })
    }
}

/// The statement that opens every transaction in transaction mode; set once a pool in that
/// mode is made.
static TRANSACTION_BEGIN: OnceLock<String> = OnceLock::new();

/// The `BEGIN` statement for transactions, when this process talks through a
/// transaction-mode pooler.
pub(crate) fn transaction_begin() -> Option<&'static str> {
    TRANSACTION_BEGIN.get().map(String::as_str)
}

/// Whether statements take the pooler-safe form (unnamed, inside a transaction).
pub fn transaction_mode() -> bool {
    TRANSACTION_BEGIN.get().is_some()
}

/// Startup parameters for a connection through a pooler: none besides the ones every pooler
/// knows (user, database, `application_name`, `client_encoding`, `DateStyle`, `TimeZone`).
pub(crate) fn startup_options(options: PgConnectOptions, pooler: Pooler) -> PgConnectOptions {
    let options = options.extra_float_digits(None);
    match pooler {
        Pooler::Transaction => options.statement_cache_capacity(0),
        Pooler::None | Pooler::Session => options,
    }
}

/// Pool options for `pooler`: session mode sets the idle timeout on each new session;
/// transaction mode switches the process to pooler-safe statements.
pub(crate) fn pool_options(options: PgPoolOptions, pooler: Pooler, idle_ms: u128) -> PgPoolOptions {
    match pooler {
        Pooler::None => options,
        Pooler::Session => options.after_connect(move |conn, _| {
            Box::pin(async move {
                conn.execute(
                    format!("SET idle_in_transaction_session_timeout = '{idle_ms}ms'").as_str(),
                )
                .await
                .map(|_| ())
            })
        }),
        Pooler::Transaction => {
            let begin = format!(
                "BEGIN; DEALLOCATE ALL; SET LOCAL idle_in_transaction_session_timeout = '{idle_ms}ms'"
            );
            if TRANSACTION_BEGIN.get_or_init(|| begin.clone()) != &begin {
                tracing::warn!("a second transaction-mode pool with another idle timeout: the first one's applies");
            }
            options
        }
    }
}
