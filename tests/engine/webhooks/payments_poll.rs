//! Webhooks, Plisio payments: the poll's bookkeeping (migration 0022, decision 56). Open
//! invoices nobody pays no longer fill every batch, so a newer one whose callback was lost
//! is polled and granted; a payment that stays open is polled less and less often; one
//! Plisio never knew is given up after its bound, status kept; a failing Plisio backs off
//! without losing the payment; a callback between polls (or during one) keeps its status.

use chrono::{DateTime, Utc};
use genq::config::PaymentsConfig;
use genq::payments::poll::{self, Answer};

use super::*;

#[sqlx::test(migrations = false)]
async fn a_newer_paid_invoice_is_polled_past_a_backlog_that_never_pays(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    // One run polls 3; 20 invoices a day old stay pending at Plisio forever. Ordered by
    // their last change alone, the 3 oldest filled every batch and the new one never came.
    let env = poll_env(po, co, |p| p.poll_batch = 3).await;
    for i in 0..20 {
        let txn = format!("stale-{i:02}");
        invoice(&env, &txn, 10, DAY).await;
        env.fake
            .set_plisio_operation(&txn, json!({ "status": "pending" }));
    }
    // Paid a minute ago; its callback was lost.
    invoice(&env, "fresh-paid", 250, Duration::from_secs(60)).await;
    env.fake
        .set_plisio_operation("fresh-paid", json!({ "status": "completed" }));

    let daemon = start_poll(&env);
    // 20 stale ones take 7 runs of 3 (200 ms apart); then the fresh one is first in line.
    wait_until(
        Duration::from_secs(15),
        "the fresh invoice granted",
        || async { poll_state(&env, "fresh-paid").await.status == "completed" },
    )
    .await;
    // The stale ones keep taking turns; the completed one is not asked again.
    env.fake
        .wait_for_stats("more poll runs", Duration::from_secs(15), |s| {
            s.plisio_polls >= 40
        })
        .await;
    daemon.shutdown().await;
    for i in 0..20 {
        let txn = format!("stale-{i:02}");
        assert!(env.fake.plisio_polls_of(&txn) >= 1, "{txn} never polled");
        let state = poll_state(&env, &txn).await;
        assert_eq!((state.status.as_str(), state.history), ("new", 0), "{txn}");
    }
    assert_eq!(env.fake.plisio_polls_of("fresh-paid"), 1);
    assert_eq!(env.balance("payer").await.available, 250);
    assert_eq!(grants(&env, "fresh-paid").await, 1);
    env.assert_ledger_clean().await;
}

#[sqlx::test(migrations = false)]
async fn a_payment_that_stays_pending_is_polled_less_and_less_often(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let env = poll_env(po, co, |_| {}).await;
    invoice(&env, "waiting", 40, Duration::ZERO).await;
    env.fake
        .set_plisio_operation("waiting", json!({ "status": "pending" }));
    let daemon = start_poll(&env);
    // Every poll's bookkeeping, by poll count: 200 ms, 400 ms, 800 ms, then the 1 s cap.
    let mut seen: Vec<PollState> = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while seen.last().is_none_or(|s| s.polls < 6) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "six polls: {seen:?}"
        );
        let state = poll_state(&env, "waiting").await;
        if state.polls > 0 && seen.last().is_none_or(|s| s.polls != state.polls) {
            seen.push(state);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    daemon.shutdown().await;
    for state in &seen {
        let expected = (0.2 * 2f64.powi(state.polls - 1)).min(1.0);
        let delay = state.delay_secs.expect("a next poll is scheduled");
        assert!(
            (delay - expected).abs() < 1e-6,
            "after poll {}: next in {delay} s, expected {expected} s",
            state.polls
        );
        assert!(state.seen && !state.given_up);
        assert_eq!((state.status.as_str(), state.history), ("new", 0));
    }
    assert!(seen.iter().any(|s| s.delay_secs == Some(1.0)), "{seen:?}");
    // No poll came before its time (a run takes what is due within half an interval).
    for pair in seen.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if b.polls == a.polls + 1 {
            let gap = seconds(b.last_polled_at.zip(a.last_polled_at).map(|(b, a)| b - a));
            assert!(gap >= a.delay_secs.unwrap_or(0.0) - 0.1, "{a:?} then {b:?}");
        }
    }
    env.assert_ledger_clean().await;
}

