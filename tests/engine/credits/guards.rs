//! Credits, the ledger's guards: append-only rows, `check_ledger()` catching hand-made
//! corruption, and roles that reach only what they are granted.

use super::*;

// ---------------------------------------------------------------------------------------
// The ledger: append-only, audited

#[sqlx::test(migrations = false)]
async fn the_ledger_is_append_only_except_for_de_identification(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let (db, _c) = setup(po, co).await;

    for statement in [
        "UPDATE genq.ledger SET amount = 1000",
        "UPDATE genq.ledger SET user_id = 'x', amount = 1000",
        "DELETE FROM genq.ledger",
        "TRUNCATE genq.ledger",
    ] {
        let err = sqlx::query(statement).execute(&db.pool).await.unwrap_err();
        assert!(
            err.to_string().contains("append-only"),
            "{statement}: {err}"
        );
    }
    // The privacy job replaces the user id of a deleted account and keeps the amounts.
    let mut tx = db.pool.begin().await.unwrap();
    sqlx::query("UPDATE genq.ledger SET user_id = 'deleted-1' WHERE user_id = 'user-a'")
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("UPDATE genq.accounts SET user_id = 'deleted-1' WHERE user_id = 'user-a'")
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(balance(&db, "deleted-1").await, (100, 0));
    assert_ledger_healthy(&db).await;
}

#[sqlx::test(migrations = false)]
async fn check_ledger_reports_hand_made_corruption(po: PgPoolOptions, co: PgConnectOptions) {
    let (db, mut c) = setup(po, co).await;
    credits::grant(&mut c, "user-b", 100, "payment-2")
        .await
        .unwrap();
    let released = credits::enqueue_generation(&mut c, &request("user-a", "r1", 30))
        .await
        .unwrap();
    finish(&db, released, GenerationState::Failed).await;
    let queued = credits::enqueue_generation(&mut c, &request("user-a", "r2", 10))
        .await
        .unwrap();
    let repriced = credits::enqueue_generation(&mut c, &request("user-b", "r3", 20))
        .await
        .unwrap();
    let unheld = credits::enqueue_generation(&mut c, &request("user-b", "r4", 5))
        .await
        .unwrap();
    assert_ledger_healthy(&db).await;

    // Bypass the functions, as a buggy script with superuser rights would.
    let corruption = [
        // A capture on top of a release.
        format!("INSERT INTO genq.ledger (user_id, kind, amount, generation_id) VALUES ('user-a', 'capture', 30, '{released}')"),
        // A queued generation marked succeeded without its capture.
        format!("UPDATE genq.generations SET state = 'succeeded' WHERE id = '{queued}'"),
        // A generation whose cost no longer matches its hold.
        format!("UPDATE genq.generations SET cost = 21 WHERE id = '{repriced}'"),
        // A hold removed behind the trigger's back.
        "ALTER TABLE genq.ledger DISABLE TRIGGER ledger_append_only".to_string(),
        format!("DELETE FROM genq.ledger WHERE generation_id = '{unheld}'"),
        "ALTER TABLE genq.ledger ENABLE TRIGGER ledger_append_only".to_string(),
        // Free credits for user-b.
        "UPDATE genq.accounts SET available = available + 1000 WHERE user_id = 'user-b'".to_string(),
    ];
    for statement in &corruption {
        sqlx::query(statement).execute(&db.pool).await.unwrap();
    }

    let violations = credits::check_ledger(&mut c).await.unwrap();
    let found = |invariant: &str, needle: &str| {
        violations
            .iter()
            .any(|v| v.invariant == invariant && v.detail.contains(needle))
    };
    assert!(
        found("capture_and_release", &released.to_string()),
        "{violations:#?}"
    );
    assert!(
        found("succeeded_without_capture", &queued.to_string()),
        "{violations:#?}"
    );
    assert!(
        found("hold_amount_mismatch", &repriced.to_string()),
        "{violations:#?}"
    );
    assert!(
        found("generation_without_hold", &unheld.to_string()),
        "{violations:#?}"
    );
    // A failed generation may carry a capture only when its output was unfetchable.
    assert!(
        found("captured_without_output", &released.to_string()),
        "{violations:#?}"
    );
    assert!(found("balance_mismatch", "user-a"), "{violations:#?}");
    assert!(found("balance_mismatch", "user-b"), "{violations:#?}");
    assert_eq!(violations.len(), 7, "nothing else: {violations:#?}");
}

