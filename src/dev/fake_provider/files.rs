//! Output files at `/files/{id}.mp4`: a few KB of bytes derived from the job id (an MP4
//! `ftyp` box, then filler), so a download can be checked byte for byte. A file exists
//! once its job succeeded and until `output_ttl` after that, like a provider's CDN.

use std::time::Instant;

use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use super::faults::{gate, Dialect, FakeOp, FaultKind, Gate};
use super::state::Shared;

/// Size of every output file, in bytes.
pub const SIZE: usize = 4096;

pub(super) fn routes() -> Router<Shared> {
    Router::new().route("/files/{name}", get(download))
}

/// The download URL of a job's output.
pub(super) fn url(state: &Shared, id: &str) -> String {
    format!("{}/files/{id}.mp4", state.base)
}

/// A storage CDN answers errors in plain text.
struct Cdn;

impl Dialect for Cdn {
    fn error(&self, status: StatusCode, _code: Option<&str>, message: &str) -> Response {
        (status, message.to_string()).into_response()
    }

    fn moderation(&self) -> Response {
        (StatusCode::FORBIDDEN, "forbidden").into_response()
    }
}

async fn download(State(state): State<Shared>, Path(name): Path<String>) -> Response {
    let job = name.strip_suffix(".mp4").and_then(|id| state.any_job(id));
    let fault = match gate(&state, job.as_ref().map(|j| j.provider), FakeOp::File, &Cdn).await {
        Gate::Respond(r) => return r,
        Gate::Proceed(f) => f,
    };
    if let Some(spec) = fault.filter(|f| f.fault == FaultKind::ExpiredResult) {
        let status =
            StatusCode::from_u16(spec.status.unwrap_or(404)).unwrap_or(StatusCode::NOT_FOUND);
        return (status, "expired").into_response();
    }
    match job {
        Some(job) if job.file_available(Instant::now(), state.cfg.output_ttl) => {
            ([(header::CONTENT_TYPE, "video/mp4")], bytes_of(&job.id)).into_response()
        }
        _ => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
}

/// The file's bytes: the same for the same id, different between ids.
pub fn bytes_of(id: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(SIZE);
    // ftyp box: size 24, brand isom, minor version 0x200, compatible isom + mp41.
    out.extend_from_slice(&[0, 0, 0, 24]);
    out.extend_from_slice(b"ftypisom");
    out.extend_from_slice(&[0, 0, 2, 0]);
    out.extend_from_slice(b"isommp41");
    let free = (SIZE - out.len()) as u32;
    out.extend_from_slice(&free.to_be_bytes());
    out.extend_from_slice(b"free");
    // FNV-1a of the id seeds an xorshift filler.
    let mut x = id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    }) | 1;
    while out.len() < SIZE {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.push(x as u8);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_are_deterministic_mp4_shaped() {
        let a = bytes_of("job-a");
        assert_eq!(a.len(), SIZE);
        assert_eq!(&a[4..8], b"ftyp");
        assert_eq!(a, bytes_of("job-a"));
        assert_ne!(a, bytes_of("job-b"));
    }
}
