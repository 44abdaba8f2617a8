//! Fixture for privilege scenarios: login roles that are members of a database's genq
//! roles (as a product's backend or the daemons would be), connections as them, a second
//! database in the same cluster, and the checks every scenario ends with.

use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection};

use super::{role_prefix_for, TestDb};

/// The genq group roles of a test database.
pub struct Roles {
    pub prefix: String,
}

impl Roles {
    pub fn of(db: &TestDb) -> Self {
        Self {
            prefix: role_prefix_for(db.options.get_database().expect("a test database")),
        }
    }
    pub fn backend(&self) -> String {
        format!("{}_backend", self.prefix)
    }
    pub fn worker(&self) -> String {
        format!("{}_worker", self.prefix)
    }
    pub fn owner(&self) -> String {
        format!("{}_owner", self.prefix)
    }
}

/// The name of the test database's daemon login (a member of its worker role only).
pub fn worker_login_name(db: &TestDb) -> String {
    format!("{}_daemon", Roles::of(db).prefix)
}

/// Creates (or reuses) the daemon login of [`worker_login_name`].
pub async fn worker_login(db: &TestDb) -> PgConnectOptions {
    login(
        db,
        &worker_login_name(db),
        Some(&Roles::of(db).worker()),
        "",
    )
    .await
}

/// Runs `sql` as a superuser on `db`, panicking with the statement on error.
pub async fn admin(db: &TestDb, sql: &str) {
    sqlx::raw_sql(sql)
        .execute(&db.pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
}

/// A LOGIN role named `name` (created once, reused by later runs of the same test) that is
/// a member of `group` (or of nothing), with `attributes` such as `NOINHERIT`. Returns the
/// options to connect to `db` as it.
pub async fn login(
    db: &TestDb,
    name: &str,
    group: Option<&str>,
    attributes: &str,
) -> PgConnectOptions {
    admin(
        db,
        &format!(
            "DO $$ BEGIN
                 CREATE ROLE {name} LOGIN;
             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
             END $$;
             ALTER ROLE {name} NOSUPERUSER LOGIN {attributes};"
        ),
    )
    .await;
    if let Some(group) = group {
        admin(db, &format!("GRANT {group} TO {name}")).await;
    }
    db.options.clone().username(name)
}

/// A connection as `options`' role.
pub async fn connect(options: &PgConnectOptions) -> PgConnection {
    PgConnection::connect_with(options).await.expect("connect")
}

/// Runs `sql` on `conn` and returns the SQLSTATE it failed with (panics if it succeeded).
pub async fn refused(conn: &mut PgConnection, sql: &str) -> String {
    match sqlx::raw_sql(sql).execute(&mut *conn).await {
        Ok(_) => panic!("{sql}: succeeded, expected a refusal"),
        Err(sqlx::Error::Database(e)) => e.code().map(|c| c.into_owned()).unwrap_or_default(),
        Err(e) => panic!("{sql}: {e}"),
    }
}

/// Runs each of `statements` on `conn` and checks each is refused for lack of privilege
/// (42501); `who` names the caller in the failure message.
pub async fn assert_denied(conn: &mut PgConnection, statements: &[&str], who: &str) {
    for sql in statements {
        assert_eq!(refused(conn, sql).await, "42501", "{who}: {sql}");
    }
}

/// Whether `role` is a superuser.
pub async fn is_superuser(db: &TestDb, role: &str) -> bool {
    sqlx::query_scalar("SELECT rolsuper FROM pg_roles WHERE rolname = $1")
        .bind(role)
        .fetch_one(&db.pool)
        .await
        .expect("role exists")
}

/// Panics with every money or privacy invariant violated, if any.
pub async fn assert_invariants(db: &TestDb) {
    let violations: Vec<(String, String)> = sqlx::query_as(
        "SELECT * FROM genq.check_ledger() UNION ALL SELECT * FROM genq.check_retention()",
    )
    .fetch_all(&db.pool)
    .await
    .expect("checks");
    assert!(
        violations.is_empty(),
        "invariants violated: {violations:#?}"
    );
}

/// A second database in the same cluster, named after `db`'s prefix, migrated with its own
/// role prefix. Dropped (with its roles) by [`OtherDb::drop`].
pub struct OtherDb {
    pub name: String,
    pub options: PgConnectOptions,
    pub prefix: String,
}

impl OtherDb {
    pub async fn create(db: &TestDb) -> Self {
        let name = fresh_database(db, "b", None).await;
        let options = db.options.clone().database(&name);
        genq::db::migrate(&options, &name).await.expect("migrate B");
        Self {
            prefix: name.clone(),
            name,
            options,
        }
    }

    pub async fn drop(self, db: &TestDb) {
        drop_database(db, &self.name).await;
    }
}

/// A fresh (unmigrated) database `<prefix>_<suffix>` next to `db`, owned by `owner` if given.
pub async fn fresh_database(db: &TestDb, suffix: &str, owner: Option<&str>) -> String {
    let name = format!("{}_{suffix}", Roles::of(db).prefix);
    admin(db, &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
    let owner = owner.map(|o| format!(" OWNER {o}")).unwrap_or_default();
    admin(db, &format!("CREATE DATABASE {name}{owner}")).await;
    name
}

/// Drops a database made by [`fresh_database`] and the genq roles named after it.
pub async fn drop_database(db: &TestDb, name: &str) {
    admin(db, &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).await;
    let mut conn = db.pool.acquire().await.unwrap();
    genq::db::drop_roles(&mut conn, name)
        .await
        .expect("drop the database's roles");
}

/// Counts of the rows the SQL API writes, to show a refused call wrote nothing.
pub async fn written(db: &TestDb) -> Vec<i64> {
    sqlx::query_scalar(
        "SELECT n FROM (VALUES
             (1, (SELECT count(*) FROM genq.ledger)), (2, (SELECT count(*) FROM genq.accounts)),
             (3, (SELECT count(*) FROM genq.generations)), (4, (SELECT count(*) FROM genq.jobs)),
             (5, (SELECT count(*) FROM genq.blobs)), (6, (SELECT count(*) FROM genq.payments)),
             (7, (SELECT count(*) FROM genq.erasure_requests)),
             (8, (SELECT count(*) FROM genq.export_requests))) AS t (i, n)
         ORDER BY i",
    )
    .fetch_all(&db.pool)
    .await
    .expect("counts")
}