// ---------------------------------------------------------------------------------------
// Who may call what

#[sqlx::test(migrations = false)]
async fn only_granted_roles_reach_credits_and_the_backend_role_cannot_settle(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let (db, _c) = setup(po, co).await;
    let stranger = create_login_role(&db, None).await;
    let roles = crate::common::privileges::Roles::of(&db);
    let backend = create_login_role(&db, Some(&roles.backend())).await;
    let worker = create_login_role(&db, Some(&roles.worker())).await;

    let scenario = AssertUnwindSafe(async {
        // A role with no grants reaches nothing.
        let mut conn = connect_as(&db, &stranger).await;
        let denied = credits::grant(&mut conn, "user-a", 1_000_000, "free-money").await;
        assert!(
            matches!(&denied, Err(CreditError::Database(e)) if sqlstate(e) == "42501"),
            "{denied:?}"
        );
        for statement in [
            "SELECT count(*) FROM genq.ledger",
            "SELECT count(*) FROM genq.generations",
            "SELECT genq.enqueue('noop')",
        ] {
            let err = sqlx::query(statement).execute(&mut conn).await.unwrap_err();
            assert_eq!(sqlstate(&err), "42501", "{statement}: {err}");
        }
        conn.close().await.unwrap();

        // The backend enqueues and reads balances, with no table rights at all.
        let mut conn = connect_as(&db, &backend).await;
        let id = credits::enqueue_generation(&mut conn, &request("user-a", "req-1", 30))
            .await
            .unwrap();
        assert_eq!(
            credits::balance(&mut conn, "user-a").await.unwrap(),
            credits::Balance {
                available: 70,
                held: 30
            }
        );
        sqlx::query("SELECT genq.enqueue('noop', '{}')")
            .execute(&mut conn)
            .await
            .unwrap();
        assert_eq!(
            credits::grant(&mut conn, "user-a", 5, "payment-2")
                .await
                .unwrap(),
            75
        );
        // ... but it cannot settle holds, audit, or read the money tables (it reads
        // generations, for their results).
        let err = credits::capture(&mut conn, id).await.unwrap_err();
        assert_eq!(sqlstate(&err), "42501", "{err}");
        let err = credits::release(&mut conn, id, "nope").await.unwrap_err();
        assert_eq!(sqlstate(&err), "42501", "{err}");
        let err = credits::check_ledger(&mut conn).await.unwrap_err();
        assert_eq!(sqlstate(&err), "42501", "{err}");
        for statement in [
            "SELECT count(*) FROM genq.ledger",
            "SELECT count(*) FROM genq.accounts",
            "UPDATE genq.accounts SET available = 1000000",
        ] {
            let err = sqlx::query(statement).execute(&mut conn).await.unwrap_err();
            assert_eq!(sqlstate(&err), "42501", "{statement}: {err}");
        }
        assert_eq!(
            credits::cancel_generation(&mut conn, id).await.unwrap(),
            GenerationState::Cancelled
        );
        conn.close().await.unwrap();

        // The daemon's role settles and audits.
        let mut conn = connect_as(&db, &worker).await;
        let other = credits::enqueue_generation(&mut conn, &request("user-a", "req-2", 30))
            .await
            .unwrap();
        sqlx::query("UPDATE genq.generations SET state = 'succeeded' WHERE id = $1")
            .bind(other)
            .execute(&mut conn)
            .await
            .unwrap();
        assert!(credits::capture(&mut conn, other).await.unwrap());
        assert!(credits::check_ledger(&mut conn).await.unwrap().is_empty());
        let err = sqlx::query("TRUNCATE genq.ledger")
            .execute(&mut conn)
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&err), "42501", "{err}");
        conn.close().await.unwrap();
    })
    .catch_unwind()
    .await;

    for role in [&stranger, &backend, &worker] {
        drop_role(&db, role).await;
    }
    if let Err(panic) = scenario {
        std::panic::resume_unwind(panic);
    }
    assert_ledger_healthy(&db).await;
}