#[sqlx::test(migrations = false)]
async fn a_payment_plisio_never_knew_stops_being_polled_after_its_bound(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let env = poll_env(po, co, |p| p.give_up_unknown_after = HOUR).await;
    // Unknown to Plisio: two days old (past the bound) and brand new.
    invoice(&env, "ghost-old", 30, 2 * DAY).await;
    invoice(&env, "ghost-new", 30, Duration::ZERO).await;
    // Past the bound too, but known: Plisio answers for one; a callback came for the other.
    invoice(&env, "known-old", 30, 2 * DAY).await;
    env.fake
        .set_plisio_operation("known-old", json!({ "status": "pending" }));
    invoice(&env, "called-back", 30, 2 * DAY).await;
    apply_callback(&env, "called-back", "pending").await;

    let daemon = start_poll(&env);
    wait_until(
        Duration::from_secs(20),
        "the others polled three times",
        || async {
            poll_state(&env, "ghost-new").await.polls >= 3
                && poll_state(&env, "known-old").await.polls >= 3
                && poll_state(&env, "called-back").await.polls >= 3
        },
    )
    .await;
    let ghost = poll_state(&env, "ghost-old").await;
    assert!(ghost.given_up, "{ghost:?}");
    assert_eq!(ghost.polls, 1);
    assert_eq!(env.fake.plisio_polls_of("ghost-old"), 1);
    // Its status is what it was: nothing says the payer cancelled.
    assert_eq!((ghost.status.as_str(), ghost.history), ("new", 0));
    for txn in ["ghost-new", "known-old", "called-back"] {
        assert!(!poll_state(&env, txn).await.given_up, "{txn}");
    }

    // Should Plisio call back after all, the callback still applies.
    apply_callback(&env, "ghost-old", "completed").await;
    daemon.shutdown().await;
    assert_eq!(poll_state(&env, "ghost-old").await.status, "completed");
    assert_eq!(env.balance("payer").await.available, 30);
    env.assert_ledger_clean().await;
}

#[sqlx::test(migrations = false)]
async fn a_failing_plisio_backs_off_and_the_payment_is_granted_once_it_answers(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    // Both are past the unknown bound: a failing Plisio must not make them "unknown".
    let env = poll_env(po, co, |p| p.give_up_unknown_after = HOUR).await;
    invoice(&env, "outage", 120, 2 * DAY).await;
    env.fake
        .set_plisio_operation("outage", json!({ "status": "completed" }));
    env.fake.set_plisio_fault("outage", Some(500));
    invoice(&env, "locked-out", 80, 2 * DAY).await;
    fake_post(
        &env,
        "/_fake/plisio/faults/locked-out",
        json!({ "status": 401 }),
    )
    .await;

    let daemon = start_poll(&env);
    wait_until(Duration::from_secs(20), "three failed polls", || async {
        poll_state(&env, "outage").await.polls >= 3
            && poll_state(&env, "locked-out").await.polls >= 3
    })
    .await;
    for txn in ["outage", "locked-out"] {
        let state = poll_state(&env, txn).await;
        assert!(!state.given_up && !state.seen, "{state:?}");
        assert_eq!(state.status, "new");
        let expected = (0.2 * 2f64.powi(state.polls - 1)).min(1.0);
        assert!(
            (state.delay_secs.unwrap() - expected).abs() < 1e-6,
            "{state:?}"
        );
    }
    assert_eq!(env.balance("payer").await.available, 0);

    // Plisio is back: the next poll grants, once.
    env.fake.set_plisio_fault("outage", None);
    wait_until(Duration::from_secs(10), "the payment granted", || async {
        poll_state(&env, "outage").await.status == "completed"
    })
    .await;
    more_plisio_polls(&env, 2, Duration::from_secs(10)).await;
    daemon.shutdown().await;
    assert!(poll_state(&env, "outage").await.seen);
    assert_eq!(env.balance("payer").await.available, 120);
    assert_eq!(grants(&env, "outage").await, 1);
    assert!(!poll_state(&env, "locked-out").await.given_up);
    env.assert_ledger_clean().await;
}

