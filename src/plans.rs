//! Plans: per-user limits on generations (in flight at the provider, queued in genq, enqueued
//! per minute) and a fair-share weight, set by the backend with `genq.set_user_limits` and
//! read back with `genq.get_user_limits` (migrations/0014_user_limits.sql). Users without a
//! plan get the defaults of `[users]`, which every daemon writes to the database at start
//! (a start hook, like the retention policies), so the SQL functions and the claim read the
//! same defaults on every node. `genq.enqueue_generation` refuses work over a user's queued
//! or per-minute quota with SQLSTATE `GQ429`; the claim holds back generations over
//! `max_in_flight`. Why: docs/fairness.md (Plans and quotas), docs/decisions.md (36, 37).

use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};

use crate::credits::CreditError;

/// SQLSTATE of a refusal over a user's quota (`genq.enqueue_generation`).
pub const QUOTA_EXCEEDED: &str = "GQ429";

/// The largest limit the SQL functions accept.
pub const MAX_LIMIT: u32 = 1_000_000;

const APPLY_DEFAULTS: &str = "SELECT genq.apply_user_limit_defaults($1, $2)";
const SET_LIMITS: &str = "SELECT genq.set_user_limits($1, $2, $3, $4, $5)";
const GET_LIMITS: &str = "SELECT * FROM genq.get_user_limits($1)";

/// `[users]`: the limits of users without a plan of their own. 0 is unlimited.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct UsersConfig {
    /// Generations of one user at the provider at once (submitted, not yet final); more
    /// wait queued in genq. Defaults to 0 (unlimited).
    pub max_in_flight: u32,
    /// Generations of one user waiting to be submitted; `enqueue_generation` refuses more
    /// with GQ429. Defaults to 0 (unlimited).
    pub max_queued: u32,
    /// Generations one user may enqueue per minute; more are refused with GQ429. Defaults
    /// to 0 (unlimited).
    pub per_minute: u32,
}

impl UsersConfig {
    /// Checks each limit is 0 (unlimited) or at most [`MAX_LIMIT`].
    pub fn validate(&self) -> Result<(), String> {
        for (name, value) in [
            ("max_in_flight", self.max_in_flight),
            ("max_queued", self.max_queued),
            ("per_minute", self.per_minute),
        ] {
            if value > MAX_LIMIT {
                return Err(format!(
                    "users.{name} is {value}; at most {MAX_LIMIT} (0 is unlimited)"
                ));
            }
        }
        Ok(())
    }
}

/// 0 (unlimited) as SQL NULL.
fn limit(value: u32) -> Option<i32> {
    (value > 0).then_some(value as i32)
}

/// Writes the `[users]` enqueue defaults (`max_queued`, `per_minute`) to the database (the
/// daemon's start hook). `max_in_flight` is the generation queue's per-key limit, written
/// with the queues' settings (see [`crate::config::Config`]).
pub async fn apply_defaults(pool: &PgPool, config: &UsersConfig) -> sqlx::Result<()> {
    crate::db::query(APPLY_DEFAULTS)
        .bind(limit(config.max_queued))
        .bind(limit(config.per_minute))
        .execute(pool)
        .await?;
    Ok(())
}

/// A plan as `genq.set_user_limits` takes it: `None` follows the default.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Plan {
    /// Generations at the provider at once.
    pub max_in_flight: Option<i32>,
    /// Generations waiting to be submitted.
    pub max_queued: Option<i32>,
    /// Generations enqueued per minute.
    pub per_minute: Option<i32>,
    /// Share of the claim against other users (1 by default).
    pub weight: Option<f32>,
}

/// A user's effective limits (`None`: unlimited) and whether each is the default.
#[derive(Debug, Clone, Copy, PartialEq, sqlx::FromRow)]
pub struct UserLimits {
    /// Generations at the provider at once.
    pub max_in_flight: Option<i32>,
    /// Whether `max_in_flight` is the default.
    pub max_in_flight_default: bool,
    /// Generations waiting to be submitted.
    pub max_queued: Option<i32>,
    /// Whether `max_queued` is the default.
    pub max_queued_default: bool,
    /// Generations enqueued per minute.
    pub per_minute: Option<i32>,
    /// Whether `per_minute` is the default.
    pub per_minute_default: bool,
    /// Share of the claim against other users.
    pub weight: f32,
    /// Whether `weight` is the default (1).
    pub weight_default: bool,
}

/// Sets `user_id`'s plan, replacing the previous one: a `None` field follows the default
/// (so `Plan::default()` resets the user). Returns the effective limits (read back on
/// the same connection). A limit outside
/// 1..=1,000,000 or a weight outside 0.01..=1000 is [`CreditError::InvalidInput`].
pub async fn set_user_limits(
    conn: &mut PgConnection,
    user_id: &str,
    plan: &Plan,
) -> Result<UserLimits, CreditError> {
    crate::db::query(SET_LIMITS)
        .bind(user_id)
        .bind(plan.max_in_flight)
        .bind(plan.max_queued)
        .bind(plan.per_minute)
        .bind(plan.weight)
        .execute(&mut *conn)
        .await
        .map_err(|e| CreditError::from_sqlx(e, None))?;
    get_user_limits(conn, user_id).await
}

/// `user_id`'s effective limits.
pub async fn get_user_limits(
    conn: &mut PgConnection,
    user_id: &str,
) -> Result<UserLimits, CreditError> {
    crate::db::query_as(GET_LIMITS)
        .bind(user_id)
        .fetch_one(conn)
        .await
        .map_err(|e| CreditError::from_sqlx(e, None))
}
