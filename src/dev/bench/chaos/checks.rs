//! The chaos suite's invariants, read from the database and the fake provider once the
//! faults have stopped: every job and generation final, no job lost, no generation paid
//! twice at its provider, every credit hold settled, `genq.check_ledger()` and
//! `genq.check_retention()` clean.

use std::collections::BTreeMap;

use sqlx::PgPool;

use crate::dev::fake_provider::FakeStats;
use crate::providers::ProviderKind;

/// The job kinds the load creates (directly or through generations). Periodic
/// maintenance jobs are left out: a new slot is always waiting.
const LOAD_KINDS: &str = "('noop', 'sleep', 'generation.submit', 'generation.poll', \
     'generation.reconcile', 'generation.cancel')";

/// Generations and load jobs not yet final.
pub async fn open_work(pool: &PgPool) -> sqlx::Result<(i64, i64)> {
    crate::db::query_as(&format!(
        "SELECT (SELECT count(*) FROM genq.generations
                  WHERE state NOT IN ('succeeded', 'failed', 'cancelled')),
                (SELECT count(*) FROM genq.jobs WHERE kind IN {LOAD_KINDS}
                  AND state NOT IN ('completed', 'discarded', 'cancelled'))"
    ))
    .fetch_one(pool)
    .await
}

/// What the run ended with.
#[derive(Debug, Default, Clone)]
pub struct Findings {
    /// Generations by state.
    pub generations: BTreeMap<String, i64>,
    /// Load jobs by kind and state.
    pub jobs: BTreeMap<String, i64>,
    /// Generations whose lost submit answer was recovered from the provider's callback (fal).
    pub adopted: i64,
    /// Generations failed because their submit's outcome stayed unknown past the grace.
    pub ambiguous_failed: i64,
    /// Broken invariants, one line each; empty when the run was clean.
    pub violations: Vec<String>,
}

/// Reads the final state and checks every invariant.
pub async fn check(
    pool: &PgPool,
    fake: &FakeStats,
    callback_urls: &[String],
) -> anyhow::Result<Findings> {
    let mut f = Findings::default();
    let generations: Vec<(String, String, i64)> = crate::db::query_as(
        "SELECT provider, state::text, count(*) FROM genq.generations GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .fetch_all(pool)
    .await?;
    let mut per_provider: BTreeMap<String, i64> = BTreeMap::new();
    for (provider, state, n) in generations {
        *f.generations.entry(state).or_default() += n;
        *per_provider.entry(provider).or_default() += n;
    }
    (f.adopted, f.ambiguous_failed) = crate::db::query_as(
        "SELECT count(*) FILTER (WHERE provider_meta ->> 'adopted_from_webhook' = 'true'),
                count(*) FILTER (WHERE state = 'failed' AND error LIKE 'submit outcome unknown%')
           FROM genq.generations",
    )
    .fetch_one(pool)
    .await?;
    let jobs: Vec<(String, String, i64)> = crate::db::query_as(&format!(
        "SELECT kind, state::text, count(*) FROM genq.jobs WHERE kind IN {LOAD_KINDS}
          GROUP BY 1, 2 ORDER BY 1, 2"
    ))
    .fetch_all(pool)
    .await?;
    for (kind, state, n) in jobs {
        f.jobs.insert(format!("{kind} {state}"), n);
        if !matches!(state.as_str(), "completed" | "discarded" | "cancelled") {
            f.violations.push(format!("{n} {kind} jobs still {state}"));
        }
        if state == "discarded" {
            f.violations
                .push(format!("{n} {kind} jobs discarded (work given up)"));
        }
    }
    f.violations.extend(stragglers(pool, callback_urls).await?);
    for (state, n) in &f.generations {
        if !matches!(state.as_str(), "succeeded" | "failed" | "cancelled") {
            f.violations.push(format!("{n} generations still {state}"));
        }
    }
    for kind in ProviderKind::ALL {
        let ours = per_provider.get(kind.as_str()).copied().unwrap_or(0);
        let paid = fake.created(kind) as i64;
        if paid > ours {
            f.violations.push(format!(
                "{}: {paid} provider jobs created for {ours} generations (a submit ran twice)",
                kind.as_str()
            ));
        }
    }
    let unsettled: i64 = crate::db::query_scalar(
        "SELECT count(*) FROM genq.ledger h WHERE h.kind = 'hold' AND NOT EXISTS (
            SELECT 1 FROM genq.ledger s WHERE s.generation_id = h.generation_id
               AND s.kind IN ('capture', 'release'))",
    )
    .fetch_one(pool)
    .await?;
    if unsettled > 0 {
        f.violations.push(format!(
            "{unsettled} credit holds neither captured nor released"
        ));
    }
    let mut conn = pool.acquire().await?;
    for v in crate::credits::check_ledger(&mut conn).await? {
        f.violations
            .push(format!("check_ledger: {}: {}", v.invariant, v.detail));
    }
    for v in crate::retention::check(pool).await? {
        f.violations
            .push(format!("check_retention: {}: {}", v.invariant, v.detail));
    }
    Ok(f)
}

/// A load job that is not final, with what the report needs to explain it.
#[derive(sqlx::FromRow)]
struct Straggler {
    kind: String,
    state: String,
    attempt: i32,
    due_in: f64,
    error: Option<String>,
    generation: Option<String>,
    generation_id: Option<String>,
}

/// Up to 10 load jobs that are not final, one line each: kind, state, attempt, when due,
/// last error, the generation and whether its provider ever received it.
async fn stragglers(pool: &PgPool, callback_urls: &[String]) -> sqlx::Result<Vec<String>> {
    let rows: Vec<Straggler> = crate::db::query_as(&format!(
        "SELECT j.kind, j.state::text AS state, j.attempt,
                extract(epoch FROM j.run_at - now())::float8 AS due_in,
                j.errors -> -1 ->> 'error' AS error,
                g.provider || ' ' || g.state::text AS generation, g.id::text AS generation_id
           FROM genq.jobs j
           LEFT JOIN genq.generations g ON g.id::text = j.payload ->> 'generation_id'
          WHERE j.kind IN {LOAD_KINDS}
            AND j.state NOT IN ('completed', 'discarded', 'cancelled')
          ORDER BY j.id LIMIT 10"
    ))
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let received = r
                .generation_id
                .as_deref()
                .is_some_and(|id| callback_urls.iter().any(|u| u.contains(id)));
            format!(
                "  {} {}, attempt {}, due in {:.0} s, generation {} {} ({} at the provider), \
                 last error: {}",
                r.kind,
                r.state,
                r.attempt,
                r.due_in,
                r.generation.unwrap_or_default(),
                r.generation_id.unwrap_or_default(),
                if received { "received" } else { "never" },
                r.error.unwrap_or_default()
            )
        })
        .collect())
}
