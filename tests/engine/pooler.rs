//! genq behind a real PgBouncer in transaction mode (what Supabase's pooler on port 6543 is):
//! first what breaks without `database.pooler = "transaction"`, then the real binary doing
//! its whole job through the pooler with LISTEN off.

use std::time::Duration;

use genq::config::DatabaseConfig;
use genq::db::Pooler;
use genq::JobState;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgConnection};

use crate::common::generation::{model_for, GenEnv};
use crate::common::pgbouncer::PgBouncer;
use crate::common::{free_port, genq_command, genq_output, terminate, wait_until, TestDb};

/// A connection through the pooler the way a product backend opens one: no startup
/// options, statements sent with the simple protocol.
async fn backend(url: &str) -> PgConnection {
    url.parse::<PgConnectOptions>()
        .unwrap()
        .extra_float_digits(None)
        .connect()
        .await
        .expect("connect through pgbouncer")
}

#[sqlx::test(migrations = false)]
async fn without_the_pooler_setting_pgbouncer_refuses_genq_and_named_statements_collide(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    let direct = db.url().await;
    // One server connection: every client shares it.
    let Some(bouncer) = PgBouncer::start(&direct, "transaction", 1).await else {
        return;
    };
    let pooled = bouncer.url(&direct);

    // Refused at connect: sqlx's `extra_float_digits` and genq's `options` startup parameters.
    let (ok, _, stderr) = genq_output(&pooled, &["enqueue", "noop"]);
    assert!(!ok, "genq enqueue through pgbouncer without the setting");
    assert!(stderr.contains("unsupported startup parameter"), "{stderr}");

    // Without startup options but with sqlx's named statements (session settings): each
    // client connection names its first statement sqlx_s_1, and both land on one server.
    let session = DatabaseConfig {
        pooler: Pooler::Session,
        ..DatabaseConfig::default()
    };
    let options = genq::db::connect_options(&pooled, &session).unwrap();
    let mut first = PgConnection::connect_with(&options).await.unwrap();
    let mut second = PgConnection::connect_with(&options).await.unwrap();
    let one: i32 = sqlx::query_scalar("SELECT $1::int4")
        .bind(1)
        .fetch_one(&mut first)
        .await
        .unwrap();
    assert_eq!(one, 1);
    let err = sqlx::query_scalar::<_, i32>("SELECT $1::int4 + 1")
        .bind(1)
        .fetch_one(&mut second)
        .await
        .expect_err("the second client's sqlx_s_1 collides with the first's");
    assert!(err.to_string().contains("already exists"), "{err}");

    // Migrations need a session: genq refuses to run them through the pooler.
    let out = genq_command(&pooled)
        .env("GENQ_DATABASE_POOLER", "transaction")
        .arg("migrate")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("direct connection"), "{stderr}");
}

