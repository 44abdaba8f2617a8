//! A lean path for event stream requests (`GET /v1/...`) on the listeners that serve them.
//! Why: hyper keeps a read buffer and a write buffer (8 KiB each) for the life of every
//! connection, so 10,000 open streams cost ~14 KiB each even with its leanest settings
//! (decision 49). Here the request head is read into a short-lived buffer, parsed with
//! `httparse` and handed to the same axum router (auth, CORS and every error status stay in
//! `super::events`); then the response head is written by hand and the body's frames go
//! straight to the socket (chunked), and the connection closes when the stream ends, so
//! nothing but the stream itself stays per connection. Every other request (webhooks, CORS
//! preflight, health) goes to hyper: the caller only peeks at the first bytes, which stay in
//! the socket for hyper to read.

use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderName, HeaderValue, Method, Request, StatusCode, Version};
use axum::Router;
use futures::StreamExt;
use hyper::service::Service as _;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;

/// What a request line must start with to take this path.
const PREFIX: &[u8] = b"GET /v1/";
/// Largest request head read (a token in the query string included); larger ones get 431.
const MAX_HEAD: usize = 8192;
/// Most header lines accepted.
const MAX_HEADERS: usize = 64;
/// How long a client may take to send its request head (hyper's default).
const HEAD_TIMEOUT: Duration = Duration::from_secs(30);

/// Whether the connection's first bytes are an event stream request. Waits for the first
/// bytes (up to [`HEAD_TIMEOUT`]); `None` when none came (closed or too slow). A head whose
/// first packet is shorter than the prefix goes to hyper, which serves it too.
pub(crate) async fn is_event_request(stream: &TcpStream) -> Option<bool> {
    let mut first = [0u8; PREFIX.len()];
    let n = tokio::time::timeout(HEAD_TIMEOUT, stream.peek(&mut first))
        .await
        .ok()?
        .ok()?;
    (n > 0).then(|| first[..n] == *PREFIX)
}

/// Serves one event stream request on `stream`, then closes it. `stop` turning true ends
/// the stream (the server is stopping).
pub(crate) async fn serve(mut stream: TcpStream, app: Router, mut stop: watch::Receiver<bool>) {
    let request = match read_head(&mut stream).await {
        Ok(Some(request)) => request,
        Ok(None) => return,
        Err(status) => {
            let _ = respond_bare(&mut stream, status).await;
            return;
        }
    };
    let http10 = request.version() == Version::HTTP_10;
    let Ok(response) = TowerToHyperService::new(app).call(request).await;
    let (parts, body) = response.into_parts();
    let length = http_body::Body::size_hint(&body).exact();
    let chunked = length.is_none() && !http10;
    let mut head = format!("HTTP/1.1 {}\r\n", parts.status).into_bytes();
    for (name, value) in &parts.headers {
        // Framing is this writer's own (below): a length the router set would be sent twice,
        // which HTTP/1.1 clients such as undici (Node's fetch) refuse.
        if matches!(
            *name,
            header::CONTENT_LENGTH | header::TRANSFER_ENCODING | header::CONNECTION
        ) {
            continue;
        }
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    match length {
        // 204 (a finished generation) carries no length (RFC 9110 8.6).
        Some(_) if parts.status == StatusCode::NO_CONTENT => {}
        Some(n) => head.extend_from_slice(format!("content-length: {n}\r\n").as_bytes()),
        None if chunked => head.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        None => {}
    }
    head.extend_from_slice(b"connection: close\r\n\r\n");
    if stream.write_all(&head).await.is_err() {
        return;
    }
    drop(head);
    let mut frames = body.into_data_stream();
    loop {
        let frame = tokio::select! {
            frame = frames.next() => frame,
            _ = stop.wait_for(|stopped| *stopped) => None,
        };
        let Some(Ok(data)) = frame else { break };
        if data.is_empty() {
            continue;
        }
        let written = if chunked {
            let mut out = Vec::with_capacity(data.len() + 12);
            out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
            out.extend_from_slice(&data);
            out.extend_from_slice(b"\r\n");
            stream.write_all(&out).await
        } else {
            stream.write_all(&data).await
        };
        if written.is_err() {
            return;
        }
    }
    if chunked {
        let _ = stream.write_all(b"0\r\n\r\n").await;
    }
    let _ = stream.shutdown().await;
}

/// Reads and parses the request head. `Ok(None)`: the client left or was too slow;
/// `Err(status)`: a malformed (400) or too large (431) head.
async fn read_head(stream: &mut TcpStream) -> Result<Option<Request<Body>>, StatusCode> {
    let mut buf = vec![0u8; MAX_HEAD];
    let mut len = 0;
    let deadline = tokio::time::Instant::now() + HEAD_TIMEOUT;
    loop {
        let read = tokio::time::timeout_at(deadline, stream.read(&mut buf[len..])).await;
        let n = match read {
            Ok(Ok(n)) if n > 0 => n,
            _ => return Ok(None),
        };
        len += n;
        let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
        let mut parsed = httparse::Request::new(&mut headers);
        match parsed.parse(&buf[..len]) {
            Ok(httparse::Status::Complete(_)) => return build(&parsed).map(Some),
            Ok(httparse::Status::Partial) if len < buf.len() => continue,
            Ok(httparse::Status::Partial) | Err(httparse::Error::TooManyHeaders) => {
                return Err(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE)
            }
            Err(_) => return Err(StatusCode::BAD_REQUEST),
        }
    }
}

/// The parsed head as a request for the router (no body: a GET's is never read, and the
/// connection closes after the answer).
fn build(parsed: &httparse::Request<'_, '_>) -> Result<Request<Body>, StatusCode> {
    let method = Method::from_bytes(parsed.method.unwrap_or_default().as_bytes())
        .map_err(|_| StatusCode::BAD_REQUEST)?;
    let version = match parsed.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    let mut request = Request::builder()
        .method(method)
        .uri(parsed.path.unwrap_or_default())
        .version(version)
        .body(Body::empty())
        .map_err(|_| StatusCode::BAD_REQUEST)?;
    let headers = request.headers_mut();
    for header in parsed.headers.iter() {
        let name =
            HeaderName::from_bytes(header.name.as_bytes()).map_err(|_| StatusCode::BAD_REQUEST)?;
        let value = HeaderValue::from_bytes(header.value).map_err(|_| StatusCode::BAD_REQUEST)?;
        headers.append(name, value);
    }
    Ok(request)
}

/// A bodiless error answer for a head that never reached the router.
async fn respond_bare(stream: &mut TcpStream, status: StatusCode) -> std::io::Result<()> {
    let head = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
    stream.write_all(head.as_bytes()).await?;
    stream.shutdown().await
}
