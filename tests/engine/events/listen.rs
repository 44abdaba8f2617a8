//! Streams outlive the daemon's LISTEN connection: the database goes away for the daemon
//! (a proxy cut, as a restart looks from the daemon), the generation reaches its final state
//! meanwhile (its NOTIFY reaches no listener of this daemon), and once the LISTEN connection
//! is back the catch-up read delivers the final state to the open streams; and the same
//! streams across a real Postgres crash restart (a private cluster).

use std::time::Duration;

use genq::dev::bench::pg_cluster::PgCluster;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::{next, until_state, Live};
use crate::common::generation::GenEnv;
use crate::common::proxy::PgProxy;
use crate::common::{prom, wait_until, TestDb};

#[sqlx::test(migrations = false)]
async fn open_streams_get_the_final_state_after_the_listen_connection_comes_back(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let env = GenEnv::new(TestDb::new(po, co).await, Duration::from_secs(600)).await;
    let (proxy, via_proxy) = PgProxy::in_front_of(&env.db.url().await).await;
    let live = Live::start_on(env, Some(via_proxy), &[]).await;
    let pool = live.env.db.pool.clone();

    let id = live.insert_generation("carol").await;
    let token = live.token("carol");
    let mut one = live
        .stream(&format!("/v1/generations/{id}/events"), &token, None)
        .await;
    let mut mine = live.stream("/v1/users/me/events", &token, None).await;
    assert_eq!(
        next(&mut one, "the current state").await.json()["state"],
        "queued"
    );
    until_state(&mut mine, id, "queued").await;

    // A live change arrives through the LISTEN connection.
    sqlx::query("UPDATE genq.generations SET progress = '{\"phase\": \"queued\", \"queue_position\": 3}' WHERE id = $1")
        .bind(id)
        .execute(&pool)
        .await
        .unwrap();
    let event = next(&mut one, "the progress change").await;
    assert_eq!(event.json()["progress"]["queue_position"], 3);

    // The database goes away for the daemon; the generation ends meanwhile.
    proxy.cut();
    let metrics = live.daemon.url("/metrics");
    wait_until(
        Duration::from_secs(20),
        "the LISTEN loss noticed",
        || async {
            let text = live
                .daemon
                .http
                .get(&metrics)
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            prom::sum(
                &prom::parse(&text),
                "genq_events_listen_reconnects_total",
                &[],
            ) >= 1.0
        },
    )
    .await;
    sqlx::query(
        "UPDATE genq.generations SET state = 'succeeded', output = '{\"video\": \"local:outputs/x.mp4\"}',
                progress = NULL WHERE id = $1",
    )
    .bind(id)
    .execute(&pool)
    .await
    .unwrap();
    proxy.restore();

    // Both streams get the final state from the catch-up read; the generation's own ends.
    let event = next(&mut one, "the final state after the LISTEN came back").await;
    assert_eq!(event.json()["state"], "succeeded");
    assert!(one.next_within(Duration::from_secs(10)).await.is_none());
    until_state(&mut mine, id, "succeeded").await;
}

/// A real Postgres crash restart (a private cluster): the streams stay open, and the final
/// state reached after the restart arrives (by the re-established LISTEN or its catch-up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_streams_survive_a_postgres_crash_restart() {
    let cluster = std::sync::Arc::new(
        tokio::task::spawn_blocking(PgCluster::start_new)
            .await
            .unwrap()
            .expect("a private Postgres cluster"),
    );
    let options: PgConnectOptions = cluster.url().parse().unwrap();
    let env = GenEnv::new(
        TestDb::new(PgPoolOptions::new(), options).await,
        Duration::from_secs(600),
    )
    .await;
    // TestDb::url names the shared server; the daemon must reach the private cluster.
    let live = Live::start_on(env, Some(cluster.url()), &[]).await;
    let id = live.insert_generation("dave").await;
    let token = live.token("dave");
    let mut one = live
        .stream(&format!("/v1/generations/{id}/events"), &token, None)
        .await;
    let mut mine = live.stream("/v1/users/me/events", &token, None).await;
    assert_eq!(
        next(&mut one, "the current state").await.json()["state"],
        "queued"
    );
    until_state(&mut mine, id, "queued").await;

    let c = cluster.clone();
    tokio::task::spawn_blocking(move || {
        c.crash()?;
        c.start()
    })
    .await
    .unwrap()
    .expect("Postgres restarts");
    let pool = live.env.db.pool.clone();
    wait_until(Duration::from_secs(30), "the generation ended after the restart", || async {
        sqlx::query("UPDATE genq.generations SET state = 'failed', error_code = 'provider_failed' WHERE id = $1")
            .bind(id)
            .execute(&pool)
            .await
            .is_ok()
    })
    .await;

    let event = next(&mut one, "the final state after the restart").await;
    assert_eq!(event.json()["state"], "failed");
    assert_eq!(event.json()["error"]["code"], "provider_failed");
    until_state(&mut mine, id, "failed").await;
    let metrics = live.daemon.url("/metrics");
    let text = live
        .daemon
        .http
        .get(&metrics)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        prom::sum(
            &prom::parse(&text),
            "genq_events_listen_reconnects_total",
            &[]
        ) >= 1.0
    );
}
