//! Finding the output files in a result body. Models differ (fal `video{url}`,
//! `images[{url}]`; Replicate a URL string, a list of them, or an object), so the search is
//! generic: file-like objects (`{url, content_type?}`) and bare `http(s)` URL strings,
//! video first, in a stable order.

use serde_json::Value;

use super::RemoteOutput;

/// Keys looked at first, so the primary output of a video model comes first.
const PREFERRED: &[&str] = &["video", "videos", "output", "image", "images", "audio"];

/// Every output URL in `value`, primary first, without duplicates.
pub(crate) fn collect(value: &Value) -> Vec<RemoteOutput> {
    let mut found = Vec::new();
    walk(value, &mut found);
    let mut seen = std::collections::HashSet::new();
    found.retain(|o: &RemoteOutput| seen.insert(o.url.clone()));
    found
}

fn walk(value: &Value, found: &mut Vec<RemoteOutput>) {
    match value {
        Value::String(s) if is_url(s) => found.push(RemoteOutput {
            url: s.clone(),
            content_type: guess_content_type(s),
        }),
        Value::Array(items) => items.iter().for_each(|v| walk(v, found)),
        Value::Object(map) => {
            if let Some(Value::String(url)) = map.get("url") {
                if is_url(url) {
                    let content_type = map
                        .get("content_type")
                        .and_then(Value::as_str)
                        .filter(|t| !t.is_empty())
                        .map(str::to_string)
                        .or_else(|| guess_content_type(url));
                    found.push(RemoteOutput {
                        url: url.clone(),
                        content_type,
                    });
                    return;
                }
            }
            for key in PREFERRED {
                if let Some(v) = map.get(*key) {
                    walk(v, found);
                }
            }
            for (key, v) in map {
                if !PREFERRED.contains(&key.as_str()) {
                    walk(v, found);
                }
            }
        }
        _ => {}
    }
}

fn is_url(s: &str) -> bool {
    s.starts_with("https://") || s.starts_with("http://")
}

/// A MIME type from the URL's file extension, for providers that do not say.
pub(crate) fn guess_content_type(url: &str) -> Option<String> {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let ext = path.rsplit_once('.')?.1.to_ascii_lowercase();
    let mime = match ext.as_str() {
        "mp4" => "video/mp4",
        "webm" => "video/webm",
        "mov" => "video/quicktime",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "webp" => "image/webp",
        "gif" => "image/gif",
        "wav" => "audio/wav",
        "mp3" => "audio/mpeg",
        _ => return None,
    };
    Some(mime.to_string())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn fal_video_and_image_results() {
        let out = collect(&json!({
            "seed": 3,
            "video": {"url": "https://v3.fal.media/a.mp4", "content_type": "video/mp4", "file_size": 9}
        }));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].content_type.as_deref(), Some("video/mp4"));
        let out =
            collect(&json!({"images": [{"url": "https://x/1.png"}, {"url": "https://x/2.png"}]}));
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].content_type.as_deref(), Some("image/png"));
    }

    #[test]
    fn replicate_outputs_of_every_shape() {
        assert_eq!(collect(&json!("https://r/o.mp4"))[0].url, "https://r/o.mp4");
        assert_eq!(
            collect(&json!(["https://r/a.webp", "https://r/a.webp"])).len(),
            1
        );
        assert!(collect(&json!(null)).is_empty());
        assert!(collect(&json!({"text": "not a url"})).is_empty());
    }

    #[test]
    fn video_comes_before_other_files() {
        let out = collect(
            &json!({"a_thumbnail": {"url": "https://x/t.jpg"}, "video": {"url": "https://x/v.mp4"}}),
        );
        assert_eq!(out[0].url, "https://x/v.mp4");
    }
}
