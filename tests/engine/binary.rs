//! The real `genq` binary: CLI commands and SIGTERM drain.

use std::time::{Duration, Instant};

use genq::JobState;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::common::{genq_output, spawn_daemon, wait_until, TestDb};

#[sqlx::test(migrations = false)]
async fn sigterm_finishes_short_jobs_hands_back_long_ones_and_exits_zero(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    let url = db.url().await;
    let mut short = Vec::new();
    for _ in 0..4 {
        short.push(
            db.enqueue(genq::NewJob::new("sleep", json!({"ms": 1500})))
                .await,
        );
    }
    let long = vec![
        db.enqueue(genq::NewJob::new("sleep", json!({"ms": 600_000})))
            .await,
        db.enqueue(genq::NewJob::new("sleep", json!({"ms": 600_000})))
            .await,
    ];
    let mut child = spawn_daemon(&url, &[("GENQ_WORKER_SHUTDOWN_GRACE", "3s")]);
    wait_until(Duration::from_secs(20), "all six jobs running", || async {
        db.count("sleep", JobState::Running).await == 6
    })
    .await;

    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "daemon did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "exit status {status:?}");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "it waited for the grace period"
    );

    for id in short {
        let job = db.job(id).await;
        assert_eq!(
            (job.state, job.attempt),
            (JobState::Completed, 1),
            "short job {id} finished"
        );
    }
    for id in long {
        let job = db.job(id).await;
        assert_eq!(job.state, JobState::Available, "long job {id} handed back");
        assert_eq!(
            (job.attempt, job.max_attempts),
            (1, 21),
            "handing back spends no attempt"
        );
        assert_eq!(job.lease_until, None);
        assert_eq!(job.errors, json!([]));
    }
}

#[sqlx::test(migrations = false)]
async fn cli_enqueue_show_cancel_retry(po: PgPoolOptions, co: PgConnectOptions) {
    let db = TestDb::new(po, co).await;
    let url = db.url().await;

    let (ok, out, err) = genq_output(
        &url,
        &[
            "enqueue",
            "noop",
            "--payload",
            r#"{"a": 1}"#,
            "--queue",
            "cli",
            "--unique-key",
            "k1",
            "--run-at",
            "1h",
            "--priority",
            "-3",
        ],
    );
    assert!(ok, "{err}");
    let id: i64 = out.trim().parse().unwrap();
    let (_, again, _) = genq_output(
        &url,
        &["enqueue", "noop", "--unique-key", "k1", "--queue", "cli"],
    );
    assert_eq!(again.trim(), id.to_string(), "same unique key, same job");

    let (ok, shown, _) = genq_output(&url, &["job", "show", &id.to_string()]);
    assert!(ok);
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    assert_eq!(shown["state"], json!("available"));
    assert_eq!(shown["payload"], json!({"a": 1}));
    assert_eq!(shown["priority"], json!(-3));

    let (ok, cancelled, _) = genq_output(&url, &["job", "cancel", &id.to_string()]);
    assert!(ok);
    assert!(cancelled.contains("\"cancelled\""));
    let (ok, retried, _) = genq_output(&url, &["job", "retry", &id.to_string()]);
    assert!(ok);
    assert!(retried.contains("\"available\""));

    let (ok, _, err) = genq_output(&url, &["enqueue", "noop", "--payload", "{not json"]);
    assert!(!ok);
    assert!(err.contains("--payload is not valid JSON"), "{err}");
    let (ok, _, err) = genq_output(&url, &["job", "show", "987654"]);
    assert!(!ok);
    assert!(err.contains("job 987654 not found"), "{err}");
    let (ok, _, err) = genq_output(&url, &["enqueue", "noop", "--run-at", "yesterday-ish"]);
    assert!(!ok);
    assert!(
        err.contains("neither an RFC 3339 time nor a delay"),
        "{err}"
    );
}

#[sqlx::test(migrations = false)]
async fn a_bad_config_value_is_named_and_the_daemon_does_not_start(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let db = TestDb::new(po, co).await;
    let url = db.url().await;
    let out = crate::common::genq_command(&url)
        .args(["run"])
        .env("GENQ_WORKER_LEASE", "forever")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid configuration") && err.contains("lease"),
        "{err}"
    );
}

#[sqlx::test(migrations = false)]
async fn the_readme_demo_runs_end_to_end(po: PgPoolOptions, co: PgConnectOptions) {
    let db = TestDb::new(po, co).await;
    let url = db.url().await;
    let out = crate::common::genq_run_async(&url, &["demo", "--render-time", "300ms"]).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("genq.check_ledger(): clean"), "{stdout}");
    assert!(stdout.contains("insufficient credits"), "{stdout}");
    let (succeeded, failed): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE state = 'succeeded'), count(*) FILTER (WHERE state = 'failed') FROM genq.generations",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!((succeeded, failed), (5, 1));
}

#[sqlx::test(migrations = false)]
async fn json_logs_carry_the_job_span(po: PgPoolOptions, co: PgConnectOptions) {
    let db = TestDb::new(po, co).await;
    let url = db.url().await;
    let log = tempfile::NamedTempFile::new().unwrap();
    let mut child = crate::common::genq_command(&url)
        .args([
            "run",
            "--migrate",
            "--http",
            &format!("127.0.0.1:{}", crate::common::free_port()),
        ])
        .env("GENQ_LOG_FORMAT", "json")
        .stdout(std::process::Stdio::null())
        .stderr(log.reopen().unwrap())
        .spawn()
        .unwrap();
    let id = db
        .enqueue(genq::NewJob::new("no.such.kind", json!({})))
        .await;
    db.wait_for_state(id, JobState::Discarded, Duration::from_secs(20))
        .await;
    assert!(crate::common::terminate(&mut child).await);

    let text = std::fs::read_to_string(log.path()).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let discarded = lines
        .iter()
        .find(|l| l["fields"]["message"] == json!("job discarded"))
        .unwrap_or_else(|| panic!("no discard line in {text}"));
    assert_eq!(discarded["level"], json!("ERROR"));
    assert_eq!(discarded["span"]["name"], json!("job"));
    assert_eq!(discarded["span"]["id"], json!(id));
    assert_eq!(discarded["span"]["kind"], json!("no.such.kind"));
    assert_eq!(discarded["span"]["queue"], json!("default"));
    assert_eq!(discarded["span"]["attempt"], json!(1));
}
