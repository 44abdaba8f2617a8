//! Console actions as an admin: queue pause, resume, drain, cap; job retry and cancel;
//! bulk retry with the count shown before confirming; each written to the audit with the
//! number of rows it affected; bad inputs refused with a message.

use std::time::Duration;

use genq::{JobState, NewJob};
use reqwest::StatusCode;
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::common::console::{audit, location, ConsoleEnv, ADMIN};
use crate::common::{wait_until, TestDb};

async fn queue_row(env: &ConsoleEnv, name: &str) -> (bool, Option<String>, Option<i32>) {
    sqlx::query_as("SELECT paused, pause_reason, max_running FROM genq.queues WHERE name = $1")
        .bind(name)
        .fetch_one(&env.db.pool)
        .await
        .unwrap()
}

#[sqlx::test(migrations = false)]
async fn queue_actions_change_the_queue_and_are_audited(po: PgPoolOptions, co: PgConnectOptions) {
    let env = ConsoleEnv::start(TestDb::new(po, co).await).await;
    let admin = env.login(ADMIN).await;

    let r = admin
        .post(
            "/console/queues/media/pause",
            &[("reason", "provider outage")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(location(&r).starts_with("/console/?notice="));
    assert_eq!(
        queue_row(&env, "media").await,
        (true, Some("provider outage".into()), None)
    );
    let overview = admin.page("/console/").await;
    assert!(overview.contains("provider outage"));
    assert!(overview.contains("badge paused"));

    admin
        .post("/console/queues/media/cap", &[("max_running", "4")])
        .await;
    assert_eq!(queue_row(&env, "media").await.2, Some(4));
    admin
        .post("/console/queues/media/cap", &[("max_running", "")])
        .await;
    assert_eq!(
        queue_row(&env, "media").await.2,
        None,
        "empty clears the cap"
    );

    let r = admin.post("/console/queues/media/resume", &[]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(!queue_row(&env, "media").await.0);
    // Resuming a queue that is not paused affects nothing, and says so.
    admin.post("/console/queues/media/resume", &[]).await;

    let r = admin.post("/console/queues/media/drain", &[]).await;
    assert_eq!(
        location(&r).split('?').next(),
        Some("/console/queues/media/drain")
    );
    let progress = admin.page("/console/queues/media/drain").await;
    assert!(progress.contains("Drained."), "nothing runs in media");
    assert!(queue_row(&env, "media").await.0, "a drain pauses");

    let rows: Vec<(String, Option<String>, i64)> = audit(&env.db)
        .await
        .into_iter()
        .map(|(_, a, t, n)| (a, t, n))
        .collect();
    let media = Some("media".to_string());
    assert_eq!(
        rows,
        [
            ("login".into(), None, 1),
            ("queue.pause".into(), media.clone(), 1),
            ("queue.cap".into(), media.clone(), 1),
            ("queue.cap".into(), media.clone(), 1),
            ("queue.resume".into(), media.clone(), 1),
            ("queue.resume".into(), media.clone(), 0),
            ("queue.drain".into(), media.clone(), 0),
        ]
    );
    let actor: String =
        sqlx::query_scalar("SELECT actor FROM genq.console_audit WHERE action = 'queue.pause'")
            .fetch_one(&env.db.pool)
            .await
            .unwrap();
    assert!(
        actor.starts_with("admin:") && actor.len() == "admin:".len() + 8,
        "{actor}"
    );
    env.stop().await;
}

#[sqlx::test(migrations = false)]
async fn bad_queue_inputs_are_refused(po: PgPoolOptions, co: PgConnectOptions) {
    let env = ConsoleEnv::start(TestDb::new(po, co).await).await;
    let admin = env.login(ADMIN).await;
    for (path, fields, why) in [
        (
            "/console/queues/media/cap",
            vec![("max_running", "-1")],
            "whole number",
        ),
        (
            "/console/queues/media/cap",
            vec![("max_running", "many")],
            "whole number",
        ),
        ("/console/queues/bad%20name/pause", vec![], "queue name"),
        (
            "/console/queues/media/pause",
            vec![("reason", &*"r".repeat(501))],
            "500",
        ),
    ] {
        let r = admin.post(path, &fields).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{path} {fields:?}");
        assert!(r.text().await.unwrap().contains(why), "{path}");
    }
    let n: i64 =
        sqlx::query_scalar("SELECT count(*) FROM genq.queues WHERE name IN ('media', 'bad name')")
            .fetch_one(&env.db.pool)
            .await
            .unwrap();
    assert_eq!(n, 0, "refused actions created no queue");
    env.stop().await;
}

#[sqlx::test(migrations = false)]
async fn job_retry_cancel_and_bulk_retry_with_a_confirmed_count(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let env = ConsoleEnv::start(TestDb::new(po, co).await).await;
    let admin = env.login(ADMIN).await;
    // Jobs in a queue no daemon works, so they stay where the test puts them.
    let mut ids = Vec::new();
    for i in 0..5 {
        ids.push(
            env.db
                .enqueue(
                    NewJob::new("console.bulk", json!({"n": i, "note": "needle"})).queue("parked"),
                )
                .await,
        );
    }
    sqlx::query("UPDATE genq.jobs SET state = 'discarded', finished_at = now(), errors = '[{\"error\": \"boom\", \"attempt\": 1}]' WHERE id = ANY($1)")
        .bind(&ids[..3])
        .execute(&env.db.pool)
        .await
        .unwrap();

    let detail = admin.page(&format!("/console/jobs/{}", ids[0])).await;
    assert!(
        detail.contains("needle") && detail.contains("boom"),
        "payload and errors shown"
    );

    let r = admin
        .post(&format!("/console/jobs/{}/retry", ids[0]), &[])
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(env.db.job(ids[0]).await.state, JobState::Available);
    let r = admin
        .post(&format!("/console/jobs/{}/cancel", ids[4]), &[])
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(env.db.job(ids[4]).await.state, JobState::Cancelled);
    // Cancelling it again is a conflict, not a silent success.
    let again = admin
        .post(&format!("/console/jobs/{}/cancel", ids[4]), &[])
        .await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
    assert_eq!(
        admin.post("/console/jobs/999999/retry", &[]).await.status(),
        StatusCode::NOT_FOUND
    );

    // Two discarded jobs left: the confirm page counts them, the action retries them.
    let confirm = admin
        .page("/console/jobs/bulk?action=retry&queue=parked&state=discarded")
        .await;
    assert!(
        confirm.contains("<strong id=\"match-count\">2</strong>"),
        "{confirm}"
    );
    let r = admin
        .post(
            "/console/jobs/bulk",
            &[
                ("action", "retry"),
                ("queue", "parked"),
                ("state", "discarded"),
            ],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(env.db.job(ids[1]).await.state, JobState::Available);
    assert_eq!(env.db.job(ids[2]).await.state, JobState::Available);

    // Bulk cancel of every available parked job (4 of them).
    let r = admin
        .post(
            "/console/jobs/bulk",
            &[
                ("action", "cancel"),
                ("queue", "parked"),
                ("state", "available"),
            ],
        )
        .await;
    assert!(location(&r).contains("4+job"), "{}", location(&r));

    let rows: Vec<(String, Option<String>, i64)> = audit(&env.db)
        .await
        .into_iter()
        .skip(1)
        .map(|(_, a, t, n)| (a, t, n))
        .collect();
    assert_eq!(rows[0], ("job.retry".into(), Some(ids[0].to_string()), 1));
    assert_eq!(rows[1], ("job.cancel".into(), Some(ids[4].to_string()), 1));
    assert_eq!(rows[2].0, "jobs.bulk_retry");
    assert_eq!(rows[2].2, 2);
    assert_eq!(rows[3].0, "jobs.bulk_cancel");
    assert_eq!(rows[3].2, 4);
    let audit_page = admin.page("/console/audit").await;
    assert!(audit_page.contains("jobs.bulk_cancel"));
    env.stop().await;
}

#[sqlx::test(migrations = false)]
async fn bad_bulk_inputs_are_refused(po: PgPoolOptions, co: PgConnectOptions) {
    let env = ConsoleEnv::start(TestDb::new(po, co).await).await;
    let admin = env.login(ADMIN).await;
    for (path, why) in [
        ("/console/jobs/bulk?action=retry", "needs a filter"),
        (
            "/console/jobs/bulk?action=explode&state=discarded",
            "retry` or `cancel",
        ),
        (
            "/console/jobs/bulk?action=retry&state=lost",
            "unknown job state",
        ),
    ] {
        let r = admin.get(path).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{path}");
        assert!(r.text().await.unwrap().contains(why), "{path}");
    }
    let r = admin
        .post("/console/jobs/bulk", &[("action", "cancel")])
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    assert_eq!(audit(&env.db).await.len(), 1, "only the login");
    env.stop().await;
}

#[sqlx::test(migrations = false)]
async fn the_overview_lists_live_daemons_and_charts_the_history(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let env = ConsoleEnv::start(TestDb::new(po, co).await).await;
    let worker = env.daemon.as_ref().unwrap().worker_id().to_string();
    env.db
        .enqueue(NewJob::new("console.chart", json!({})).queue("parked"))
        .await;
    // The sampler (every 5 s by default) registers the daemon and writes history.
    wait_until(Duration::from_secs(15), "the daemon row and a history row", || async {
        let (d, h): (i64, i64) = sqlx::query_as(
            "SELECT (SELECT count(*) FROM genq.daemons), (SELECT count(*) FROM genq.queue_history WHERE queue = 'parked')",
        )
        .fetch_one(&env.db.pool)
        .await
        .unwrap();
        d == 1 && h >= 1
    })
    .await;
    let admin = env.login(ADMIN).await;
    let page = admin.page("/console/").await;
    assert!(page.contains(&worker), "the daemon is listed");
    assert!(page.contains(env!("CARGO_PKG_VERSION")));
    assert!(page.contains("<svg"), "charts are inline SVG");
    assert!(!page.contains("<script"), "no JavaScript");
    // A clean shutdown removes the daemon's row.
    let pool = env.db.pool.clone();
    env.stop().await;
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM genq.daemons")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(left, 0);
}
