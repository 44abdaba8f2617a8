//! `genq.list_generations`: a user's history newest first, page by page with the `before`
//! cursor (no row repeated or skipped, even as new generations arrive), only that user's,
//! without deleted ones, and every bad argument refused with its SQLSTATE.

use super::*;

/// `n` generations of `user`, each in its own transaction (so each has its own
/// `created_at`), oldest first.
async fn generations(env: &GenEnv, user: &str, n: usize) -> Vec<Uuid> {
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(
            env.request_with_input(user, "fal", 1, json!({"prompt": format!("take {i}")}))
                .await,
        );
    }
    ids
}

#[sqlx::test(migrations = false)]
async fn three_pages_cover_the_history_newest_first_without_repeats_or_gaps(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let env = GenEnv::setup(po, co).await;
    env.grant("u1", 100).await;
    env.grant("u2", 100).await;
    let mut made = generations(&env, "u1", 7).await;
    // Two generations in one transaction share created_at: the id breaks the tie.
    let mut tx = env.db.pool.begin().await.unwrap();
    for key in ["same-tx-1", "same-tx-2"] {
        made.push(
            credits::enqueue_generation(
                &mut tx,
                &credits::NewGeneration {
                    user_id: "u1".into(),
                    provider: "fal".into(),
                    model: "fal-ai/x".into(),
                    input: json!({"prompt": key}),
                    cost: 1,
                    idempotency_key: key.into(),
                },
            )
            .await
            .unwrap(),
        );
    }
    tx.commit().await.unwrap();
    generations(&env, "u2", 2).await;

    let first = list(&env.db, "u1", 4, None).await.unwrap();
    let second = list(&env.db, "u1", 4, ids(&first).last().copied())
        .await
        .unwrap();
    // A generation arriving between pages goes to the top, not into the next page.
    let late = generations(&env, "u1", 1).await[0];
    let third = list(&env.db, "u1", 4, ids(&second).last().copied())
        .await
        .unwrap();
    assert_eq!((first.len(), second.len(), third.len()), (4, 4, 1));
    let seen: Vec<Uuid> = [&first, &second, &third]
        .iter()
        .flat_map(|page| ids(page))
        .collect();
    let mut expected = made.clone();
    // Newest first: the transaction's pair (tie broken by id, descending), then the rest.
    let (singles, pair) = expected.split_at_mut(7);
    pair.sort();
    let mut newest_first: Vec<Uuid> = pair.iter().rev().copied().collect();
    newest_first.extend(singles.iter().rev());
    assert_eq!(seen, newest_first);
    assert!(!seen.contains(&late));
    assert!([&first, &second, &third]
        .iter()
        .flat_map(|p| p.iter())
        .all(|g| g["user_id"] == "u1" && g["input"]["prompt"].is_string()));
    assert_eq!(
        ids(&list(&env.db, "u1", 1, None).await.unwrap()),
        vec![late]
    );
    assert!(list(&env.db, "nobody", 20, None).await.unwrap().is_empty());
}

#[sqlx::test(migrations = false)]
async fn deleted_generations_leave_the_history_and_scrubbed_ones_stay_marked(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let env = GenEnv::setup(po, co).await;
    env.grant("u1", 100).await;
    let [kept, deleted, scrubbed] = generations(&env, "u1", 3).await[..] else {
        unreachable!()
    };
    let mut conn = env.db.pool.acquire().await.unwrap();
    for id in [kept, deleted, scrubbed] {
        credits::cancel_generation(&mut conn, id).await.unwrap();
    }
    delete(&env.db, deleted).await;
    scrub(&env.db, scrubbed).await;
    let page = list(&env.db, "u1", 10, None).await.unwrap();
    assert_eq!(ids(&page), vec![scrubbed, kept]);
    assert_eq!(page[0]["input"], Value::Null);
    assert_eq!(page[0]["input_scrubbed"], true);
    assert_eq!(page[1]["input_scrubbed"], false);
    // A deleted generation still marks a page boundary for a client that held it.
    assert_eq!(
        ids(&list(&env.db, "u1", 10, Some(deleted)).await.unwrap()),
        vec![kept]
    );
}

#[sqlx::test(migrations = false)]
async fn bad_limits_users_and_cursors_are_refused(po: PgPoolOptions, co: PgConnectOptions) {
    let env = GenEnv::setup(po, co).await;
    env.grant("u1", 100).await;
    env.grant("u2", 100).await;
    let theirs = generations(&env, "u2", 1).await[0];
    for limit in [0, -1, 101, i32::MAX] {
        let err = list(&env.db, "u1", limit, None).await.unwrap_err();
        assert_eq!(sqlstate(&err), "22023", "limit {limit}: {err}");
        assert!(err.to_string().contains("1 to 100"), "{err}");
    }
    let err = sqlx::query("SELECT * FROM genq.list_generations('u1', NULL)")
        .fetch_all(&env.db.pool)
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "22023", "{err}");
    for user in ["", "a/b", &"u".repeat(256)] {
        let err = list(&env.db, user, 10, None).await.unwrap_err();
        assert_eq!(sqlstate(&err), "22023", "user {user:?}: {err}");
    }
    // Another user's generation, or none at all, is not a cursor (and says nothing more).
    for cursor in [theirs, Uuid::new_v4()] {
        let err = list(&env.db, "u1", 10, Some(cursor)).await.unwrap_err();
        assert_eq!(sqlstate(&err), "P0002", "{err}");
    }
    assert_eq!(list(&env.db, "u1", 100, None).await.unwrap().len(), 0);
}
