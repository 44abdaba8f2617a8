//! The lean path for `GET /v1/...` (src/http/event_edge.rs) over raw TCP: a stream's head
//! and chunked events, answers that close the connection, a malformed head (400), an
//! oversized head (431), a client that sends nothing, and other requests on the same
//! listener still served by hyper (keep-alive included).

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::Live;
use crate::common::generation::GenEnv;

/// `raw` sent on a fresh connection to the public listener (then the client's side closed);
/// everything read until the server closes it.
async fn exchange(live: &Live, raw: &[u8]) -> String {
    let addr = live.public.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(raw).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out))
        .await
        .expect("the server closes the connection")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads from `stream` until `needle` has arrived; everything read so far.
async fn read_until(stream: &mut TcpStream, needle: &str) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&out).contains(needle) {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("no {needle:?} in {:?}", String::from_utf8_lossy(&out)))
            .unwrap();
        assert!(
            n > 0,
            "closed before {needle:?}: {:?}",
            String::from_utf8_lossy(&out)
        );
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[sqlx::test(migrations = false)]
async fn event_requests_take_the_lean_path_and_bad_heads_are_refused(
    po: PgPoolOptions,
    co: PgConnectOptions,
) {
    let live = Live::start(GenEnv::setup(po, co).await, &[]).await;
    let id = live.insert_generation("alice").await;
    let token = live.token("alice");

    // A stream: the SSE head, chunked, and its first event (the current state).
    let addr = live.public.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "GET /v1/generations/{id}/events?token={token} HTTP/1.1\r\nHost: genq\r\nAccept: text/event-stream\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let got = read_until(&mut stream, "event: generation").await;
    assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
    assert!(got.contains("content-type: text/event-stream\r\n"), "{got}");
    assert!(got.contains("transfer-encoding: chunked\r\n"), "{got}");
    assert!(got.contains("x-accel-buffering: no\r\n"), "{got}");
    assert!(got.contains(&id.to_string()), "{got}");
    drop(stream);

    // Router answers with a body: the status and JSON from the handlers, then close.
    let got = exchange(
        &live,
        format!("GET /v1/generations/{id}/events HTTP/1.1\r\nHost: genq\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(got.starts_with("HTTP/1.1 401 Unauthorized\r\n"), "{got}");
    assert!(
        got.contains("www-authenticate: Bearer realm=\"genq\"\r\n"),
        "{got}"
    );
    assert!(got.contains("connection: close\r\n"), "{got}");
    // One framing header: the router's own content-length is not sent twice (Node's fetch
    // refuses a duplicate).
    assert_eq!(got.matches("content-length:").count(), 1, "{got}");
    assert_eq!(got.matches("connection:").count(), 1, "{got}");
    assert!(got.ends_with("}"), "{got}");
    let got = exchange(
        &live,
        format!("GET /v1/nothing-here?token={token} HTTP/1.1\r\nHost: genq\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(got.starts_with("HTTP/1.1 404 Not Found\r\n"), "{got}");

    // A malformed head: 400, no router.
    let got = exchange(
        &live,
        b"GET /v1/generations HTTP/1.1\r\nno colon here\r\n\r\n",
    )
    .await;
    assert!(got.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{got}");
    let got = exchange(&live, b"GET /v1/\x01bad HTTP/1.1\r\n\r\n").await;
    assert!(got.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{got}");

    // A head that fills 8 KiB unfinished, or with too many header lines: 431.
    let mut big = format!("GET /v1/generations/{id}/events?token=").into_bytes();
    big.resize(8192, b'x');
    let got = exchange(&live, &big).await;
    assert!(got.starts_with("HTTP/1.1 431 "), "{got}");
    let mut many = String::from("GET /v1/users/me/events HTTP/1.1\r\n");
    for i in 0..100 {
        many.push_str(&format!("x-h{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let got = exchange(&live, many.as_bytes()).await;
    assert!(got.starts_with("HTTP/1.1 431 "), "{got}");

    // A client that leaves before finishing its head gets nothing.
    let got = exchange(&live, b"GET /v1/users/me/ev").await;
    assert_eq!(got, "", "an unfinished head is not answered");

    // Everything else is hyper's, with keep-alive: two requests on one connection.
    let mut conn = TcpStream::connect(addr).await.unwrap();
    for _ in 0..2 {
        conn.write_all(b"GET /healthz HTTP/1.1\r\nHost: genq\r\n\r\n")
            .await
            .unwrap();
        let got = read_until(&mut conn, "\r\n\r\n").await;
        assert!(got.starts_with("HTTP/1.1 200 OK\r\n"), "{got}");
    }
}
