//! Finding the output files in a result body, from each provider's documented fields only.
//!
//! A result body carries more than files: fal image models echo the prompt, Replicate
//! predictions carry the input. A generic search for URL strings would download whatever
//! URL a user wrote in a prompt (an internal service, the metadata address) and store its
//! answer as the user's output, so each provider's result is read where its documentation
//! puts files, and no more than [`MAX_OUTPUTS`] of them:
//! - fal: the File objects (`{url, content_type?, ...}`) under `video`, `videos`, `image`,
//!   `images`, `audio` and `audio_file` at the top level of the result (video models
//!   answer `video`, image models `images`, audio models `audio`/`audio_file`);
//! - Replicate: `output` as a URL string or an array of URL strings;
//! - BytePlus: `content.video_url` and `content.last_frame_url` (read in its adapter).

use serde_json::Value;

use super::RemoteOutput;

/// Most outputs taken from one result; the rest are ignored.
pub const MAX_OUTPUTS: usize = 16;

/// fal's documented file fields, in the order outputs are listed (primary first).
const FAL_FIELDS: &[&str] = &["video", "videos", "image", "images", "audio", "audio_file"];

/// The output files of a fal result, primary first, without duplicates.
pub(crate) fn fal(result: &Value) -> Vec<RemoteOutput> {
    let mut found = Vec::new();
    for field in FAL_FIELDS {
        match result.get(*field) {
            Some(Value::Array(files)) => files.iter().for_each(|f| fal_file(f, &mut found)),
            Some(file) => fal_file(file, &mut found),
            None => {}
        }
    }
    finish(found)
}

/// A fal File object (`{url, content_type?}`).
fn fal_file(file: &Value, found: &mut Vec<RemoteOutput>) {
    if let Some(url) = file
        .get("url")
        .and_then(Value::as_str)
        .filter(|u| is_url(u))
    {
        let content_type = file
            .get("content_type")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
            .map(str::to_string)
            .or_else(|| guess_content_type(url));
        found.push(RemoteOutput {
            url: url.to_string(),
            content_type,
        });
    }
}

/// The output files of a Replicate prediction's `output`: a URL or an array of URLs.
pub(crate) fn replicate(output: &Value) -> Vec<RemoteOutput> {
    let urls: Vec<&str> = match output {
        Value::String(url) => vec![url.as_str()],
        Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    };
    finish(
        urls.into_iter()
            .filter(|u| is_url(u))
            .map(|url| RemoteOutput {
                url: url.to_string(),
                content_type: guess_content_type(url),
            })
            .collect(),
    )
}

/// Drops duplicates and everything past [`MAX_OUTPUTS`].
fn finish(mut found: Vec<RemoteOutput>) -> Vec<RemoteOutput> {
    let mut seen = std::collections::HashSet::new();
    found.retain(|o| seen.insert(o.url.clone()));
    found.truncate(MAX_OUTPUTS);
    found
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
        let out = fal(&json!({
            "seed": 3,
            "video": {"url": "https://v3.fal.media/a.mp4", "content_type": "video/mp4", "file_size": 9}
        }));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].content_type.as_deref(), Some("video/mp4"));
        let out = fal(&json!({"images": [{"url": "https://x/1.png"}, {"url": "https://x/2.png"}]}));
        assert_eq!(out.len(), 2);
        assert_eq!(out[1].content_type.as_deref(), Some("image/png"));
    }

    #[test]
    fn fal_echoed_prompts_and_other_fields_are_not_outputs() {
        let out = fal(&json!({
            "images": [{"url": "https://v3.fal.media/1.png"}],
            "prompt": "http://127.0.0.1:8080/admin",
            "seed": 1,
            "debug": {"url": "http://169.254.169.254/latest/meta-data/"},
            "timings": {"inference": 1.0}
        }));
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].url, "https://v3.fal.media/1.png");
    }

    #[test]
    fn video_comes_before_other_files() {
        let out = fal(
            &json!({"images": [{"url": "https://x/t.jpg"}], "video": {"url": "https://x/v.mp4"}}),
        );
        assert_eq!(out[0].url, "https://x/v.mp4");
    }

    #[test]
    fn replicate_outputs_of_every_documented_shape() {
        assert_eq!(
            replicate(&json!("https://r/o.mp4"))[0].url,
            "https://r/o.mp4"
        );
        assert_eq!(
            replicate(&json!(["https://r/a.webp", "https://r/a.webp"])).len(),
            1
        );
        assert!(replicate(&json!(null)).is_empty());
        assert!(replicate(&json!({"text": "https://r/x.png"})).is_empty());
        assert!(replicate(&json!("not a url")).is_empty());
    }

    #[test]
    fn outputs_are_capped() {
        let many: Vec<String> = (0..100).map(|i| format!("https://r/{i}.png")).collect();
        assert_eq!(replicate(&json!(many)).len(), MAX_OUTPUTS);
        let files: Vec<Value> = (0..100)
            .map(|i| json!({"url": format!("https://f/{i}.png")}))
            .collect();
        assert_eq!(fal(&json!({"images": files})).len(), MAX_OUTPUTS);
    }
}
