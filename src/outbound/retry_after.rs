//! The one `Retry-After` parser, for provider APIs and stores alike.

use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::header::{HeaderMap, RETRY_AFTER};

/// `Retry-After` of `headers`, as a wait from now (see [`parse`]).
pub fn from_headers(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    parse(value, Utc::now())
}

/// Parses `Retry-After`: delay seconds (fractions accepted: some servers send them, and
/// ignoring the hint would retry too early), or an HTTP-date in the IMF-fixdate form
/// (`Wed, 21 Oct 2015 07:28:00 GMT`; the obsolete RFC 850 and asctime forms are not
/// accepted). A date in the past means no wait; anything unreadable means no hint.
pub fn parse(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    if let Ok(secs) = value.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0 && secs < u64::MAX as f64)
            .then(|| Duration::from_secs_f64(secs));
    }
    // IMF-fixdate ("Sun, 06 Nov 1994 08:49:37 GMT") is a valid RFC 2822 date.
    let at = DateTime::parse_from_rfc2822(value).ok()?;
    Some(
        (at.with_timezone(&Utc) - now)
            .to_std()
            .unwrap_or(Duration::ZERO),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn retry_after_in_seconds() {
        let now = Utc::now();
        assert_eq!(parse("2", now), Some(Duration::from_secs(2)));
        assert_eq!(parse(" 120 ", now), Some(Duration::from_secs(120)));
        assert_eq!(parse("0", now), Some(Duration::ZERO));
        assert_eq!(parse("1.5", now), Some(Duration::from_millis(1500)));
        assert_eq!(parse("-1", now), None);
        assert_eq!(parse("NaN", now), None);
        assert_eq!(parse("1e300", now), None);
        assert_eq!(parse("soon", now), None);
        assert_eq!(parse("", now), None);
    }

    #[test]
    fn retry_after_as_http_date() {
        let now = at("2015-10-21T07:27:00Z");
        assert_eq!(
            parse("Wed, 21 Oct 2015 07:28:00 GMT", now),
            Some(Duration::from_secs(60))
        );
        // In the past: no wait, not an error.
        assert_eq!(
            parse("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse("Wed, 32 Oct 2015 07:28:00 GMT", now), None);
    }

    #[test]
    fn retry_after_from_headers() {
        let mut h = HeaderMap::new();
        assert_eq!(from_headers(&h), None);
        h.insert(RETRY_AFTER, "0.25".parse().unwrap());
        assert_eq!(from_headers(&h), Some(Duration::from_millis(250)));
    }
}
