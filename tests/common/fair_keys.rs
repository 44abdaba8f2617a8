//! Marking keys of a fair queue (genq.mark_fair_keys, migrations 0020 and 0021): a queue whose
//! clock has moved on, with one key parked behind the clock and one ahead of it. Marking must
//! wake the first at the clock and keep the second's later time, whoever marks them (a copied
//! batch, a queue turned fair); and it must do so in one statement, which the session's own
//! function-call counts show.

use sqlx::{Connection, PgConnection, Postgres, Transaction};

use super::TestDb;

/// The queue's virtual clock in these scenarios.
pub const CLOCK: f64 = 50.0;

/// Sets `queue`'s clock to [`CLOCK`] and adds two parked keys: `parked` (vtime 10, behind the
/// clock) and `ahead` (vtime 80). The queue row must exist (make it fair first).
pub async fn park_behind_and_ahead(db: &TestDb, queue: &str) {
    sqlx::query("UPDATE genq.queues SET fair_clock = $2 WHERE name = $1")
        .bind(queue)
        .bind(CLOCK)
        .execute(&db.pool)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO genq.fair_keys (queue, key, vtime, waiting)
         VALUES ($1, 'parked', 10, false), ($1, 'ahead', 80, false)",
    )
    .bind(queue)
    .execute(&db.pool)
    .await
    .unwrap();
}

/// Asserts that `parked` and `ahead` of `queue` are waiting again, `parked` at the clock and
/// `ahead` at its own later time.
pub async fn assert_woken_no_earlier_than_the_clock(db: &TestDb, queue: &str) {
    let keys: Vec<(String, f64, bool)> = sqlx::query_as(
        "SELECT key, vtime, waiting FROM genq.fair_keys
          WHERE queue = $1 AND key IN ('parked', 'ahead') ORDER BY key",
    )
    .bind(queue)
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        keys,
        vec![("ahead".into(), 80.0, true), ("parked".into(), CLOCK, true)],
        "a parked key wakes no earlier than the clock and keeps a later time"
    );
}

/// Begins a transaction on `conn` whose calls of functions are counted (`track_functions`),
/// for [`function_calls`].
pub async fn counting_calls(conn: &mut PgConnection) -> Transaction<'_, Postgres> {
    let mut tx = conn.begin().await.unwrap();
    sqlx::query("SET LOCAL track_functions = 'all'")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx
}

/// How often each genq function of `names` ran so far on `conn`, by the session's own count
/// (in a transaction from [`counting_calls`]). Counts not yet flushed to the shared statistics
/// add up across transactions: compare a count before with one after.
pub async fn function_calls(conn: &mut PgConnection, names: &[&str]) -> Vec<i64> {
    let mut counts = Vec::with_capacity(names.len());
    for name in names {
        let n: i64 = sqlx::query_scalar(
            "SELECT coalesce(sum(pg_stat_get_xact_function_calls(p.oid)), 0)::int8
               FROM pg_proc p WHERE p.pronamespace = 'genq'::regnamespace AND p.proname = $1",
        )
        .bind(name)
        .fetch_one(&mut *conn)
        .await
        .unwrap();
        counts.push(n);
    }
    counts
}
