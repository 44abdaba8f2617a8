//! Console sessions (`genq.console_sessions`): a random id in an HttpOnly cookie, its
//! SHA-256 in the table (a copy of the table opens no session), a per-session CSRF token,
//! and an absolute expiry.

use std::time::Duration;

use rand::RngCore;
use sha2::{Digest, Sha256};
use sqlx::PgPool;

const CREATE: &str = r#"
INSERT INTO genq.console_sessions (id_hash, role, csrf, expires_at)
VALUES ($1, $2, $3, now() + make_interval(secs => $4))
"#;

const LOOKUP: &str = r#"
SELECT role, csrf FROM genq.console_sessions WHERE id_hash = $1 AND expires_at > now()
"#;

const DELETE: &str = "DELETE FROM genq.console_sessions WHERE id_hash = $1";

const PRUNE: &str = "DELETE FROM genq.console_sessions WHERE expires_at <= now()";

/// How long a session lasts from login (absolute, not sliding).
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);

/// What a session may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Logged in with the admin token: sees and acts.
    Admin,
    /// Logged in with the read-only token: sees, never acts.
    Readonly,
}

impl Role {
    /// The database and audit spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Readonly => "readonly",
        }
    }
}

/// A live session.
#[derive(Debug, Clone)]
pub struct Session {
    /// Its role.
    pub role: Role,
    /// The token every form of this session must carry back.
    pub csrf: String,
    /// The first hex digits of the id's hash: names the session in the audit, opens nothing.
    pub tag: String,
    hash: Vec<u8>,
}

impl Session {
    /// `role:tag`, as the audit names the actor.
    pub fn actor(&self) -> String {
        format!("{}:{}", self.role.as_str(), self.tag)
    }
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::thread_rng().fill_bytes(&mut buf);
    hex::encode(buf)
}

fn hash(id: &str) -> Vec<u8> {
    Sha256::digest(id.as_bytes()).to_vec()
}

/// Opens a session; returns the cookie value (the only copy of the id) and the session.
pub async fn create(pool: &PgPool, role: Role) -> Result<(String, Session), sqlx::Error> {
    crate::db::query(PRUNE).execute(pool).await?;
    let id = random_hex(32);
    let csrf = random_hex(32);
    let h = hash(&id);
    crate::db::query(CREATE)
        .bind(&h)
        .bind(role.as_str())
        .bind(&csrf)
        .bind(SESSION_TTL.as_secs_f64())
        .execute(pool)
        .await?;
    let session = Session {
        role,
        csrf,
        tag: hex::encode(&h[..4]),
        hash: h,
    };
    Ok((id, session))
}

/// The live session of a cookie value, if any.
pub async fn lookup(pool: &PgPool, id: &str) -> Result<Option<Session>, sqlx::Error> {
    let h = hash(id);
    let row: Option<(String, String)> = crate::db::query_as(LOOKUP)
        .bind(&h)
        .fetch_optional(pool)
        .await?;
    Ok(row.map(|(role, csrf)| Session {
        role: if role == "admin" {
            Role::Admin
        } else {
            Role::Readonly
        },
        csrf,
        tag: hex::encode(&h[..4]),
        hash: h,
    }))
}

/// Ends a session.
pub async fn delete(pool: &PgPool, session: &Session) -> Result<(), sqlx::Error> {
    crate::db::query(DELETE)
        .bind(&session.hash)
        .execute(pool)
        .await?;
    Ok(())
}
