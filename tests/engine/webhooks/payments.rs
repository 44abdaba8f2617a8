//! Webhooks, Plisio payments: callbacks grant credits once (mismatches go to review), and
//! the poll completes payments whose callback never came.

use super::*;

#[sqlx::test(migrations = false)]
async fn plisio_callbacks_grant_credits_once_and_send_mismatches_to_review(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let (env, port) = hook_env(po, co).await;
    let daemon = env.daemon();
    let server = serve_plisio(&env, &daemon, port).await;
    for (txn, user, credits) in [
        ("t-ok", "payer", 500_i64),
        ("t-odd", "payer", 300),
        ("t-late", "payer", 100),
    ] {
        sqlx::query("SELECT genq.record_invoice($1, $2, $3, $4)")
            .bind(txn)
            .bind(format!("order-{txn}"))
            .bind(user)
            .bind(credits)
            .execute(&env.db.pool)
            .await
            .unwrap();
    }
    // Recording the same invoice again is a no-op; other values are refused.
    sqlx::query("SELECT genq.record_invoice('t-ok', 'order-t-ok', 'payer', 500)")
        .execute(&env.db.pool)
        .await
        .unwrap();
    assert!(
        sqlx::query("SELECT genq.record_invoice('t-ok', 'order-t-ok', 'payer', 501)")
            .execute(&env.db.pool)
            .await
            .is_err()
    );

    // pending, then completed three times (duplicates): one grant.
    let (s, r) = post_plisio(
        port,
        plisio_body(&plisio_fields("t-ok", "pending"), PLISIO_SECRET),
    )
    .await;
    assert_eq!(
        (s, r["result"].as_str().unwrap()),
        (StatusCode::OK, "accepted")
    );
    for expected in ["accepted", "duplicate", "duplicate"] {
        let (s, r) = post_plisio(
            port,
            plisio_body(&plisio_fields("t-ok", "completed"), PLISIO_SECRET),
        )
        .await;
        assert_eq!(
            (s, r["result"].as_str().unwrap()),
            (StatusCode::OK, expected)
        );
    }
    assert_eq!(env.balance("payer").await.available, 500);
    // A late `expired` does not undo a completed payment.
    post_plisio(
        port,
        plisio_body(&plisio_fields("t-ok", "expired"), PLISIO_SECRET),
    )
    .await;
    let (status, history): (String, Value) =
        sqlx::query_as("SELECT status, history FROM genq.payments WHERE txn_id = 't-ok'")
            .fetch_one(&env.db.pool)
            .await
            .unwrap();
    assert_eq!(status, "completed");
    assert_eq!(history.as_array().unwrap().len(), 3, "{history}");
    assert_eq!(env.balance("payer").await.available, 500);

    // A bad hash: 401, nothing recorded, nothing granted.
    let forged = plisio_body(&plisio_fields("t-late", "completed"), "not-the-secret");
    let (s, _) = post_plisio(port, forged).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let tampered =
        plisio_body(&plisio_fields("t-late", "completed"), PLISIO_SECRET).replace("10.50", "10.5");
    let (s, _) = post_plisio(port, tampered).await;
    assert_eq!(
        s,
        StatusCode::UNAUTHORIZED,
        "numbers are signed as received"
    );

    // mismatch → review, no credits; cancelled duplicate → cancelled.
    post_plisio(
        port,
        plisio_body(&plisio_fields("t-odd", "mismatch"), PLISIO_SECRET),
    )
    .await;
    post_plisio(
        port,
        plisio_body(
            &plisio_fields("t-late", "cancelled duplicate"),
            PLISIO_SECRET,
        ),
    )
    .await;
    let statuses: Vec<(String, String)> =
        sqlx::query_as("SELECT txn_id, status FROM genq.payments ORDER BY txn_id")
            .fetch_all(&env.db.pool)
            .await
            .unwrap();
    assert_eq!(
        statuses,
        vec![
            ("t-late".into(), "cancelled".into()),
            ("t-odd".into(), "review".into()),
            ("t-ok".into(), "completed".into())
        ]
    );
    assert_eq!(env.balance("payer").await.available, 500);

    // An unknown invoice: 200, kept as an orphan; once recorded, a redelivery applies.
    let (s, r) = post_plisio(
        port,
        plisio_body(&plisio_fields("t-new", "completed"), PLISIO_SECRET),
    )
    .await;
    assert_eq!(
        (s, r["result"].as_str().unwrap()),
        (StatusCode::OK, "orphan")
    );
    sqlx::query("SELECT genq.record_invoice('t-new', 'order-t-new', 'payer', 50)")
        .execute(&env.db.pool)
        .await
        .unwrap();
    let (_, r) = post_plisio(
        port,
        plisio_body(&plisio_fields("t-new", "completed"), PLISIO_SECRET),
    )
    .await;
    assert_eq!(r["result"], "accepted");
    assert_eq!(env.balance("payer").await.available, 550);
    daemon.shutdown().await;
    server.stop().await;
    env.assert_ledger_clean().await;
}

