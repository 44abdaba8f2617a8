//! Bulk enqueue by `COPY ... FROM STDIN (FORMAT binary)` (migration 0020, decision 55).
//!
//! A bound statement is inserted row by row whatever shape its values have; `COPY` fills
//! pages at a time, and rows encoded here are streamed while the server writes the ones
//! before. The rules `genq.enqueue_many` applies after its insert (queue rows, fair keys,
//! one wake-up per due queue) are applied to copied rows by the `genq.jobs_intake`
//! trigger, and the table's CHECK constraints validate them, so a batch takes this path
//! only where the two agree: no unique keys (copied rows cannot skip a held key), `run_at`
//! set on every job or on none (the column's default is the server's `now()`), and every
//! value inside the limits `genq.enqueue_many` checks, with room to spare for the payload
//! (its limit is on the stored size, which only the server knows). Any other batch, and a
//! small one (two round trips are not worth it), goes through `genq.enqueue_many`, which
//! reports what is wrong with its own messages.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::NewJob;

/// Below this many jobs one bound statement is quicker than COPY's two round trips.
pub const COPY_MIN_JOBS: usize = 256;
/// Longest payload (serialised JSON) sent by COPY. The server's limit, 1 MiB, is on the
/// stored `jsonb`, which can be several times the text (small numbers in long arrays);
/// a payload above this goes through `genq.enqueue_many`, whose check is exact.
const COPY_MAX_PAYLOAD: usize = 128 * 1024;
/// Longest kind, fairness key or limit group in bytes (`genq.enqueue_many`'s limit).
const MAX_NAME_BYTES: usize = 255;
/// Encoded bytes sent per `CopyData` message: the server inserts one chunk while the next
/// is being encoded.
const CHUNK_BYTES: usize = 1 << 20;

/// `COPY` of jobs whose `run_at` is the server's `now()`.
const COPY_NOW: &str = "COPY genq.jobs (kind, payload, queue, priority, max_attempts, \
     fairness_key, limit_group) FROM STDIN (FORMAT binary)";
/// `COPY` of jobs that each name their `run_at`.
const COPY_AT: &str = "COPY genq.jobs (kind, payload, queue, run_at, priority, max_attempts, \
     fairness_key, limit_group) FROM STDIN (FORMAT binary)";

/// How a batch is copied, if it can be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyShape {
    /// Every job starts at the server's `now()`.
    Now,
    /// Every job names its `run_at`.
    At,
}

/// Whether `jobs` can be copied without changing what `genq.enqueue_many` would do.
pub fn copy_shape(jobs: &[NewJob]) -> Option<CopyShape> {
    if jobs.len() < COPY_MIN_JOBS {
        return None;
    }
    let first = jobs[0].run_at.is_some();
    let name_ok = |s: &str| !s.is_empty() && s.len() <= MAX_NAME_BYTES;
    let plain = jobs.iter().all(|j| {
        j.unique_key.is_none()
            && j.run_at.is_some() == first
            && name_ok(&j.kind)
            && j.max_attempts >= 1
            && j.fairness_key
                .as_deref()
                .is_none_or(|k| k.len() <= MAX_NAME_BYTES)
            && j.limit_group.as_deref().is_none_or(name_ok)
    });
    let small = || jobs.iter().all(|j| json_fits(&j.payload, COPY_MAX_PAYLOAD));
    (plain && small()).then_some(if first { CopyShape::At } else { CopyShape::Now })
}

/// Copies `jobs` (of the given shape) into `genq.jobs` on the caller's connection or
/// transaction. Returns how many rows were inserted.
pub async fn copy_jobs(
    conn: &mut PgConnection,
    jobs: &[NewJob],
    shape: CopyShape,
) -> Result<i64, sqlx::Error> {
    let statement = match shape {
        CopyShape::Now => COPY_NOW,
        CopyShape::At => COPY_AT,
    };
    let mut copy = conn.copy_in_raw(statement).await?;
    let mut rows = BinaryRows::new();
    for job in jobs {
        rows.job(job, shape);
        if rows.buf.len() >= CHUNK_BYTES {
            copy.send(rows.take()).await?;
        }
    }
    rows.end();
    copy.send(rows.take()).await?;
    let copied = copy.finish().await?;
    Ok(i64::try_from(copied).unwrap_or(i64::MAX))
}

/// Rows in PostgreSQL's binary COPY format: a header, then per row a field count and each
/// field as a length (-1 for NULL) and its bytes in the type's binary form.
struct BinaryRows {
    buf: Vec<u8>,
}

impl BinaryRows {
    fn new() -> Self {
        let mut buf = Vec::with_capacity(CHUNK_BYTES + 64 * 1024);
        buf.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
        buf.extend_from_slice(&0i32.to_be_bytes()); // flags: no OIDs
        buf.extend_from_slice(&0i32.to_be_bytes()); // no header extension
        Self { buf }
    }

    fn job(&mut self, job: &NewJob, shape: CopyShape) {
        let fields: i16 = if shape == CopyShape::At { 8 } else { 7 };
        self.buf.extend_from_slice(&fields.to_be_bytes());
        self.text(Some(&job.kind));
        self.jsonb(&job.payload);
        self.text(Some(&job.queue));
        if shape == CopyShape::At {
            self.timestamptz(job.run_at.unwrap_or_else(Utc::now));
        }
        self.int4(job.priority);
        self.int4(job.max_attempts);
        self.text(job.fairness_key.as_deref());
        self.text(job.limit_group.as_deref());
    }

