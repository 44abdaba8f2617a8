//! Reading a response body under a byte limit. A provider, a JWKS endpoint or a payment
//! API answering with an endless body must not be able to fill our memory: every body
//! read whole goes through [`read_capped`].

use bytes::{Bytes, BytesMut};
use futures::StreamExt;

use super::errors;

/// Largest provider API answer read (status, result, list): results are small JSON
/// documents that name files, never the files themselves.
pub const PROVIDER_BODY_LIMIT: usize = 4 << 20;
/// Largest JWKS or payment API answer read.
pub const SMALL_BODY_LIMIT: usize = 256 << 10;

/// Why a body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Longer than the limit (by `Content-Length` or by counting). Permanent for that
    /// answer; whether to ask again is the caller's call.
    #[error("the answer is larger than {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// The connection failed while reading (retryable). The text has no URL.
    #[error("the body could not be read: {0}")]
    Transport(String),
}

/// Reads `response`'s body, failing once more than `limit` bytes arrived (or at once when
/// `Content-Length` says so).
pub async fn read_capped(response: reqwest::Response, limit: usize) -> Result<Bytes, BodyError> {
    if response
        .content_length()
        .is_some_and(|len| len > limit as u64)
    {
        return Err(BodyError::TooLarge { limit });
    }
    let mut body = BytesMut::new();
    let mut stream = response.bytes_stream();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| BodyError::Transport(errors::describe(e)))?;
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serves `/sized` (a body with Content-Length) and `/streamed` (chunks, no length),
    /// each `len` bytes.
    async fn server(len: usize) -> String {
        use axum::body::Body;
        let app = axum::Router::new()
            .route(
                "/sized",
                axum::routing::get(move || async move { vec![b'x'; len] }),
            )
            .route(
                "/streamed",
                axum::routing::get(move || async move {
                    let parts = (0..len / 1024)
                        .map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b'x'; 1024])));
                    Body::from_stream(futures::stream::iter(parts))
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn bodies_over_the_cap_are_refused_with_or_without_a_length() {
        let base = server(64 * 1024).await;
        let client = reqwest::Client::new();
        for path in ["sized", "streamed"] {
            let response = client.get(format!("{base}/{path}")).send().await.unwrap();
            let err = read_capped(response, 16 * 1024).await.unwrap_err();
            assert!(
                matches!(err, BodyError::TooLarge { limit: 16384 }),
                "{path}: {err}"
            );
            let response = client.get(format!("{base}/{path}")).send().await.unwrap();
            assert_eq!(
                read_capped(response, 64 * 1024).await.unwrap().len(),
                64 * 1024
            );
        }
    }
}
