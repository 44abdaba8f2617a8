//! A small Server-Sent Events client and token minter, for the tests and the `events`
//! benchmark: what a browser's EventSource does (split the stream into events, skip
//! keep-alive comments), and what a backend does to let a browser in (an HS256 JWT with
//! `sub`, `exp` and optionally `gen`).

use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures::{Stream, StreamExt};
use uuid::Uuid;

/// One event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SseEvent {
    /// `id:` (what `Last-Event-ID` sends back).
    pub id: Option<String>,
    /// `event:`.
    pub event: Option<String>,
    /// The `data:` lines, joined by newlines.
    pub data: String,
}

impl SseEvent {
    /// `data` as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data).unwrap_or(serde_json::Value::Null)
    }
}

type Body = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

/// Reads events off a streaming response.
pub struct SseReader {
    body: Body,
    buf: Vec<u8>,
}

impl SseReader {
    /// Reads `response`'s body as an event stream.
    pub fn new(response: reqwest::Response) -> Self {
        Self {
            body: Box::pin(response.bytes_stream()),
            buf: Vec::new(),
        }
    }

    /// The next event; `None` when the stream ended (or failed). Comments (keep-alives)
    /// are skipped.
    pub async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(end) = find_blank_line(&self.buf) {
                let block: Vec<u8> = self.buf.drain(..end.0).collect();
                self.buf.drain(..end.1 - end.0);
                if let Some(event) = parse(&String::from_utf8_lossy(&block)) {
                    return Some(event);
                }
                continue;
            }
            match self.body.next().await {
                Some(Ok(chunk)) => self.buf.extend_from_slice(&chunk),
                Some(Err(_)) | None => return None,
            }
        }
    }

    /// The next event within `within`; `None` on the end of the stream or the timeout.
    pub async fn next_within(&mut self, within: Duration) -> Option<SseEvent> {
        tokio::time::timeout(within, self.next())
            .await
            .ok()
            .flatten()
    }
}

/// Where the first blank line is: (end of the block, start of what follows).
fn find_blank_line(buf: &[u8]) -> Option<(usize, usize)> {
    let text = buf;
    for i in 0..text.len() {
        if text[i..].starts_with(b"\n\n") {
            return Some((i, i + 2));
        }
        if text[i..].starts_with(b"\r\n\r\n") {
            return Some((i, i + 4));
        }
    }
    None
}

fn parse(block: &str) -> Option<SseEvent> {
    let (mut id, mut event, mut data) = (None, None, Vec::new());
    for line in block.lines() {
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = line.split_once(':').unwrap_or((line, ""));
        let value = value.strip_prefix(' ').unwrap_or(value);
        match field {
            "id" => id = Some(value.to_string()),
            "event" => event = Some(value.to_string()),
            "data" => data.push(value),
            _ => {}
        }
    }
    if id.is_none() && event.is_none() && data.is_empty() {
        return None;
    }
    Some(SseEvent {
        id,
        event,
        data: data.join("\n"),
    })
}

/// An HS256 token as a backend mints it for `user`, valid for `ttl_secs` (negative: expired),
/// limited to `gen` when given.
pub fn mint_token(secret: &[u8], user: &str, gen: Option<&[Uuid]>, ttl_secs: i64) -> String {
    let mut claims = serde_json::json!({
        "sub": user,
        "exp": chrono::Utc::now().timestamp() + ttl_secs,
    });
    if let Some(ids) = gen {
        claims["gen"] = serde_json::json!(ids);
    }
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .expect("an HS256 token encodes")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_become_events_and_comments_are_skipped() {
        assert_eq!(parse(": keep-alive"), None);
        assert_eq!(
            parse("id: 7\nevent: generation\ndata: {\"a\":1}\ndata: x"),
            Some(SseEvent {
                id: Some("7".into()),
                event: Some("generation".into()),
                data: "{\"a\":1}\nx".into(),
            })
        );
        assert_eq!(find_blank_line(b"a\n\nb"), Some((1, 3)));
        assert_eq!(find_blank_line(b"a\r\n\r\nb"), Some((1, 5)));
        assert_eq!(find_blank_line(b"a\nb"), None);
    }
}
