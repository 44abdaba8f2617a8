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
