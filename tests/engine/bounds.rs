//! Bounds on the SQL API's arguments (migration 0012): out-of-range amounts, balances,
//! sizes and keys are refused at the call with their SQLSTATE, write nothing, and leave
//! later calls working (docs/credits.md#limits).

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::common::privileges::{assert_invariants, connect, login, refused, written, Roles};
use crate::common::TestDb;

#[sqlx::test(migrations = false)]
async fn out_of_range_arguments_are_refused_with_their_sqlstate_and_write_nothing(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    let roles = Roles::of(&db);
    let mut conn = connect(
        &login(
            &db,
            &roles.backend().replace("_backend", "_api"),
            Some(&roles.backend()),
            "",
        )
        .await,
    )
    .await;
    let big = format!("{{\"prompt\": \"{}\"}}", "x".repeat(2 << 20));
    let long = "k".repeat(256);
    let before = written(&db).await;
    let cases: Vec<(String, &str)> = vec![
        (
            "SELECT genq.grant_credits('u1', 9223372036854775807, 'g1')".into(),
            "22003",
        ),
        (
            "SELECT genq.grant_credits('u1', 1000000001, 'g1')".into(),
            "22003",
        ),
        (
            format!("SELECT genq.grant_credits('u1', 1, '{long}')"),
            "22023",
        ),
        ("SELECT genq.grant_credits('a/b', 1, 'g1')".into(), "22023"),
        ("SELECT genq.grant_credits('..', 1, 'g1')".into(), "22023"),
        (
            format!("SELECT genq.enqueue_generation('u1', 'fal', 'm', '{big}', 0, 'r1')"),
            "54000",
        ),
        (
            "SELECT genq.enqueue_generation('u1', 'fal', 'm', '{}', 1000000001, 'r1')".into(),
            "22003",
        ),
        (
            format!("SELECT genq.enqueue_generation('u1', 'fal', 'm', '{{}}', 0, '{long}')"),
            "22023",
        ),
        (format!("SELECT genq.enqueue('noop', '{big}')"), "54000"),
        (
            format!("SELECT genq.enqueue('noop', unique_key => '{long}')"),
            "22023",
        ),
        (
            format!("SELECT genq.enqueue_many('[{{\"kind\": \"noop\", \"payload\": {big}}}]')"),
            "54000",
        ),
        (
            "SELECT genq.record_invoice('t1', 'o1', 'u1', 1000000001)".into(),
            "22003",
        ),
        (
            format!("SELECT genq.record_invoice('{long}', 'o1', 'u1', 1)"),
            "22023",
        ),
        (
            "SELECT genq.register_blob('u1', 'source', 'local', '../u1/x.png')".into(),
            "22023",
        ),
        (
            "SELECT genq.register_blob('u1', 'source', 'local', 'uploads/u1/../../etc/passwd')"
                .into(),
            "22023",
        ),
        (
            "SELECT genq.register_blob('u1', 'source', 'local', '/uploads/u1/x.png')".into(),
            "22023",
        ),
        (
            "SELECT genq.register_blob('u1', 'source', 's3', 'uploads/u2/x.png')".into(),
            "22023",
        ),
        (
            "SELECT genq.register_blob('u1', 'source', 's3', 'uploads/u1x/x.png')".into(),
            "22023",
        ),
        (
            "SELECT genq.register_blob('u1', 'export', 's3', 'other/u1/x.json')".into(),
            "22023",
        ),
        (
            format!(
                "SELECT genq.register_blob('u1', 'output', 's3', 'u1/{}')",
                "k".repeat(950)
            ),
            "22023",
        ),
        ("SELECT genq.request_erasure('a/b')".into(), "22023"),
    ];
    for (sql, code) in &cases {
        let short: String = sql.chars().take(120).collect();
        assert_eq!(&refused(&mut conn, sql).await, code, "{short}");
    }
    assert_eq!(written(&db).await, before, "a refused call wrote something");

    // Allowed: keys in the user's space, a Vercel URL, an export archive.
    for sql in [
        "SELECT genq.register_blob('u1', 'source', 'local', 'uploads/u1/x.png')",
        "SELECT genq.register_blob('u1', 'reference', 'vercel', 'https://s.public.blob.vercel-storage.com/refs/u1/a.png')",
        "SELECT genq.register_blob('u1', 'export', 'local', 'exports/7.json')",
    ] {
        sqlx::raw_sql(sql).execute(&mut conn).await.expect(sql);
    }

    // The balance cap: 1000 grants of the most one call may move reach it; one more credit
    // is refused, and the account still takes captures and other users still get grants.
    sqlx::raw_sql(
        "SELECT genq.grant_credits('rich', 1000000000, 'cap:' || i) FROM generate_series(1, 1000) i",
    )
    .execute(&mut conn)
    .await
    .expect("up to the cap");
    let ledger = written(&db).await[0];
    assert_eq!(
        refused(
            &mut conn,
            "SELECT genq.grant_credits('rich', 1, 'cap:over')"
        )
        .await,
        "22003"
    );
    assert_eq!(written(&db).await[0], ledger);
    sqlx::raw_sql(
        "SELECT genq.enqueue_generation('rich', 'fal', 'm', '{}', 1000000000, 'spend');
         SELECT genq.grant_credits('u3', 1, 'after')",
    )
    .execute(&mut conn)
    .await
    .expect("later calls work");
    assert_invariants(&db).await;
}
