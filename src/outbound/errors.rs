//! Error text for outbound requests. reqwest's `Display` of an error includes the URL, and
//! our URLs can carry secrets (Plisio's `api_key` query parameter, a presigned output URL's
//! signature, a callback token), so every message here is built from the error without its
//! URL, and a URL that must be named loses its query first.

/// `err` without its URL, with its sources: where reqwest keeps the useful part
/// ("connection refused", "operation timed out").
pub fn describe(err: reqwest::Error) -> String {
    chain(&err.without_url())
}

/// An error with its sources, joined with `: ` (skipping a source its parent already
/// quotes).
pub fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// The URL without query, fragment and user info (a presigned URL's query is a credential).
pub fn without_query(url: &url::Url) -> String {
    let mut url = url.clone();
    url.set_query(None);
    url.set_fragment(None);
    let _ = url.set_username("");
    let _ = url.set_password(None);
    url.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn messages_never_carry_the_url() {
        // Port 9 on loopback: nothing listens, the connection is refused at once.
        let err = reqwest::Client::new()
            .get("http://127.0.0.1:9/operations/x?api_key=hunter2")
            .send()
            .await
            .unwrap_err();
        assert!(err.to_string().contains("hunter2"), "reqwest names the URL");
        let text = describe(err);
        assert!(!text.contains("hunter2"), "{text}");
        assert!(!text.contains("api_key"), "{text}");
    }

    #[test]
    fn named_urls_lose_their_credentials() {
        let url = url::Url::parse("https://u:p@cdn.example/a.mp4?X-Amz-Signature=s#f").unwrap();
        assert_eq!(without_query(&url), "https://cdn.example/a.mp4");
    }
}
