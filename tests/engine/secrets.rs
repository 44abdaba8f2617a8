//! Secrets never reach the logs: the real binary is run with a secret configured and a
//! failing dependency, its stderr is captured, and the secret must not appear in it.

use std::io::Read;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use crate::common::{genq_command, wait_until, TestDb};

const PLISIO_KEY: &str = "plisio-secret-7f3a9c-never-log-me";

/// A Plisio stand-in that answers every request with an HTML 500 page (its body is not
/// JSON, so the poll fails while decoding).
async fn broken_plisio() -> String {
    let app = axum::Router::new().fallback(|| async {
        (
            axum::http::StatusCode::INTERNAL_SERVER_ERROR,
            "<html>Internal Server Error</html>",
        )
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}/api/v1")
}

/// Runs `genq run` polling Plisio at `plisio_base_url` every second for one open payment,
/// until `failures` poll failures were logged; returns everything it wrote to stderr.
async fn logs_of_failing_polls(db: &TestDb, plisio_base_url: &str, failures: usize) -> String {
    sqlx::query("SELECT genq.record_invoice('t-leak', 'order-t-leak', 'payer', 100)")
        .execute(&db.pool)
        .await
        .unwrap();
    let mut child = genq_command(&db.url().await)
        .args(["run", "--migrate"])
        .env("PLISIO_SECRET_KEY", PLISIO_KEY)
        .env("GENQ_PAYMENTS_PLISIO_BASE_URL", plisio_base_url)
        .env("GENQ_PAYMENTS_POLL_INTERVAL", "1s")
        .env("GENQ_PAYMENTS_POLL_AFTER", "0s")
        .env("GENQ_HTTP_BIND", "127.0.0.1:0")
        .env("GENQ_LOG", "debug,sqlx=warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn genq run");
    let logs = Arc::new(Mutex::new(String::new()));
    let mut stderr = child.stderr.take().unwrap();
    let sink = logs.clone();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stderr.read(&mut buf) {
            if n == 0 {
                break;
            }
            sink.lock()
                .unwrap()
                .push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    wait_until(
        Duration::from_secs(30),
        "failed Plisio polls logged",
        || {
            let logs = logs.clone();
            async move { logs.lock().unwrap().matches("Plisio poll failed").count() >= failures }
        },
    )
    .await;
    child.kill().unwrap();
    child.wait().unwrap();
    reader.join().unwrap();
    let text = logs.lock().unwrap().clone();
    text
}

#[sqlx::test(migrations = false)]
async fn a_failing_plisio_poll_never_logs_the_key(po: PgPoolOptions, co: PgConnectOptions) {
    let db = TestDb::new(po, co).await;
    // A Plisio that answers garbage, then one that cannot be reached at all.
    let broken = broken_plisio().await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/api/v1", l.local_addr().unwrap())
    };
    for base in [broken, closed] {
        let logs = logs_of_failing_polls(&db, &base, 2).await;
        assert!(
            logs.contains("t-leak"),
            "the failure names the payment: {logs}"
        );
        assert!(
            !logs.contains(PLISIO_KEY),
            "the Plisio key is in the logs:\n{logs}"
        );
        assert!(
            !logs.contains("api_key="),
            "a keyed URL is in the logs:\n{logs}"
        );
        sqlx::query("DELETE FROM genq.payments")
            .execute(&db.pool)
            .await
            .unwrap();
    }
}
