//! Scrubbing personal data out of rows that stay: generation inputs (prompts) and output
//! metadata, and raw webhook bodies. The rows themselves (ids, times, states, costs) are
//! the operational record the privacy policies allow to be kept.

use sqlx::PgPool;

/// Final generations whose input is past the `inputs` policy, oldest first.
const SCRUB_AGED_INPUTS: &str = r#"
SELECT genq.scrub_generations(ARRAY(
    SELECT g.id FROM genq.generations g
     WHERE g.scrubbed_at IS NULL AND g.finished_at IS NOT NULL
       AND g.finished_at <= now() - genq.policy_keep('inputs')
     ORDER BY g.finished_at LIMIT $1), 'inputs')
"#;

/// Generations the user deleted while they still ran, now final.
const SCRUB_DELETED_INPUTS: &str = r#"
SELECT genq.scrub_generations(ARRAY(
    SELECT g.id FROM genq.generations g
     WHERE g.scrubbed_at IS NULL AND g.deleted_at IS NOT NULL
       AND g.state IN ('succeeded', 'failed', 'cancelled')
     LIMIT $1), 'user_deletion')
"#;

/// Webhook bodies past the `webhook_bodies` policy, oldest first.
const SCRUB_AGED_WEBHOOKS: &str = r#"
SELECT genq.scrub_webhook_bodies(ARRAY(
    SELECT w.id FROM genq.webhook_events w
     WHERE w.body IS NOT NULL AND w.received_at <= now() - genq.policy_keep('webhook_bodies')
     ORDER BY w.received_at LIMIT $1), 'webhook_bodies')
"#;

/// The user's final generations, unscrubbed.
const SCRUB_USER_INPUTS: &str = r#"
SELECT genq.scrub_generations(ARRAY(
    SELECT g.id FROM genq.generations g WHERE g.user_id = $1 AND g.scrubbed_at IS NULL), 'erasure')
"#;

/// Callbacks about the user's generations and payments.
const SCRUB_USER_WEBHOOKS: &str = r#"
SELECT genq.scrub_webhook_bodies(ARRAY(
    SELECT w.id FROM genq.webhook_events w
     WHERE w.body IS NOT NULL
       AND (w.generation_id IN (SELECT g.id FROM genq.generations g WHERE g.user_id = $1)
            OR (w.provider = 'plisio'
                AND w.request_id IN (SELECT p.txn_id FROM genq.payments p WHERE p.user_id = $1)))),
    'erasure')
"#;

/// What one scrub pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Scrubbed {
    /// Generations whose input and output metadata were scrubbed.
    pub inputs: i64,
    /// Webhook bodies dropped.
    pub webhook_bodies: i64,
}

/// Scrubs what the policies made due: up to `batch` rows per statement, at most
/// `max_batches` statements per kind (a larger backlog is finished by the next sweep).
pub async fn scrub_due(pool: &PgPool, batch: i64, max_batches: u32) -> sqlx::Result<Scrubbed> {
    let mut done = Scrubbed::default();
    for (sql, into_inputs) in [
        (SCRUB_DELETED_INPUTS, true),
        (SCRUB_AGED_INPUTS, true),
        (SCRUB_AGED_WEBHOOKS, false),
    ] {
        for _ in 0..max_batches {
            let n: i64 = crate::db::query_scalar(sql)
                .bind(batch)
                .fetch_one(pool)
                .await?;
            if into_inputs {
                done.inputs += n;
            } else {
                done.webhook_bodies += n;
            }
            if n < batch {
                break;
            }
        }
    }
    Ok(done)
}

/// Scrubs every input and webhook body of `user` now (policy `erasure`).
pub async fn scrub_user(conn: &mut sqlx::PgConnection, user: &str) -> sqlx::Result<Scrubbed> {
    let inputs: i64 = crate::db::query_scalar(SCRUB_USER_INPUTS)
        .bind(user)
        .fetch_one(&mut *conn)
        .await?;
    let webhook_bodies: i64 = crate::db::query_scalar(SCRUB_USER_WEBHOOKS)
        .bind(user)
        .fetch_one(&mut *conn)
        .await?;
    Ok(Scrubbed {
        inputs,
        webhook_bodies,
    })
}
