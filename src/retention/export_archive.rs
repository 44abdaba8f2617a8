//! Data export: the SQL behind `genq.request_export` and the `privacy.export` job. The
//! archive is one JSON document (format `genq-export/1`) of everything genq holds about
//! the user: balance, generations (inputs and outputs still kept), ledger, payments, and
//! the metadata of their blobs. It is written to the output store and registered as an
//! `export` blob, so it is deleted on its own schedule like any other copy of user data.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

/// Requests an export for `user_id` (`genq.request_export`); returns the request id.
pub async fn request(conn: &mut PgConnection, user_id: &str) -> sqlx::Result<i64> {
    crate::db::query_scalar("SELECT genq.request_export($1)")
        .bind(user_id)
        .fetch_one(conn)
        .await
}

/// An export request.
#[derive(Debug, Clone, sqlx::FromRow, serde::Serialize)]
pub struct ExportRequest {
    /// Its id.
    pub id: i64,
    /// The user.
    pub user_id: String,
    /// When it was requested.
    pub requested_at: DateTime<Utc>,
    /// When the archive was written.
    pub completed_at: Option<DateTime<Utc>>,
    /// The archive's blob.
    pub blob_id: Option<i64>,
    /// Its store.
    pub store: Option<String>,
    /// Its key in the store.
    pub key: Option<String>,
    /// The link handed out: presigned/signed and expiring where the store can make one.
    pub url: Option<String>,
    /// When it will be deleted (`None`: kept).
    pub expires_at: Option<DateTime<Utc>>,
}

/// Reads request `id`.
pub async fn get(pool: &PgPool, id: i64) -> sqlx::Result<Option<ExportRequest>> {
    crate::db::query_as(
        "SELECT id, user_id, requested_at, completed_at, blob_id, store, key, url, expires_at
           FROM genq.export_requests WHERE id = $1",
    )
    .bind(id)
    .fetch_optional(pool)
    .await
}

/// The archive, built by Postgres in one statement (one consistent snapshot).
const ARCHIVE: &str = r#"
SELECT jsonb_build_object(
  'format', 'genq-export/1',
  'user_id', $1::text,
  'generated_at', now(),
  'balance', (SELECT jsonb_build_object('available', a.available, 'held', a.held)
                FROM genq.accounts a WHERE a.user_id = $1),
  'generations', coalesce((
      SELECT jsonb_agg(jsonb_build_object(
               'id', g.id, 'provider', g.provider, 'model', g.model, 'state', g.state,
               'input', CASE WHEN g.scrubbed_at IS NULL THEN g.input END,
               'output', g.output, 'cost', g.cost, 'error', g.error,
               'created_at', g.created_at, 'finished_at', g.finished_at,
               'scrubbed_at', g.scrubbed_at) ORDER BY g.created_at)
        FROM genq.generations g WHERE g.user_id = $1 AND g.deleted_at IS NULL), '[]'::jsonb),
  'ledger', coalesce((
      SELECT jsonb_agg(jsonb_build_object(
               'id', l.id, 'kind', l.kind, 'amount', l.amount, 'generation_id', l.generation_id,
               'note', l.note, 'created_at', l.created_at) ORDER BY l.id)
        FROM genq.ledger l WHERE l.user_id = $1), '[]'::jsonb),
  'payments', coalesce((
      SELECT jsonb_agg(jsonb_build_object(
               'txn_id', p.txn_id, 'order_number', p.order_number, 'credits', p.credits,
               'status', p.status, 'amount', p.amount, 'currency', p.currency,
               'created_at', p.created_at, 'granted_at', p.granted_at) ORDER BY p.created_at)
        FROM genq.payments p WHERE p.user_id = $1), '[]'::jsonb),
  'blobs', coalesce((
      SELECT jsonb_agg(jsonb_build_object(
               'id', b.id, 'role', b.role, 'store', b.store, 'key', b.key,
               'generation_id', b.generation_id, 'created_at', b.created_at,
               'expires_at', b.expires_at, 'deleted_at', b.deleted_at) ORDER BY b.id)
        FROM genq.blobs b WHERE b.user_id = $1), '[]'::jsonb)
)
"#;

/// Builds the archive of `user_id`.
pub async fn archive(pool: &PgPool, user_id: &str) -> sqlx::Result<serde_json::Value> {
    crate::db::query_scalar(ARCHIVE)
        .bind(user_id)
        .fetch_one(pool)
        .await
}

/// Records where request `id`'s archive is (blob `blob_id`) and `url`, the link handed out
/// (signed and expiring where the store can). Returns false if the request was already
/// complete.
pub async fn complete(
    conn: &mut PgConnection,
    id: i64,
    blob_id: i64,
    stored: &crate::storage::StoredObject,
    url: &str,
) -> sqlx::Result<bool> {
    let updated = crate::db::query(
        "UPDATE genq.export_requests r
            SET completed_at = now(), blob_id = $2, store = $3, key = $4, url = $5,
                expires_at = (SELECT b.expires_at FROM genq.blobs b WHERE b.id = $2)
          WHERE r.id = $1 AND r.completed_at IS NULL",
    )
    .bind(id)
    .bind(blob_id)
    .bind(&stored.store)
    .bind(&stored.key)
    .bind(url)
    .execute(conn)
    .await?;
    Ok(updated.rows_affected() == 1)
}
