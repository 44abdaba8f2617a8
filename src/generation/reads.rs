//! The generation reads of the SQL API (`migrations/0015_generation_reads.sql`) for Rust
//! callers, such as the daemon's event streams: one generation as the JSON users see, a
//! user's history page, Recreate, and the notification every change sends. The JSON shape
//! is documented in docs/generation.md; these functions pass it through untouched, so the
//! browser, the backend and genq read the same thing.

use serde::Deserialize;
use sqlx::PgConnection;
use uuid::Uuid;

/// The channel every change of a generation is announced on, at commit.
pub const CHANNEL: &str = "genq_generation";

/// SQLSTATE of Recreate refused because the source's input is gone (scrubbed or deleted).
pub const INPUT_GONE: &str = "GQ410";

/// Largest page [`list`] accepts.
pub const MAX_PAGE: i32 = 100;

/// `genq.get_generation`: the JSON, NULL when absent.
const GET: &str = "SELECT genq.get_generation($1)";
/// `genq.list_generations`: one JSON per row, newest first.
const LIST: &str = "SELECT g FROM genq.list_generations($1, $2, $3) AS g";
/// `genq.recreate_generation`: the new (or, for a repeated key, the first) generation's id.
const RECREATE: &str = "SELECT genq.recreate_generation($1, $2)";

/// The payload of a [`CHANNEL`] notification.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Changed {
    /// The generation.
    pub id: Uuid,
    /// Its user.
    pub user_id: String,
    /// Its version after the change.
    pub version: i64,
    /// Its state after the change.
    pub state: super::GenerationState,
}

impl Changed {
    /// Parses a notification's payload.
    pub fn parse(payload: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(payload)
    }
}

/// One generation as the API shows it, or `None` if there is none with this id.
pub async fn get(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<serde_json::Value>, sqlx::Error> {
    crate::db::query_scalar(GET).bind(id).fetch_one(conn).await
}

/// A page of `user`'s history, newest first: at most `limit` (1..=[`MAX_PAGE`]) after
/// the generation `before` (the last of the previous page; `None` for the first page).
pub async fn list(
    conn: &mut PgConnection,
    user: &str,
    limit: i32,
    before: Option<Uuid>,
) -> Result<Vec<serde_json::Value>, sqlx::Error> {
    crate::db::query_scalar(LIST)
        .bind(user)
        .bind(limit)
        .bind(before)
        .fetch_all(conn)
        .await
}

/// Runs generation `id` again for its user (same provider, model, input and cost), holding
/// the credits; idempotent per `(user, key)`. Errors carry SQLSTATE `GQ402` (insufficient
/// credits), [`INPUT_GONE`] or `P0002` (unknown id).
pub async fn recreate(conn: &mut PgConnection, id: Uuid, key: &str) -> Result<Uuid, sqlx::Error> {
    crate::db::query_scalar(RECREATE)
        .bind(id)
        .bind(key)
        .fetch_one(conn)
        .await
}
