//! The list pages: job filters and keyset paging, generation lists and details (user data
//! only on the detail page, scrubbed data shown as scrubbed), bad filter values refused.

use genq::NewJob;
use reqwest::StatusCode;
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use uuid::Uuid;

use crate::common::console::{audit, ConsoleEnv, ADMIN};
use crate::common::TestDb;

fn rows(page: &str) -> usize {
    page.matches("href=\"/console/jobs/").count()
        - page.matches("href=\"/console/jobs/bulk").count()
}

fn older_link(page: &str) -> Option<String> {
    let at = page.find("\">older »")?;
    let start = page[..at].rfind("href=\"")? + "href=\"".len();
    Some(page[start..at].replace("&amp;", "&"))
}

#[sqlx::test(migrations = false)]
async fn jobs_filter_and_page_by_id(po: PgPoolOptions, co: PgConnectOptions) {
    let env = ConsoleEnv::start(TestDb::new(po, co).await).await;
    let admin = env.login(ADMIN).await;
    for i in 0..120 {
        let kind = if i % 2 == 0 { "even.kind" } else { "odd.kind" };
        let payload = if i == 7 {
            json!({"tag": "Needle-in-payload"})
        } else {
            json!({"i": i})
        };
        env.db
            .enqueue(NewJob::new(kind, payload).queue("parked"))
            .await;
    }
    let first = admin
        .page("/console/jobs?queue=parked&kind=even.kind")
        .await;
    assert_eq!(rows(&first), 50);
    assert!(!first.contains("odd.kind"));
    let second = admin
        .page(&older_link(&first).expect("an older page"))
        .await;
    assert_eq!(rows(&second), 10, "60 even jobs: 50 then 10");
    assert!(older_link(&second).is_none(), "the start of the table");

    let found = admin.page("/console/jobs?q=needle-IN").await;
    assert_eq!(rows(&found), 1, "case-insensitive text in the payload");
    let none = admin.page("/console/jobs?from=2999-01-01T00:00").await;
    assert_eq!(rows(&none), 0);
    let all_time = admin
        .page(
            "/console/jobs?queue=parked&from=2000-01-01T00:00&to=2999-01-01T00:00&state=available",
        )
        .await;
    assert_eq!(rows(&all_time), 50);

    for (path, why) in [
        ("/console/jobs?state=lost", "unknown job state"),
        ("/console/jobs?from=yesterday", "is a time like"),
        ("/console/jobs?before=abc", "is a job id"),
        ("/console/jobs/abc", ""),
    ] {
        let r = admin.get(path).await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{path}");
        assert!(r.text().await.unwrap().contains(why), "{path}");
    }
    assert_eq!(
        admin.get("/console/jobs/424242").await.status(),
        StatusCode::NOT_FOUND
    );
    env.stop().await;
}

#[sqlx::test(migrations = false)]
async fn a_sparse_filter_scans_a_bounded_window_per_page(po: PgPoolOptions, co: PgConnectOptions) {
    let env = ConsoleEnv::start(TestDb::new(po, co).await).await;
    let admin = env.login(ADMIN).await;
    let rare = env
        .db
        .enqueue(NewJob::new("rare.kind", json!({})).queue("parked"))
        .await;
    sqlx::query(
        "INSERT INTO genq.jobs (kind, queue, state, finished_at)
         SELECT 'common.kind', 'parked', 'completed', now() FROM generate_series(1, $1)",
    )
    .bind(genq::console::jobs::SCAN_WINDOW + 50)
    .execute(&env.db.pool)
    .await
    .unwrap();
    let first = admin.page("/console/jobs?kind=rare.kind").await;
    assert_eq!(rows(&first), 0, "the newest window holds no rare job");
    let next = older_link(&first).expect("the page offers the older window");
    let second = admin.page(&next).await;
    assert!(
        second.contains(&format!("/console/jobs/{rare}\"")),
        "found one window later"
    );
    env.stop().await;
}

async fn generation(env: &ConsoleEnv, user: &str, prompt: &str) -> Uuid {
    sqlx::query("SELECT genq.grant_credits($1, 100, $2)")
        .bind(user)
        .bind(Uuid::new_v4().to_string())
        .execute(&env.db.pool)
        .await
        .unwrap();
    sqlx::query_scalar("SELECT genq.enqueue_generation($1, 'fal', 'fal-ai/flux/dev', $2, 10, $3)")
        .bind(user)
        .bind(json!({ "prompt": prompt }))
        .bind(Uuid::new_v4().to_string())
        .fetch_one(&env.db.pool)
        .await
        .unwrap()
}

