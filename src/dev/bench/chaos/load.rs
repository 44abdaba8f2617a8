//! The chaos suite's load: generations of the three provider dialects (credits held
//! through `genq.enqueue_generation`, as a backend enqueues them) and plain `noop` and
//! `sleep` jobs, enqueued in waves while the faults run. A wave that meets the database
//! restarting is tried again until it lands (generations carry idempotency keys, so a
//! wave whose commit answer was lost is not doubled).

use std::time::Duration;

use sqlx::PgPool;

/// Each generation costs this many credits.
pub const COST: i64 = 10;

/// Users the generations are spread over.
const USERS: i64 = 50;

const GRANT: &str = "SELECT count(genq.grant_credits('chaos-user-' || u, $1, 'chaos-grant-' || u))
  FROM generate_series(0, $2 - 1) u";

const GENERATIONS: &str = r#"
SELECT count(genq.enqueue_generation(
    'chaos-user-' || (g % $3),
    (ARRAY['fal', 'byteplus', 'replicate'])[1 + g % 3],
    (ARRAY['fal-ai/kling-video/v2.1/master/image-to-video', 'doubao-seedance-1-0-pro-250528',
           'bytedance/seedance-1-pro'])[1 + g % 3],
    jsonb_build_object('prompt', 'chaos shot ' || g, 'image_url', 'https://example.com/in.png'),
    $4, 'chaos:' || g))
  FROM generate_series($1, $2 - 1) g
"#;

const PLAIN: &str = "SELECT count(genq.enqueue('noop')) FROM generate_series(1, $1)
  UNION ALL
  SELECT count(genq.enqueue('sleep', jsonb_build_object('ms', 50 + (random() * 950)::int)))
  FROM generate_series(1, $2)";

/// Grants every user enough credits for all `generations`.
pub async fn grant(pool: &PgPool, generations: usize) -> anyhow::Result<()> {
    let per_user = (generations as i64 / USERS + 1) * COST;
    crate::db::query(GRANT)
        .bind(per_user)
        .bind(USERS)
        .execute(pool)
        .await?;
    Ok(())
}

/// One wave: generations numbered `from..to`, `noop` no-op jobs and `sleep` jobs of 50 ms
/// to 1 s. Retries (every 500 ms, up to `give_up`) while the database does not answer.
pub async fn wave(
    pool: &PgPool,
    (from, to): (usize, usize),
    noop: usize,
    sleep: usize,
    give_up: Duration,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + give_up;
    let mut generations_done = from >= to;
    let mut plain_done = noop + sleep == 0;
    loop {
        if !generations_done {
            generations_done = crate::db::query(GENERATIONS)
                .bind(from as i64)
                .bind(to as i64)
                .bind(USERS)
                .bind(COST)
                .execute(pool)
                .await
                .is_ok();
        }
        if !plain_done {
            plain_done = crate::db::query(PLAIN)
                .bind(noop as i64)
                .bind(sleep as i64)
                .execute(pool)
                .await
                .is_ok();
        }
        if generations_done && plain_done {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("the database did not take a wave of the load within {give_up:?}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