#[sqlx::test(migrations = false)]
async fn genq_run_enqueues_claims_completes_and_generates_through_a_transaction_pooler(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    let direct = db.url().await;
    // Three server connections for the daemon's eight, the backend's and the CLI's.
    let Some(bouncer) = PgBouncer::start(&direct, "transaction", 3).await else {
        return;
    };
    let pooled = bouncer.url(&direct);
    let env = GenEnv::new(db, Duration::from_millis(300)).await;

    let mut config = env.config.clone();
    config.database.url = pooled.clone();
    config.database.pooler = Pooler::Transaction;
    config.database.max_connections = 8;
    let http = format!("127.0.0.1:{}", free_port());
    config.http.bind = http.clone();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("genq.toml");
    std::fs::write(&path, toml::to_string(&config).unwrap()).unwrap();
    let mut daemon = genq_command(&pooled)
        .env("GENQ_CONFIG", &path)
        .arg("run")
        .stdout(std::process::Stdio::null())
        .spawn()
        .expect("spawn genq run");

    // The SQL API through the pooler: jobs, credits and a generation.
    let mut backend = backend(&pooled).await;
    sqlx::raw_sql(
        "SELECT genq.enqueue('noop', jsonb_build_object('n', n)) FROM generate_series(1, 40) n;
         SELECT genq.grant_credits('pooled-user', 30, 'grant-1');",
    )
    .execute(&mut backend)
    .await
    .expect("enqueue and grant through pgbouncer");
    // A bulk enqueue large enough to be copied (COPY ... FROM STDIN), in the backend's own
    // transaction through the pooler.
    let copied: Vec<genq::NewJob> = (0..1000)
        .map(|n| genq::NewJob::new("noop", serde_json::json!({ "copied": n })))
        .collect();
    assert!(genq::queue::enqueue_copy::copy_shape(&copied).is_some());
    let mut tx = backend.begin().await.unwrap();
    let n = genq::queue::enqueue::enqueue_many_in(&mut tx, &copied)
        .await
        .expect("bulk enqueue by COPY through pgbouncer");
    assert_eq!(n, 1000);
    tx.commit().await.unwrap();
    let generation: uuid::Uuid = sqlx::raw_sql(&format!(
        "SELECT genq.enqueue_generation('pooled-user', 'fal', '{}', \
         '{{\"prompt\": \"a red fox running through snow\"}}', 10, 'pooled-1')::text",
        model_for("fal")
    ))
    .fetch_one(&mut backend)
    .await
    .map(|row| sqlx::Row::get::<String, _>(&row, 0).parse().unwrap())
    .expect("enqueue_generation through pgbouncer");
    // And the CLI through the pooler.
    let out = genq_command(&pooled)
        .env("GENQ_DATABASE_POOLER", "transaction")
        .args(["enqueue", "noop"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    wait_until(
        Duration::from_secs(60),
        "1,041 noop jobs completed through the pooler",
        || async { env.db.count("noop", JobState::Completed).await == 1041 },
    )
    .await;
    let g = env.wait_final(generation, Duration::from_secs(60)).await;
    env.assert_output_stored(&g);
    assert_eq!(env.balance("pooled-user").await.available, 20);
    env.assert_ledger_clean().await;
    let violations = genq::retention::check(&env.db.pool).await.unwrap();
    assert!(violations.is_empty(), "{violations:#?}");
    let counts = env.db.counts().await;
    assert_eq!(
        counts.get(&JobState::Discarded).copied().unwrap_or(0)
            + counts.get(&JobState::Retryable).copied().unwrap_or(0),
        0,
        "no attempt failed: {counts:?}\n{}",
        bouncer.log()
    );

    let ready = reqwest::get(format!("http://{http}/readyz")).await.unwrap();
    assert!(
        ready.status().is_success(),
        "{}",
        ready.text().await.unwrap()
    );
    assert!(terminate(&mut daemon).await, "genq run exits 0 on SIGTERM");
}

#[sqlx::test(migrations = false)]
async fn session_mode_needs_only_the_startup_options_left_out(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    let direct = db.url().await;
    let Some(bouncer) = PgBouncer::start(&direct, "session", 2).await else {
        return;
    };
    let pooled = bouncer.url(&direct);
    let (ok, _, stderr) = genq_output(&pooled, &["enqueue", "noop"]);
    assert!(!ok, "refused without the setting");
    assert!(stderr.contains("unsupported startup parameter"), "{stderr}");

    // With it: named statements and session settings work as on a direct connection.
    let run = |args: &'static [&'static str]| {
        let out = genq_command(&pooled)
            .env("GENQ_DATABASE_POOLER", "session")
            .args(args)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let id: i64 = run(&["enqueue", "noop"]).parse().unwrap();
    assert_eq!(db.job(id).await.state, JobState::Available);
    assert!(run(&["queue", "list"]).contains("default"));
    let mut backend = backend(&pooled).await;
    let timeout: String = sqlx::raw_sql("SHOW idle_in_transaction_session_timeout")
        .fetch_one(&mut backend)
        .await
        .map(|row| sqlx::Row::get(&row, 0))
        .unwrap();
    assert_eq!(timeout, "0", "genq's SET stays in genq's sessions");
}
