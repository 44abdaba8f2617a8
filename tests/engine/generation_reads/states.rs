//! `genq.get_generation` in every state: queued with its hold, succeeded with its output
//! and capture, failed with a machine code and a user-safe message (never the internal
//! reason), cancelled, scrubbed, and absent.

use super::*;

#[sqlx::test(migrations = false)]
async fn a_queued_generation_shows_its_hold_and_input_and_nothing_internal(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let env = GenEnv::setup(po, co).await;
    env.grant("u1", 100).await;
    let input = json!({"prompt": "a heron at dawn", "duration": 5});
    let id = env.request_with_input("u1", "fal", 30, input.clone()).await;
    let g = get(&env.db, id).await;
    assert_eq!(g["id"], json!(id.to_string()));
    assert_eq!(g["user_id"], "u1");
    assert_eq!(g["provider"], "fal");
    assert_eq!(g["state"], "queued");
    assert_eq!(g["input"], input);
    assert_eq!(g["input_scrubbed"], false);
    assert_eq!(g["cost"], 30);
    assert_eq!(
        g["credits"],
        json!({"held": 30, "captured": 0, "released": 0})
    );
    assert_eq!(g["progress"], Value::Null);
    assert_eq!(g["error"], Value::Null);
    assert_eq!(g["output"], Value::Null);
    assert!(g["version"].as_i64().unwrap() > 0);
    assert!(g["created_at"].as_str().unwrap().ends_with("+00:00"));
    for internal in ["provider_request_id", "provider_meta", "idempotency_key"] {
        assert!(g.get(internal).is_none(), "{internal} is not shown: {g}");
    }
}

#[sqlx::test(migrations = false)]
async fn an_unknown_id_reads_as_null(po: PgPoolOptions, co: PgConnectOptions) {
    let db = TestDb::new(po, co).await;
    let mut conn = db.pool.acquire().await.unwrap();
    assert_eq!(reads::get(&mut conn, Uuid::new_v4()).await.unwrap(), None);
}

#[sqlx::test(migrations = false)]
async fn finished_generations_show_output_or_error_codes_and_their_settlement(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let env = GenEnv::setup(po, co).await;
    env.grant("u1", 100).await;
    // BytePlus refuses the submit for its content policy; fal's run ends with a model error.
    env.fake.add_fault(FaultSpec::new(
        ProviderKind::BytePlus,
        FakeOp::Submit,
        FaultKind::Moderation,
    ));
    env.fake.add_fault(FaultSpec::new(
        ProviderKind::Fal,
        FakeOp::Submit,
        FaultKind::CompletedWithError,
    ));
    let daemon = env.daemon();
    let succeeded = env.request("u1", "replicate", 10).await;
    let moderated = env.request("u1", "byteplus", 20).await;
    let failed = env.request("u1", "fal", 30).await;
    for id in [succeeded, moderated, failed] {
        env.wait_final(id, Duration::from_secs(30)).await;
    }
    daemon.shutdown().await;

    let g = get(&env.db, succeeded).await;
    assert_eq!(g["state"], "succeeded", "{g}");
    assert_eq!(g["error"], Value::Null);
    assert_eq!(
        g["credits"],
        json!({"held": 0, "captured": 10, "released": 0})
    );
    let output = g["output"].as_array().expect("outputs");
    assert!(output[0]["key"]
        .as_str()
        .unwrap()
        .starts_with(&format!("outputs/u1/{succeeded}/")));
    assert!(output[0]["url"].is_string());
    assert!(!g["finished_at"].is_null() && !g["submitted_at"].is_null());

    let g = get(&env.db, moderated).await;
    assert_eq!(g["state"], "failed");
    assert_eq!(g["error"]["code"], "moderation", "{g}");
    assert_eq!(
        g["credits"],
        json!({"held": 0, "captured": 0, "released": 20})
    );
    let g = get(&env.db, failed).await;
    assert_eq!(g["error"]["code"], "provider_failed", "{g}");
    // The user-safe message, never the provider's text that `error` keeps for operators.
    let internal = env.generation(failed).await.error.unwrap();
    let message = g["error"]["message"].as_str().unwrap();
    assert_eq!(message, "The provider could not complete the generation.");
    assert!(!g.to_string().contains(&internal), "{g}");
    env.assert_ledger_clean().await;
}

#[sqlx::test(migrations = false)]
async fn a_cancelled_generation_shows_the_cancelled_code_and_its_release(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let env = GenEnv::setup(po, co).await;
    env.grant("u1", 100).await;
    let id = cancelled(&env, "u1", 40).await;
    let g = get(&env.db, id).await;
    assert_eq!(g["state"], "cancelled");
    assert_eq!(
        g["error"],
        json!({"code": "cancelled", "message": "The generation was cancelled."})
    );
    assert_eq!(g["cancel_requested"], true);
    assert_eq!(
        g["credits"],
        json!({"held": 0, "captured": 0, "released": 40})
    );
    env.assert_ledger_clean().await;
}

#[sqlx::test(migrations = false)]
async fn a_scrubbed_generation_reads_as_scrubbed_not_as_an_error(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let env = GenEnv::setup(po, co).await;
    env.grant("u1", 100).await;
    let id = cancelled(&env, "u1", 10).await;
    scrub(&env.db, id).await;
    let g = get(&env.db, id).await;
    assert_eq!(g["input"], Value::Null);
    assert_eq!(g["input_scrubbed"], true);
    assert_eq!(g["state"], "cancelled");
}

#[sqlx::test(migrations = false)]
async fn a_failure_written_without_a_code_gets_the_generic_one(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let env = GenEnv::setup(po, co).await;
    env.grant("u1", 100).await;
    let id = env.request("u1", "fal", 10).await;
    // An operator's hand-written update: the trigger still gives the row a code.
    sqlx::query("UPDATE genq.generations SET state = 'failed', error = 'by hand' WHERE id = $1")
        .bind(id)
        .execute(&env.db.pool)
        .await
        .unwrap();
    let g = get(&env.db, id).await;
    assert_eq!(
        g["error"],
        json!({"code": "internal_error", "message": "The generation failed."})
    );
    // A code outside the documented spelling is refused.
    let err = sqlx::query("UPDATE genq.generations SET error_code = 'Not A Code' WHERE id = $1")
        .bind(id)
        .execute(&env.db.pool)
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&err), "23514", "{err}");
}
