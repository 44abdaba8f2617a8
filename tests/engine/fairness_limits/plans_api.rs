//! `genq.set_user_limits` / `genq.get_user_limits`: a round trip, a reset to the defaults,
//! every bad argument refused with SQLSTATE 22023 and a message naming it, and both
//! functions callable by the backend role.

use super::*;

#[sqlx::test(migrations = false)]
async fn set_and_get_round_trip_and_reset(po: PgPoolOptions, co: PgConnectOptions) {
    let (db, mut c) = setup(po, co).await;
    assert_eq!(
        plans::get_user_limits(&mut c, "user-a").await.unwrap(),
        defaults(None, None, None),
        "no plan, no [users] defaults: unlimited, weight 1"
    );
    let plan = Plan {
        max_in_flight: Some(3),
        max_queued: Some(50),
        per_minute: Some(20),
        weight: Some(2.5),
    };
    let expected = UserLimits {
        max_in_flight: Some(3),
        max_in_flight_default: false,
        max_queued: Some(50),
        max_queued_default: false,
        per_minute: Some(20),
        per_minute_default: false,
        weight: 2.5,
        weight_default: false,
    };
    assert_eq!(set(&db, "user-a", plan).await.unwrap(), expected);
    assert_eq!(
        plans::get_user_limits(&mut c, "user-a").await.unwrap(),
        expected
    );
    // The claim enforces the plan: the user's key in the generation queue carries it.
    assert_eq!(fair_key(&db, "user-a").await, Some((2.5, Some(3))));

    // Each call replaces the plan: what it leaves out follows the default again.
    let limits = set(
        &db,
        "user-a",
        Plan {
            max_in_flight: Some(5),
            ..Plan::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        limits,
        UserLimits {
            max_in_flight: Some(5),
            max_in_flight_default: false,
            ..defaults(None, None, None)
        }
    );
    // No fields: back to the defaults, and the plan row is gone.
    assert_eq!(
        set(&db, "user-a", Plan::default()).await.unwrap(),
        defaults(None, None, None)
    );
    assert_eq!(rows(&db, "genq.user_limits").await, 0);
    assert_eq!(
        fair_key(&db, "user-a").await,
        Some((1.0, None)),
        "weight 1, the queue's default limit"
    );

    // From SQL with named arguments, as a backend calls it.
    sqlx::query("SELECT genq.set_user_limits('user-b', max_in_flight => 2, weight => 4)")
        .execute(&db.pool)
        .await
        .unwrap();
    let (in_flight, weight): (Option<i32>, f32) =
        sqlx::query_as("SELECT max_in_flight, weight FROM genq.get_user_limits('user-b')")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!((in_flight, weight), (Some(2), 4.0));
}

#[sqlx::test(migrations = false)]
async fn bad_limits_are_refused_with_clear_messages(po: PgPoolOptions, co: PgConnectOptions) {
    let (db, _c) = setup(po, co).await;
    let cases = [
        (
            "'user-a', max_in_flight => 0",
            "max_in_flight must be between 1 and 1000000",
        ),
        (
            "'user-a', max_queued => -1",
            "max_queued must be between 1 and 1000000",
        ),
        (
            "'user-a', per_minute => 1000001",
            "per_minute must be between 1 and 1000000",
        ),
        (
            "'user-a', weight => 0",
            "weight must be between 0.01 and 1000",
        ),
        (
            "'user-a', weight => 'NaN'",
            "weight must be between 0.01 and 1000",
        ),
        (
            "'user-a', weight => 1001",
            "weight must be between 0.01 and 1000",
        ),
        ("'', max_queued => 1", "user_id must be 1 to 255 bytes"),
        ("NULL, max_queued => 1", "user_id must be 1 to 255 bytes"),
        ("'a/b', max_queued => 1", "user_id must be 1 to 255 bytes"),
    ];
    for (args, expected) in cases {
        let err = sqlx::query(&format!("SELECT genq.set_user_limits({args})"))
            .execute(&db.pool)
            .await
            .unwrap_err();
        let (code, message, _) = pg_error(&err);
        assert_eq!(code, "22023", "{args}: {message}");
        assert!(message.contains(expected), "{args}: {message}");
    }
    let err = sqlx::query("SELECT * FROM genq.get_user_limits('')")
        .execute(&db.pool)
        .await
        .unwrap_err();
    assert_eq!(pg_error(&err).0, "22023");
    // The typed API maps them to InvalidInput.
    assert!(matches!(
        set(&db, "user-a", Plan { max_queued: Some(0), ..Plan::default() }).await,
        Err(CreditError::InvalidInput(m)) if m.contains("max_queued")
    ));
    assert_eq!(rows(&db, "genq.user_limits").await, 0, "nothing written");
    // Defaults are checked too (a bad [users] value is refused at config load as well).
    let err = sqlx::query("SELECT genq.apply_user_limit_defaults(0, NULL)")
        .execute(&db.pool)
        .await
        .unwrap_err();
    assert_eq!(pg_error(&err).0, "22023");
}

#[sqlx::test(migrations = false)]
async fn the_backend_role_may_set_and_read_plans(po: PgPoolOptions, co: PgConnectOptions) {
    let db = TestDb::new(po, co).await;
    let prefix = crate::common::role_prefix_for(db.options.get_database().unwrap());
    let mut tx = db.pool.begin().await.unwrap();
    sqlx::query(&format!("SET LOCAL ROLE {prefix}_backend"))
        .execute(&mut *tx)
        .await
        .unwrap();
    sqlx::query("SELECT genq.set_user_limits('user-a', max_queued => 9)")
        .execute(&mut *tx)
        .await
        .unwrap();
    let (max_queued,): (Option<i32>,) =
        sqlx::query_as("SELECT max_queued FROM genq.get_user_limits('user-a')")
            .fetch_one(&mut *tx)
            .await
            .unwrap();
    assert_eq!(max_queued, Some(9));
    // The defaults are the daemon's to write, not the backend's.
    let err = sqlx::query("SELECT genq.apply_user_limit_defaults(1, 1)")
        .execute(&mut *tx)
        .await
        .unwrap_err();
    assert_eq!(pg_error(&err).0, "42501");
}

/// The (weight, max_active) of `user`'s key in the generation queue, if it has a row.
async fn fair_key(db: &TestDb, user: &str) -> Option<(f32, Option<i32>)> {
    sqlx::query_as(
        "SELECT weight, max_active FROM genq.fair_keys WHERE queue = 'generation' AND key = $1",
    )
    .bind(user)
    .fetch_optional(&db.pool)
    .await
    .unwrap()
}
