//! Every statement the event streams run: the current state of one generation, and the
//! generations of users to replay (on connect, on `Last-Event-ID`, after the LISTEN
//! connection came back). Each row carries `genq.get_generation`'s JSON (its body,
//! `genq.generation_json`, on the row already read), read once and shared
//! by every stream of the user, the generation's `version` (bumped on every change) and a
//! cursor (its `updated_at` in unix microseconds) that orders a user's events.

use std::sync::Arc;

use sqlx::PgPool;
use uuid::Uuid;

use super::Change;

const READ_ONE: &str = r#"
SELECT g.id, g.user_id, g.version,
       (extract(epoch FROM g.updated_at) * 1000000)::int8 AS cursor,
       g.state::text IN ('succeeded', 'failed', 'cancelled') AS final,
       genq.generation_json(g)::text AS data
  FROM genq.generations g
 WHERE g.id = $1
"#;

// Per user: the unfinished generations and those changed after the cursor, newest first,
// at most $3 each (a LATERAL per user keeps the limit per user in one statement).
const READ_USERS: &str = r#"
SELECT g.id, g.user_id, g.version, g.cursor, g.final, g.data
  FROM unnest($1::text[]) AS u(user_id)
 CROSS JOIN LATERAL (
       SELECT x.id, x.user_id, x.version,
              (extract(epoch FROM x.updated_at) * 1000000)::int8 AS cursor,
              x.state::text IN ('succeeded', 'failed', 'cancelled') AS final,
              genq.generation_json(x)::text AS data
         FROM genq.generations x
        WHERE x.user_id = u.user_id
          AND (x.state::text NOT IN ('succeeded', 'failed', 'cancelled')
               OR x.updated_at > to_timestamp($2::float8 / 1000000))
        ORDER BY x.updated_at DESC
        LIMIT $3) g
 ORDER BY g.cursor
"#;

type Row = (Uuid, String, i64, i64, bool, String);

fn change(row: Row) -> (String, Arc<Change>) {
    let (id, user, version, cursor, is_final, data) = row;
    (
        user,
        Arc::new(Change {
            id,
            version,
            cursor,
            is_final,
            data: data.into(),
        }),
    )
}

/// The current state of generation `id` and its owner, if it exists.
pub async fn read_one(
    pool: &PgPool,
    id: Uuid,
) -> Result<Option<(String, Arc<Change>)>, sqlx::Error> {
    let row: Option<Row> = crate::db::query_as(READ_ONE)
        .bind(id)
        .fetch_optional(pool)
        .await?;
    Ok(row.map(change))
}

/// For each of `users`: the generations not final and those changed after `since` (unix
/// microseconds), at most `limit` per user, oldest cursor first; with their owner.
pub async fn read_users(
    pool: &PgPool,
    users: &[String],
    since: i64,
    limit: i64,
) -> Result<Vec<(String, Arc<Change>)>, sqlx::Error> {
    let rows: Vec<Row> = crate::db::query_as(READ_USERS)
        .bind(users)
        .bind(since as f64)
        .bind(limit)
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().map(change).collect())
}

#[cfg(test)]
mod tests {
    /// The final states: a stream of one generation ends after sending one of them.
    const FINAL: &str = "IN ('succeeded', 'failed', 'cancelled')";

    #[test]
    fn the_final_states_agree_everywhere() {
        assert_eq!(super::READ_ONE.matches(FINAL).count(), 1);
        assert_eq!(super::READ_USERS.matches(FINAL).count(), 2);
    }
}