#[sqlx::test(migrations = false)]
async fn generations_list_detail_cancel_and_scrubbed(po: PgPoolOptions, co: PgConnectOptions) {
    let env = ConsoleEnv::start(TestDb::new(po, co).await).await;
    let admin = env.login(ADMIN).await;
    let a = generation(&env, "user-a", "a secret prompt about foxes").await;
    let b = generation(&env, "user-b", "another prompt").await;

    let list = admin.page("/console/generations?user=user-a").await;
    assert!(list.contains(&a.to_string()[..8]) && !list.contains(&b.to_string()[..8]));
    assert!(!list.contains("secret prompt"), "no prompt on the list");
    let by_state = admin
        .page("/console/generations?state=queued&provider=fal")
        .await;
    assert!(by_state.contains(&a.to_string()[..8]) && by_state.contains(&b.to_string()[..8]));

    let detail = admin.page(&format!("/console/generations/{a}")).await;
    assert!(
        detail.contains("a secret prompt about foxes"),
        "the prompt on the detail page"
    );
    assert!(detail.contains("badge hold"), "the hold row");

    let r = admin
        .post(&format!("/console/generations/{a}/cancel"), &[])
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let detail = admin.page(&format!("/console/generations/{a}")).await;
    assert!(detail.contains("badge cancelled") && detail.contains("badge release"));
    let (action, target, n) = audit(&env.db).await.pop().map(|r| (r.1, r.2, r.3)).unwrap();
    assert_eq!(
        (action.as_str(), target, n),
        ("generation.cancel", Some(a.to_string()), 1)
    );

    sqlx::query("SELECT genq.scrub_generations(ARRAY[$1]::uuid[], 'test')")
        .bind(a)
        .execute(&env.db.pool)
        .await
        .unwrap();
    let scrubbed = admin.page(&format!("/console/generations/{a}")).await;
    assert!(!scrubbed.contains("secret prompt") && scrubbed.contains("scrubbed"));

    for (path, status) in [
        (
            "/console/generations?state=lost".to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/console/generations?before=nonsense".to_string(),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/console/generations/not-a-uuid".to_string(),
            StatusCode::NOT_FOUND,
        ),
        (
            format!("/console/generations/{}", Uuid::new_v4()),
            StatusCode::NOT_FOUND,
        ),
    ] {
        assert_eq!(admin.get(&path).await.status(), status, "{path}");
    }
    let missing = admin
        .post(
            &format!("/console/generations/{}/cancel", Uuid::new_v4()),
            &[],
        )
        .await;
    assert_eq!(missing.status(), StatusCode::NOT_FOUND);
    env.stop().await;
}

