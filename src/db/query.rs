//! genq's statement constructors: sqlx's `query`, `query_as` and `query_scalar` with the same
//! `bind`/`execute`/`fetch_*` surface, taking anything that yields a connection (a pool, a
//! connection, a transaction). On a direct connection they are exactly sqlx's. Behind a
//! transaction-mode pooler ([`super::pooler`]) a statement is unnamed, and one sent outside
//! a transaction runs inside its own (`BEGIN ... COMMIT`): its result is read before the
//! commit, so a statement the caller saw fail never commits.

use futures::future::BoxFuture;
use sqlx::postgres::{PgArguments, PgQueryResult, PgRow};
use sqlx::{Acquire, Connection, Encode, FromRow, PgPool, Postgres, Transaction, Type};

use super::pooler;

/// [`sqlx::query`], pooler-safe.
pub fn query(sql: &str) -> Query<'_> {
    #[allow(clippy::disallowed_methods)]
    Query(sqlx::query(sql).persistent(!pooler::transaction_mode()))
}

/// [`sqlx::query_as`], pooler-safe.
pub fn query_as<O>(sql: &str) -> QueryAs<'_, O>
where
    O: for<'r> FromRow<'r, PgRow>,
{
    #[allow(clippy::disallowed_methods)]
    QueryAs(sqlx::query_as(sql).persistent(!pooler::transaction_mode()))
}

/// [`sqlx::query_scalar`], pooler-safe.
pub fn query_scalar<O>(sql: &str) -> QueryScalar<'_, O>
where
    (O,): for<'r> FromRow<'r, PgRow>,
{
    #[allow(clippy::disallowed_methods)]
    QueryScalar(sqlx::query_scalar(sql).persistent(!pooler::transaction_mode()))
}

/// Opens a transaction on `pool`; behind a transaction-mode pooler its `BEGIN` also clears
/// leftover named statements and sets the idle timeout.
pub async fn begin(pool: &PgPool) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    match pooler::transaction_begin() {
        Some(statement) => pool.begin_with(statement).await,
        #[allow(clippy::disallowed_methods)]
        None => pool.begin().await,
    }
}

/// A statement returning rows or a count.
#[must_use = "a statement does nothing until executed"]
pub struct Query<'q>(sqlx::query::Query<'q, Postgres, PgArguments>);

/// A statement whose rows decode into `O`.
#[must_use = "a statement does nothing until executed"]
pub struct QueryAs<'q, O>(sqlx::query::QueryAs<'q, Postgres, O, PgArguments>);

/// A statement whose rows' first column decodes into `O`.
#[must_use = "a statement does nothing until executed"]
pub struct QueryScalar<'q, O>(sqlx::query::QueryScalar<'q, Postgres, O, PgArguments>);

/// Runs `$body` with `$c` bound to a `&mut PgConnection` from `$a`: as is on a direct
/// connection or inside a transaction, else inside a transaction of its own.
macro_rules! on_connection {
    ($a:expr, |$c:ident| $body:expr) => {{
        let mut conn = $a.acquire().await?;
        match pooler::transaction_begin() {
            Some(statement) if !conn.is_in_transaction() => {
                let mut tx = conn.begin_with(statement).await?;
                let out = {
                    let $c = &mut *tx;
                    $body
                }?;
                tx.commit().await?;
                Ok(out)
            }
            _ => {
                let $c = &mut *conn;
                $body
            }
        }
    }};
}

// The terminals return boxed futures whose `Send` is proven here, where `A`'s bounds are in
// scope: an `async fn` generic over `Acquire<'c>` leaks a higher-ranked bound into every
// caller's future, which the compiler cannot prove inside `async_trait` handlers.
macro_rules! terminals {
    ($row:ty) => {
        /// Executes the statement and returns every row.
        pub fn fetch_all<'e, 'c: 'e, A>(self, a: A) -> BoxFuture<'e, Result<Vec<$row>, sqlx::Error>>
        where
            A: Acquire<'c, Database = Postgres> + Send + 'e,
            'q: 'e,
        {
            Box::pin(async move { on_connection!(a, |c| self.0.fetch_all(c).await) })
        }

        /// Executes the statement and returns exactly one row (`RowNotFound` if none).
        pub fn fetch_one<'e, 'c: 'e, A>(self, a: A) -> BoxFuture<'e, Result<$row, sqlx::Error>>
        where
            A: Acquire<'c, Database = Postgres> + Send + 'e,
            'q: 'e,
        {
            Box::pin(async move { on_connection!(a, |c| self.0.fetch_one(c).await) })
        }

        /// Executes the statement and returns at most one row.
        pub fn fetch_optional<'e, 'c: 'e, A>(
            self,
            a: A,
        ) -> BoxFuture<'e, Result<Option<$row>, sqlx::Error>>
        where
            A: Acquire<'c, Database = Postgres> + Send + 'e,
            'q: 'e,
        {
            Box::pin(async move { on_connection!(a, |c| self.0.fetch_optional(c).await) })
        }
    };
}

impl<'q> Query<'q> {
    /// Binds the next `$n` parameter.
    pub fn bind<T: 'q + Encode<'q, Postgres> + Type<Postgres> + Send>(self, value: T) -> Self {
        Self(self.0.bind(value))
    }

    /// Executes the statement and returns what it changed.
    pub fn execute<'e, 'c: 'e, A>(self, a: A) -> BoxFuture<'e, Result<PgQueryResult, sqlx::Error>>
    where
        A: Acquire<'c, Database = Postgres> + Send + 'e,
        'q: 'e,
    {
        Box::pin(async move { on_connection!(a, |c| self.0.execute(c).await) })
    }

    terminals!(PgRow);
}

impl<'q, O> QueryAs<'q, O>
where
    O: Send + Unpin + for<'r> FromRow<'r, PgRow> + 'q,
{
    /// Binds the next `$n` parameter.
    pub fn bind<T: 'q + Encode<'q, Postgres> + Type<Postgres> + Send>(self, value: T) -> Self {
        Self(self.0.bind(value))
    }

    terminals!(O);
}

impl<'q, O> QueryScalar<'q, O>
where
    O: Send + Unpin + 'q,
    (O,): for<'r> FromRow<'r, PgRow>,
{
    /// Binds the next `$n` parameter.
    pub fn bind<T: 'q + Encode<'q, Postgres> + Type<Postgres> + Send>(self, value: T) -> Self {
        Self(self.0.bind(value))
    }

    terminals!(O);
}