#[sqlx::test(migrations = false)]
async fn plisio_payments_without_callbacks_are_completed_by_the_poll(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let mut env = GenEnv::setup(po, co).await;
    env.config.payments.plisio_base_url = env.fake.plisio_base_url();
    env.config.payments.poll_interval = Duration::from_secs(1);
    env.config.payments.poll_after = Duration::ZERO;
    for (txn, credits) in [
        ("p-paid", 200_i64),
        ("p-odd", 70),
        ("p-wait", 40),
        ("p-gone", 10),
    ] {
        invoice(&env, txn, credits, Duration::ZERO).await;
    }
    // No callback ever comes; Plisio knows the outcomes (p-gone it does not know at all).
    env.fake.set_plisio_operation(
        "p-paid",
        json!({ "status": "completed", "amount": "0.00200000", "currency": "BTC",
                "source_amount": "20.00", "source_currency": "USD" }),
    );
    env.fake
        .set_plisio_operation("p-odd", json!({ "status": "mismatch" }));
    // Set through the control API, as an operator would.
    fake_post(
        &env,
        "/_fake/plisio/operations/p-wait",
        json!({ "status": "pending" }),
    )
    .await;

    // The pipeline registers payments.poll only with Plisio's key (PLISIO_SECRET_KEY).
    let mut pipeline = Pipeline::from_config(&env.config).unwrap();
    pipeline.plisio_api_key = Some(genq::outbound::Secret::new(PLISIO_SECRET));
    let mut registry = Registry::new();
    Arc::new(pipeline).register(&mut registry);
    let daemon = env.db.daemon(env.config.clone(), registry);
    wait_until(
        Duration::from_secs(20),
        "polled payments settled",
        || async {
            payment(&env, "p-paid").await.0 == "completed"
                && payment(&env, "p-odd").await.0 == "review"
        },
    )
    .await;
    assert_eq!(env.balance("payer").await.available, 200);
    // Later runs poll only what is still open: the completed payment is granted once.
    more_plisio_polls(&env, 4, Duration::from_secs(20)).await;
    daemon.shutdown().await;
    assert_eq!(payment(&env, "p-paid").await, ("completed".into(), 1));
    assert_eq!(payment(&env, "p-odd").await, ("review".into(), 1));
    // Still pending at Plisio, or unknown to it: unchanged, nothing appended.
    assert_eq!(payment(&env, "p-wait").await, ("new".into(), 0));
    assert_eq!(payment(&env, "p-gone").await, ("new".into(), 0));
    assert_eq!(env.balance("payer").await.available, 200);
    let grants: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM genq.ledger WHERE idempotency_key = 'plisio:p-paid'",
    )
    .fetch_one(&env.db.pool)
    .await
    .unwrap();
    assert_eq!(grants, 1);
    env.assert_ledger_clean().await;
}