#[sqlx::test(migrations = false)]
async fn credits_privacy_and_provider_pages(po: PgPoolOptions, co: PgConnectOptions) {
    let env = ConsoleEnv::start(TestDb::new(po, co).await).await;
    let admin = env.login(ADMIN).await;
    let g = generation(&env, "user-c", "a prompt").await;

    let credits = admin.page("/console/credits?user=user-c").await;
    assert!(
        credits.contains("<dd id=\"available\">90</dd>"),
        "100 granted, 10 held"
    );
    assert!(credits.contains(&g.to_string()[..8]) && credits.contains("badge hold"));
    assert!(
        !credits.contains("check-result"),
        "the audit runs only on request"
    );
    // Payments show how the poll treats them (migration 0022): polls so far and the next
    // one, or that polling stopped because Plisio never knew the payment.
    for sql in [
        "SELECT genq.record_invoice('txn-open', 'order-1', 'user-c', 50)",
        "SELECT genq.record_invoice('txn-unknown', 'order-2', 'user-c', 60)",
        "UPDATE genq.payments SET polls = 3, next_poll_at = now() + interval '8 minutes' WHERE txn_id = 'txn-open'",
        "UPDATE genq.payments SET polls = 9, poll_given_up_at = now() WHERE txn_id = 'txn-unknown'",
    ] {
        sqlx::query(sql).execute(&env.db.pool).await.unwrap();
    }
    let credits = admin.page("/console/credits?user=user-c").await;
    let row = |txn: &str| {
        let start = credits
            .find(&format!("id=\"payment-{txn}\""))
            .unwrap_or_else(|| panic!("{txn} listed"));
        let end = credits[start..].find("</tr>").unwrap() + start;
        credits[start..end].to_string()
    };
    let open = row("txn-open");
    assert!(open.contains("<td class=\"num\">3</td>") && !open.contains("poll given up"));
    assert_eq!(
        open.matches("<time").count(),
        2,
        "created, and the next poll"
    );
    let unknown = row("txn-unknown");
    assert!(unknown.contains("<td class=\"num\">9</td>") && unknown.contains("poll given up"));
    let checked = admin.page("/console/credits?check=1").await;
    assert!(checked.contains("check_ledger(): no violation"));
    let privacy = admin.page("/console/privacy?check=1").await;
    assert!(privacy.contains("check_retention(): no violation"));

    // A provider's gate appears with its first call; here it is made by hand.
    sqlx::query("INSERT INTO genq.provider_gates (provider, tokens) VALUES ('fal', 5)")
        .execute(&env.db.pool)
        .await
        .unwrap();
    let providers = admin.page("/console/providers").await;
    assert!(providers.contains("id=\"provider-fal\"") && providers.contains("badge closed"));
    let r = admin
        .post("/console/providers/fal/open", &[("minutes", "10")])
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let open: bool = sqlx::query_scalar("SELECT open_until > now() + interval '9 minutes' FROM genq.provider_gates WHERE provider = 'fal'")
        .fetch_one(&env.db.pool)
        .await
        .unwrap();
    assert!(open);
    assert!(admin
        .page("/console/providers")
        .await
        .contains("badge open"));
    admin.post("/console/providers/fal/close", &[]).await;
    let closed: bool = sqlx::query_scalar(
        "SELECT open_until IS NULL FROM genq.provider_gates WHERE provider = 'fal'",
    )
    .fetch_one(&env.db.pool)
    .await
    .unwrap();
    assert!(closed);
    for minutes in ["0", "1441", "soon", ""] {
        let r = admin
            .post("/console/providers/fal/open", &[("minutes", minutes)])
            .await;
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "minutes {minutes:?}");
    }
    assert_eq!(
        admin
            .post("/console/providers/nobody/close", &[])
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    let actions: Vec<(String, i64)> = audit(&env.db)
        .await
        .into_iter()
        .skip(1)
        .map(|r| (r.1, r.3))
        .collect();
    assert_eq!(
        actions,
        [
            ("provider.open_circuit".to_string(), 1),
            ("provider.close_circuit".to_string(), 1)
        ]
    );
    env.stop().await;
}

async fn event(
    env: &ConsoleEnv,
    provider: &str,
    key: &str,
    generation: Option<Uuid>,
    orphan: bool,
) -> i64 {
    sqlx::query_scalar(
        "INSERT INTO genq.webhook_events (provider, dedupe_key, generation_id, orphan, body)
         VALUES ($1, $2, $3, $4, '\\x7b7d') RETURNING id",
    )
    .bind(provider)
    .bind(key)
    .bind(generation)
    .bind(orphan)
    .fetch_one(&env.db.pool)
    .await
    .unwrap()
}