    /// The trailer: a field count of -1.
    fn end(&mut self) {
        self.buf.extend_from_slice(&(-1i16).to_be_bytes());
    }

    fn take(&mut self) -> Vec<u8> {
        std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK_BYTES + 64 * 1024))
    }

    fn field(&mut self, bytes: &[u8]) {
        self.buf
            .extend_from_slice(&field_len(bytes.len()).to_be_bytes());
        self.buf.extend_from_slice(bytes);
    }

    fn text(&mut self, value: Option<&str>) {
        match value {
            Some(s) => self.field(s.as_bytes()),
            None => self.buf.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }

    /// `jsonb`'s binary form: version 1, then the JSON text.
    fn jsonb(&mut self, value: &serde_json::Value) {
        let at = self.buf.len();
        self.buf.extend_from_slice(&0i32.to_be_bytes());
        self.buf.push(1);
        serde_json::to_writer(&mut self.buf, value).expect("a Value serialises into a Vec");
        let len = field_len(self.buf.len() - at - 4);
        self.buf[at..at + 4].copy_from_slice(&len.to_be_bytes());
    }

    fn int4(&mut self, value: i32) {
        self.field(&value.to_be_bytes());
    }

    /// `timestamptz`: microseconds since 2000-01-01 00:00:00 UTC.
    fn timestamptz(&mut self, at: DateTime<Utc>) {
        const POSTGRES_EPOCH_MICROS: i64 = 946_684_800_000_000;
        self.field(&(at.timestamp_micros() - POSTGRES_EPOCH_MICROS).to_be_bytes());
    }
}

/// Whether `value` serialises to at most `cap` bytes; stops writing once it is over.
fn json_fits(value: &serde_json::Value, cap: usize) -> bool {
    struct Counter {
        left: usize,
    }
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.left = self
                .left
                .checked_sub(buf.len())
                .ok_or(std::io::ErrorKind::FileTooLarge)?;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    serde_json::to_writer(Counter { left: cap }, value).is_ok()
}

/// A field's length as the format writes it. Payloads are capped far below 2 GiB before
/// they get here; names at 255 bytes.
fn field_len(len: usize) -> i32 {
    i32::try_from(len).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_and_a_row_are_postgres_binary_copy() {
        let mut rows = BinaryRows::new();
        let job = NewJob::new("k", serde_json::json!({"a": 1})).fairness_key("u");
        rows.job(&job, CopyShape::Now);
        rows.end();
        let mut want = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0".to_vec();
        want.extend_from_slice(&[0, 7]);
        want.extend_from_slice(&[0, 0, 0, 1, b'k']);
        want.extend_from_slice(&[0, 0, 0, 8, 1]);
        want.extend_from_slice(br#"{"a":1}"#);
        want.extend_from_slice(&[0, 0, 0, 7]);
        want.extend_from_slice(b"default");
        want.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 0]);
        want.extend_from_slice(&[0, 0, 0, 4, 0, 0, 0, 20]);
        want.extend_from_slice(&[0, 0, 0, 1, b'u']);
        want.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]);
        want.extend_from_slice(&[0xff, 0xff]);
        assert_eq!(rows.buf, want);
    }

    #[test]
    fn a_batch_copies_only_where_copy_and_enqueue_many_agree() {
        let many = |f: &dyn Fn(usize) -> NewJob| (0..COPY_MIN_JOBS).map(f).collect::<Vec<_>>();
        let plain = |_| NewJob::new("k", serde_json::json!({}));
        assert_eq!(copy_shape(&many(&plain)), Some(CopyShape::Now));
        assert_eq!(copy_shape(&many(&plain)[1..]), None, "too small");
        let at = |_| NewJob::new("k", serde_json::json!({})).run_at(Utc::now());
        assert_eq!(copy_shape(&many(&at)), Some(CopyShape::At));
        let mixed = |i| if i % 2 == 0 { plain(i) } else { at(i) };
        assert_eq!(copy_shape(&many(&mixed)), None, "run_at on some jobs only");
        let keyed = |i: usize| plain(i).unique_key(i.to_string());
        assert_eq!(copy_shape(&many(&keyed)), None, "unique keys");
        let empty_kind = |_| NewJob::new("", serde_json::json!({}));
        assert_eq!(copy_shape(&many(&empty_kind)), None);
        let long_kind = |_| NewJob::new("é".repeat(128), serde_json::json!({}));
        assert_eq!(copy_shape(&many(&long_kind)), None, "256 bytes");
        let no_attempts = |i| plain(i).max_attempts(0);
        assert_eq!(copy_shape(&many(&no_attempts)), None);
        let empty_group = |i| plain(i).limit_group("");
        assert_eq!(copy_shape(&many(&empty_group)), None);
        let big = |_| NewJob::new("k", serde_json::json!("x".repeat(COPY_MAX_PAYLOAD)));
        assert_eq!(copy_shape(&many(&big)), None, "payload over the COPY cap");
    }
}