#[sqlx::test(migrations = false)]
async fn a_callback_between_polls_applies_and_a_poll_never_overwrites_it(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let env = poll_env(po, co, |p| p.poll_max_backoff = Duration::from_secs(30)).await;
    let port = free_port();
    invoice(&env, "paid", 300, Duration::ZERO).await;
    invoice(&env, "other", 10, Duration::ZERO).await;
    for txn in ["paid", "other"] {
        env.fake
            .set_plisio_operation(txn, json!({ "status": "pending" }));
    }
    let daemon = start_poll(&env);
    let server = serve_plisio(&env, &daemon, port).await;
    wait_until(Duration::from_secs(10), "four polls", || async {
        poll_state(&env, "paid").await.polls >= 4
    })
    .await;

    // Between two polls (the next one 1.6 s away), the callback comes.
    let (status, reply) = post_plisio(
        port,
        plisio_body(&plisio_fields("paid", "completed"), PLISIO_SECRET),
    )
    .await;
    assert_eq!(
        (status, reply["result"].as_str()),
        (StatusCode::OK, Some("accepted"))
    );
    let polled = poll_state(&env, "paid").await.polls;
    // Plisio's API still says pending (it lags): later runs leave the payment alone.
    let others = poll_state(&env, "other").await.polls;
    wait_until(Duration::from_secs(20), "two more runs", || async {
        poll_state(&env, "other").await.polls >= others + 2
    })
    .await;
    daemon.shutdown().await;
    server.stop().await;
    let paid = poll_state(&env, "paid").await;
    assert_eq!((paid.status.as_str(), paid.polls), ("completed", polled));
    assert_eq!(env.balance("payer").await.available, 300);

    // A poll recorded while a callback holds the payment waits for it and keeps its status.
    let others = poll_state(&env, "other").await.polls;
    let mut callback = env.db.pool.begin().await.unwrap();
    genq::payments::record(&mut callback, "other", "completed", &json!({}))
        .await
        .unwrap();
    let pool = env.db.pool.clone();
    let backoff = env.config.payments.backoff();
    let poll = tokio::spawn(async move {
        let mut conn = pool.acquire().await.unwrap();
        poll::record(&mut conn, "other", Answer::Known, backoff).await
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        !poll.is_finished(),
        "the poll waits for the callback's lock"
    );
    callback.commit().await.unwrap();
    poll.await.unwrap().unwrap();
    let other = poll_state(&env, "other").await;
    assert_eq!(
        (other.status.as_str(), other.polls),
        ("completed", others + 1)
    );
    assert_eq!(env.balance("payer").await.available, 310);
    assert_eq!(
        (grants(&env, "paid").await, grants(&env, "other").await),
        (1, 1)
    );
    env.assert_ledger_clean().await;
}

const HOUR: Duration = Duration::from_secs(3600);
const DAY: Duration = Duration::from_secs(24 * 3600);

/// A fresh database and the fake's Plisio, with `[payments]` for a test: a run every
/// 200 ms, payments due at once, the backoff capped at 1 s; `change` adjusts the rest.
async fn poll_env(
    po: PgPoolOptions,
    co: PgConnectOptions,
    change: impl FnOnce(&mut PaymentsConfig),
) -> GenEnv {
    let mut env = GenEnv::setup(po, co).await;
    plisio_poll_config(&mut env, change);
    env
}

fn plisio_poll_config(env: &mut GenEnv, change: impl FnOnce(&mut PaymentsConfig)) {
    let p = &mut env.config.payments;
    p.plisio_base_url = env.fake.plisio_base_url();
    p.poll_interval = Duration::from_millis(200);
    p.poll_after = Duration::ZERO;
    p.poll_max_backoff = Duration::from_secs(1);
    change(p);
    p.validate().unwrap();
}

/// A daemon running the pipeline with Plisio's key, so `payments.poll` is registered.
fn start_poll(env: &GenEnv) -> DaemonHandle {
    let mut pipeline = Pipeline::from_config(&env.config).unwrap();
    pipeline.plisio_api_key = Some(genq::outbound::Secret::new(PLISIO_SECRET));
    let mut registry = Registry::new();
    Arc::new(pipeline).register(&mut registry);
    env.db.daemon(env.config.clone(), registry)
}

/// A verified callback's effect, through the callback's own code path.
async fn apply_callback(env: &GenEnv, txn: &str, status: &str) {
    let mut tx = env.db.pool.begin().await.unwrap();
    let result = genq::payments::record(&mut tx, txn, status, &json!({}))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(result, "accepted");
}

/// A payment's status and its poll bookkeeping.
#[derive(Debug)]
struct PollState {
    status: String,
    history: i64,
    polls: i32,
    /// Seconds from its last poll to its next one.
    delay_secs: Option<f64>,
    last_polled_at: Option<DateTime<Utc>>,
    /// Plisio answered with it once.
    seen: bool,
    given_up: bool,
}

async fn poll_state(env: &GenEnv, txn: &str) -> PollState {
    let row: (
        String,
        i64,
        i32,
        Option<f64>,
        Option<DateTime<Utc>>,
        bool,
        bool,
    ) = sqlx::query_as(
        "SELECT status, jsonb_array_length(history)::int8, polls,
                    extract(epoch FROM next_poll_at - last_polled_at)::float8,
                    last_polled_at, plisio_seen_at IS NOT NULL, poll_given_up_at IS NOT NULL
               FROM genq.payments WHERE txn_id = $1",
    )
    .bind(txn)
    .fetch_one(&env.db.pool)
    .await
    .unwrap();
    PollState {
        status: row.0,
        history: row.1,
        polls: row.2,
        delay_secs: row.3,
        last_polled_at: row.4,
        seen: row.5,
        given_up: row.6,
    }
}

fn seconds(d: Option<chrono::TimeDelta>) -> f64 {
    d.and_then(|d| d.num_microseconds()).unwrap_or(0) as f64 / 1e6
}

async fn grants(env: &GenEnv, txn: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM genq.ledger WHERE idempotency_key = $1")
        .bind(format!("plisio:{txn}"))
        .fetch_one(&env.db.pool)
        .await
        .unwrap()
}