#[sqlx::test(migrations = false)]
async fn the_webhook_inbox_lists_orphans_and_redrives_one(po: PgPoolOptions, co: PgConnectOptions) {
    let env = ConsoleEnv::start(TestDb::new(po, co).await).await;
    let admin = env.login(ADMIN).await;
    let g = generation(&env, "user-w", "a prompt").await;
    let known = event(&env, "fal", "k1", Some(g), false).await;
    let orphan = event(&env, "fal", "k2", Some(Uuid::new_v4()), true).await;
    let payment = event(&env, "plisio", "k3", None, false).await;

    let all = admin.page("/console/webhooks").await;
    for id in [known, orphan, payment] {
        assert!(
            all.contains(&format!("id=\"event-{id}\"")),
            "event {id} listed"
        );
    }
    let orphans = admin.page("/console/webhooks?show=orphans").await;
    assert!(
        orphans.contains(&format!("id=\"event-{orphan}\""))
            && !orphans.contains(&format!("id=\"event-{known}\""))
    );

    let r = admin
        .post(&format!("/console/webhooks/{known}/redrive"), &[])
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let (job, processed): (Option<i64>, Option<chrono::DateTime<chrono::Utc>>) =
        sqlx::query_as("SELECT job_id, processed_at FROM genq.webhook_events WHERE id = $1")
            .bind(known)
            .fetch_one(&env.db.pool)
            .await
            .unwrap();
    let job = job.expect("a reconcile job");
    assert!(processed.is_none());
    assert_eq!(env.db.job(job).await.kind, "generation.reconcile");

    for id in [orphan, payment] {
        let r = admin
            .post(&format!("/console/webhooks/{id}/redrive"), &[])
            .await;
        assert_eq!(r.status(), StatusCode::CONFLICT, "event {id}");
    }
    assert_eq!(
        admin
            .post("/console/webhooks/999999/redrive", &[])
            .await
            .status(),
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        admin.get("/console/webhooks?show=bogus").await.status(),
        StatusCode::BAD_REQUEST
    );
    assert_eq!(
        admin.get("/console/webhooks?before=x").await.status(),
        StatusCode::BAD_REQUEST
    );
    let actions: Vec<(String, Option<String>, i64)> = audit(&env.db)
        .await
        .into_iter()
        .skip(1)
        .map(|r| (r.1, r.2, r.3))
        .collect();
    assert_eq!(
        actions,
        [("webhook.redrive".to_string(), Some(known.to_string()), 1)]
    );
    env.stop().await;
}

/// The table row with HTML id `id`.
fn row<'a>(page: &'a str, id: &str) -> &'a str {
    let at = page
        .find(&format!("id=\"{id}\""))
        .unwrap_or_else(|| panic!("no row {id}"));
    let end = page[at..].find("</tr>").expect("row end");
    &page[at..at + end]
}

#[sqlx::test(migrations = false)]
async fn the_fairness_page_shows_keys_held_back_and_groups(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    use genq::queue::fairness;
    let env = ConsoleEnv::start(TestDb::new(po, co).await).await;
    let pool = &env.db.pool;
    fairness::set_queue(pool, "fq", true, Some(1))
        .await
        .unwrap();
    fairness::set_group(pool, "render:fal", Some(4))
        .await
        .unwrap();
    fairness::set_key(pool, "fq", "key-b", Some(2.0), Some(3))
        .await
        .unwrap();
    for key in ["key-a", "key-a", "key-b"] {
        env.db
            .enqueue(
                NewJob::new("noop", json!({}))
                    .queue("fq")
                    .fairness_key(key)
                    .limit_group("render:fal"),
            )
            .await;
    }
    // key-a holds its one slot (the default limit): a kept render, as a generation keeps it.
    sqlx::query(
        "INSERT INTO genq.fair_slots (queue, key, grp, kept_at) VALUES ('fq', 'key-a', 'render:fal', now())",
    )
    .execute(pool)
    .await
    .unwrap();

    let readonly = env.login(crate::common::console::READONLY).await;
    let page = readonly.page("/console/fairness").await;
    assert!(page.contains("href=\"/console/fairness\""), "in the nav");
    let q = row(&page, "fair-queue-fq");
    assert!(q.contains("<td>on</td>"), "{q}");
    assert!(
        q.contains("<td class=\"num\">1</td><td class=\"num\">2</td><td class=\"num\">1</td>"),
        "default limit 1, two keys waiting, one slot: {q}"
    );
    let a = row(&page, "key-fq-key-a");
    assert!(a.contains("badge held") && a.contains("at limit"), "{a}");
    assert!(a.contains("1 (default)"), "{a}");
    assert!(a.contains("<td class=\"num\">2</td>"), "two due jobs: {a}");
    let b = row(&page, "key-fq-key-b");
    assert!(!b.contains("held") && b.contains("waiting"), "{b}");
    assert!(
        b.contains("<td class=\"num\">2</td><td class=\"num\">3</td>"),
        "weight 2, own limit 3: {b}"
    );
    let g = row(&page, "group-render:fal");
    assert!(
        g.contains("<td class=\"num\">4</td><td class=\"num\">1</td>"),
        "max 4, one active: {g}"
    );
    assert!(
        !page.contains("<form method=\"post\" action=\"/console/fair"),
        "read-only page"
    );
    env.stop().await;
}
