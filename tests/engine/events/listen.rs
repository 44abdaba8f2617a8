//! Streams outlive the daemon's LISTEN connection: the database goes away for the daemon
//! (a proxy cut, as a restart looks from the daemon), the generation reaches its final state
//! meanwhile (its NOTIFY reaches no listener of this daemon), and once the LISTEN connection
//! is back the catch-up read delivers the final state to the open streams.

use std::time::Duration;

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
    let direct = url::Url::parse(&env.db.url().await).unwrap();
    let upstream = tokio::net::lookup_host(format!(
        "{}:{}",
        direct.host_str().unwrap(),
        direct.port().unwrap_or(5432)
    ))
    .await
    .unwrap()
    .next()
    .unwrap();
    let proxy = PgProxy::start(upstream).await;
    let mut via_proxy = direct.clone();
    via_proxy.set_host(Some("127.0.0.1")).unwrap();
    via_proxy.set_port(Some(proxy.addr.port())).unwrap();
    let live = Live::start_on(env, Some(via_proxy.to_string()), &[]).await;
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
