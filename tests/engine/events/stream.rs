//! A generation followed live: its own stream and its user's stream see every change in
//! order (queued → submitted → progress → succeeded, with the fake provider), the own stream
//! ends at the final state, and reconnects with `Last-Event-ID` get the final state (or 204
//! once the client has it).

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::{next, until_state, Live};
use crate::common::generation::GenEnv;
use crate::common::TestDb;

fn rank(state: &str) -> usize {
    ["queued", "submitting", "submitted", "succeeded"]
        .iter()
        .position(|s| *s == state)
        .unwrap_or_else(|| panic!("unexpected state {state}"))
}

#[sqlx::test(migrations = false)]
async fn a_generation_streams_every_change_in_order_and_reconnects_get_the_final_state(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let env = GenEnv::new(TestDb::new(po, co).await, Duration::from_secs(5)).await;
    let live = Live::start(env, &[]).await;
    let token = live.token("alice");
    // The user's stream is open before the generation exists.
    let mut mine = live.stream("/v1/users/me/events", &token, None).await;
    live.env.grant("alice", 100).await;
    let id = live.env.request("alice", "fal", 10).await;

    let path = format!("/v1/generations/{id}/events");
    let mut one = live.stream(&path, &token, None).await;
    let mut events = Vec::new();
    while let Some(event) = one.next_within(Duration::from_secs(30)).await {
        events.push(event);
    }
    let data: Vec<Value> = events.iter().map(|e| e.json()).collect();
    assert!(!events.is_empty());
    let mut last_version = 0;
    let mut last_rank = 0;
    for (event, json) in events.iter().zip(&data) {
        assert_eq!(event.event.as_deref(), Some("generation"));
        assert_eq!(json["id"], id.to_string());
        assert_eq!(json["user_id"], "alice");
        let version = json["version"].as_i64().unwrap();
        assert_eq!(event.id.as_deref(), Some(version.to_string().as_str()));
        assert!(version > last_version, "versions increase: {data:?}");
        last_version = version;
        let rank = rank(json["state"].as_str().unwrap());
        assert!(rank >= last_rank, "states move forward: {data:?}");
        last_rank = rank;
    }
    let last = data.last().unwrap();
    assert_eq!(last["state"], "succeeded", "{data:?}");
    assert!(
        last["output"].is_object() || last["output"].is_array(),
        "{last}"
    );
    assert!(
        data.iter()
            .any(|d| d["state"] == "submitted" && !d["progress"].is_null()),
        "progress while the provider renders: {data:?}"
    );

    // The user's stream saw the same generation through to its end, and only alice's.
    let seen = until_state(&mut mine, id, "succeeded").await;
    assert!(seen.iter().all(|e| e.json()["user_id"] == "alice"));
    let cursor = seen.last().unwrap().id.clone().unwrap();
    assert!(cursor.parse::<i64>().is_ok(), "{cursor}");

    // Reconnect with an older version: the final state comes first, then the stream ends.
    let first = events[0].id.clone().unwrap();
    let mut again = live.stream(&path, &token, Some(&first)).await;
    let event = next(&mut again, "the final state on reconnect").await;
    assert_eq!(event.json()["state"], "succeeded");
    assert_eq!(event.id, events.last().unwrap().id);
    assert!(again.next_within(Duration::from_secs(10)).await.is_none());

    // Reconnect holding the final version: nothing more will come; 204 stops EventSource.
    let done = live
        .get(&path, &token, events.last().unwrap().id.as_deref())
        .await;
    assert_eq!(done.status(), StatusCode::NO_CONTENT);

    // The user's stream resumed from its cursor replays the final state.
    drop(mine);
    let mut resumed = live
        .stream("/v1/users/me/events", &token, Some(&cursor))
        .await;
    let replayed = until_state(&mut resumed, id, "succeeded").await;
    assert_eq!(replayed.last().unwrap().json()["version"], last["version"]);
}
