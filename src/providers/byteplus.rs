//! BytePlus ModelArk video tasks (Seedance); Volcengine Ark speaks the same API.
//!
//! The request body is the model input with `model`, `content` and `callback_url` set by
//! us. `content` is the input's own `content` when it has one (sent verbatim), else it is
//! built: `prompt` → a text item, `image_url` → an image item with role `first_frame`,
//! `last_frame_url` → role `last_frame`; those three keys are removed and every other input
//! key (`resolution`, `ratio`, `duration`, `seed`, ...) is passed through.
//!
//! Cancelling is `DELETE .../tasks/{id}`, which only cancels a *queued* task; on a finished
//! task the same call deletes the record (its output could then no longer be fetched), so
//! the adapter reads the task first and only deletes queued ones. A running task cannot be
//! cancelled: that is a `Permanent` error and the task runs to its end.
//!
//! An ambiguous submit is reconciled by listing recent tasks of the model (newest first)
//! and matching the generation id in `callback_url`.

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::http::{self, ApiKey, Op, Reply};
use super::progress::{Phase, Progress};
use super::{
    outputs, tag_webhook_url, CancelOutcome, Provider, ProviderError, ProviderKind, RemoteOutput,
    RemoteStatus, SubmitRequest, Submitted,
};

const KIND: ProviderKind = ProviderKind::BytePlus;
/// The error code of a create refused past the account's queued-task cap (120). BytePlus
/// does not document it; this is the code the fake provider answers with (429).
pub const QUEUE_FULL_CODE: &str = "QuotaExceeded.QueuedTasks";
/// How long a submit refused for a full account queue waits before it is sent again.
const QUEUE_FULL_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

/// Tasks per list page while reconciling (the API allows 1–500).
const PAGE_SIZE: u32 = 100;
/// Most list pages read while reconciling. Past that the search gives up rather than
/// claim the request never arrived.
const MAX_PAGES: u32 = 20;

/// The BytePlus ModelArk adapter. Auth: `Authorization: Bearer <ARK_API_KEY>`.
#[derive(Debug)]
pub struct BytePlus {
    api: http::Api,
}

#[derive(Deserialize)]
struct Created {
    id: String,
}

/// A task as Get and List return it (only what we read).
#[derive(Debug, Deserialize)]
struct Task {
    id: String,
    status: String,
    #[serde(default)]
    error: Option<TaskError>,
    #[serde(default)]
    content: Option<TaskContent>,
    #[serde(default)]
    created_at: Option<i64>,
    #[serde(default)]
    callback_url: Option<String>,
}

#[derive(Debug, Deserialize)]
struct TaskError {
    #[serde(default)]
    code: String,
    #[serde(default)]
    message: String,
}

#[derive(Debug, Deserialize)]
struct TaskContent {
    #[serde(default)]
    video_url: Option<String>,
    #[serde(default)]
    last_frame_url: Option<String>,
}

#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    total: u64,
    #[serde(default)]
    items: Vec<Task>,
}

impl BytePlus {
    /// An adapter talking to `base_url` (`https://ark.ap-southeast.bytepluses.com/api/v3`,
    /// or the fake's `/byteplus/api/v3`).
    pub fn new(client: reqwest::Client, base_url: &str, key: ApiKey) -> anyhow::Result<Self> {
        Ok(Self {
            api: http::Api::new(KIND, client, base_url, key)?,
        })
    }

    fn authorize(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        self.api.key.authorize(req, "Bearer")
    }

    fn task_url(&self, id: &str) -> Result<String, ProviderError> {
        if !http::is_safe_path(id) || id.contains('/') {
            return Err(ProviderError::permanent(format!(
                "byteplus: invalid task id {id:?}"
            )));
        }
        Ok(format!("{}/contents/generations/tasks/{id}", self.api.base))
    }

    fn error(&self, op: Op, reply: &Reply) -> ProviderError {
        let (code, message) = error_of(reply);
        let detail = match (&code, message.is_empty()) {
            (Some(code), false) => format!("{code}: {message}"),
            (Some(code), true) => code.clone(),
            (None, _) => message,
        };
        let code = code.unwrap_or_default();
        // A closed endpoint is temporary (BytePlus reopens it); the status says 400.
        if code.starts_with("InvalidEndpoint.ClosedEndpoint") {
            return ProviderError::Retryable {
                message: format!(
                    "byteplus {}: endpoint closed for now: {}",
                    op.as_str(),
                    http::truncate(&detail)
                ),
                retry_after: reply.retry_after(),
            };
        }
        // Past the account's queued-task cap (120): refused, nothing created; wait for room.
        if code.starts_with(QUEUE_FULL_CODE) {
            return ProviderError::Busy {
                message: format!(
                    "byteplus {}: account queue full: {}",
                    op.as_str(),
                    http::truncate(&detail)
                ),
                retry_after: reply.retry_after().unwrap_or(QUEUE_FULL_WAIT),
            };
        }
        if code.contains("SensitiveContentDetected") {
            return ProviderError::permanent(format!(
                "byteplus {}: moderation: {}",
                op.as_str(),
                http::truncate(&detail)
            ));
        }
        http::status_error(KIND, op, reply, &detail, &self.api.key)
    }

    /// Reads a task; `None` when BytePlus does not know it (404).
    async fn read(&self, id: &str) -> Result<Option<Task>, ProviderError> {
        let reply = http::send(
            self.authorize(self.api.client.get(self.task_url(id)?)),
            KIND,
            Op::Status,
        )
        .await?;
        if reply.status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !reply.status.is_success() {
            return Err(self.error(Op::Status, &reply));
        }
        reply.parse(KIND, Op::Status).map(Some)
    }
}

#[async_trait]
impl Provider for BytePlus {
    fn kind(&self) -> ProviderKind {
        KIND
    }

    async fn submit(&self, req: &SubmitRequest) -> Result<Submitted, ProviderError> {
        let mut body = request_body(req)?;
        if let Some(webhook) = &req.webhook_url {
            body.insert(
                "callback_url".into(),
                Value::String(tag_webhook_url(webhook, req.generation_id)),
            );
        }
        let builder = self
            .api
            .client
            .post(format!("{}/contents/generations/tasks", self.api.base))
            .json(&body);
        let reply = http::send(self.authorize(builder), KIND, Op::Submit).await?;
        if !reply.status.is_success() {
            return Err(self.error(Op::Submit, &reply));
        }
        let created: Created = reply.parse(KIND, Op::Submit)?;
        Ok(Submitted {
            request_id: created.id,
            meta: json!({}),
        })
    }

    async fn status(&self, request_id: &str, _meta: &Value) -> Result<RemoteStatus, ProviderError> {
        match self.read(request_id).await? {
            Some(task) => remote_status(task),
            None => Err(ProviderError::permanent(format!(
                "byteplus status: task {request_id} not found (unknown, deleted, or older than 7 days)"
            ))),
        }
    }

    async fn cancel(
        &self,
        request_id: &str,
        _meta: &Value,
    ) -> Result<CancelOutcome, ProviderError> {
        let Some(task) = self.read(request_id).await? else {
            return Ok(CancelOutcome::NotFound);
        };
        match task.status.as_str() {
            "queued" => {}
            "running" => {
                return Err(ProviderError::permanent(format!(
                    "byteplus cancel: task {request_id} is running and BytePlus cannot cancel running tasks"
                )))
            }
            "cancelled" => return Ok(CancelOutcome::Cancelled),
            _ => return Ok(CancelOutcome::AlreadyFinished),
        }
        let url = self.task_url(request_id)?;
        let reply = http::send(
            self.authorize(self.api.client.delete(url)),
            KIND,
            Op::Cancel,
        )
        .await?;
        if reply.status.is_success() {
            return Ok(CancelOutcome::Cancelled);
        }
        if reply.status.as_u16() == 404 {
            return Ok(CancelOutcome::NotFound);
        }
        // Refused: it started (or finished) between our read and the delete.
        if reply.status.is_client_error() && !matches!(reply.status.as_u16(), 401 | 403 | 429) {
            return match self.read(request_id).await?.map(|t| t.status) {
                None => Ok(CancelOutcome::NotFound),
                Some(s) if s == "cancelled" => Ok(CancelOutcome::Cancelled),
                Some(s) if matches!(s.as_str(), "succeeded" | "failed" | "expired") => {
                    Ok(CancelOutcome::AlreadyFinished)
                }
                Some(_) => Err(self.error(Op::Cancel, &reply)),
            };
        }
        Err(self.error(Op::Cancel, &reply))
    }

    async fn find_submitted(
        &self,
        req: &SubmitRequest,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<Submitted>, ProviderError> {
        if req.webhook_url.is_none() {
            return Err(ProviderError::permanent(
                "byteplus: the submit carried no callback URL, so the generation id cannot be \
                 matched and the ambiguous submit cannot be reconciled",
            ));
        }
        let id = req.generation_id.to_string();
        let since = since.timestamp();
        let mut seen = 0u64;
        for page in 1..=MAX_PAGES {
            let builder = self
                .api
                .client
                .get(format!("{}/contents/generations/tasks", self.api.base))
                .query(&[
                    ("page_num", page.to_string()),
                    ("page_size", PAGE_SIZE.to_string()),
                    ("filter.model", req.model.clone()),
                ]);
            let reply = http::send(self.authorize(builder), KIND, Op::List).await?;
            if !reply.status.is_success() {
                return Err(self.error(Op::List, &reply));
            }
            let page: Page = reply.parse(KIND, Op::List)?;
            seen += page.items.len() as u64;
            let scan = http::scan_page(
                KIND,
                "task",
                &page.items,
                &id,
                |t| t.callback_url.as_deref(),
                |t| t.created_at,
                since,
            );
            if let Some(task) = scan.matches.last() {
                return Ok(Some(Submitted {
                    request_id: task.id.clone(),
                    meta: json!({}),
                }));
            }
            // Newest first: a page wholly older than `since` ends the window.
            let last =
                page.items.len() < PAGE_SIZE as usize || (page.total > 0 && seen >= page.total);
            if last || scan.all_older {
                return Ok(None);
            }
        }
        Err(ProviderError::permanent(format!(
            "byteplus: no task of generation {id} in the newest {} tasks of {}, and the window \
             is longer; cannot prove the submit never arrived",
            MAX_PAGES * PAGE_SIZE,
            req.model
        )))
    }
}

/// The create body: see the module documentation.
fn request_body(req: &SubmitRequest) -> Result<Map<String, Value>, ProviderError> {
    let Value::Object(input) = &req.input else {
        return Err(ProviderError::permanent(
            "byteplus submit: the input must be a JSON object",
        ));
    };
    let mut body = input.clone();
    if !body.contains_key("content") {
        let mut content = Vec::new();
        if let Some(text) = body.remove("prompt") {
            content.push(json!({"type": "text", "text": text}));
        }
        for (key, role) in [
            ("image_url", "first_frame"),
            ("last_frame_url", "last_frame"),
        ] {
            if let Some(url) = body.remove(key) {
                content.push(json!({"type": "image_url", "image_url": {"url": url}, "role": role}));
            }
        }
        if content.is_empty() {
            return Err(ProviderError::permanent(
                "byteplus submit: the input has neither `content` nor `prompt`/`image_url`",
            ));
        }
        body.insert("content".into(), Value::Array(content));
    }
    body.insert("model".into(), Value::String(req.model.clone()));
    body.remove("callback_url");
    Ok(body)
}

fn remote_status(task: Task) -> Result<RemoteStatus, ProviderError> {
    let reason = |task: &Task| match &task.error {
        Some(e) if !e.code.is_empty() || !e.message.is_empty() => {
            http::truncate(&format!("{}: {}", e.code, e.message))
        }
        _ => "no reason given".to_string(),
    };
    Ok(match task.status.as_str() {
        "queued" => RemoteStatus::Queued(Progress::phase(Phase::Queued)),
        "running" => RemoteStatus::Running(Progress::phase(Phase::Running)),
        "succeeded" => {
            let content = task.content.as_ref();
            let video = content.and_then(|c| c.video_url.clone());
            let Some(video) = video else {
                return Ok(RemoteStatus::Failed {
                    reason: "byteplus: succeeded without a video_url".into(),
                });
            };
            let mut outputs = vec![RemoteOutput {
                content_type: outputs::guess_content_type(&video).or(Some("video/mp4".into())),
                url: video,
            }];
            if let Some(frame) = content.and_then(|c| c.last_frame_url.clone()) {
                outputs.push(RemoteOutput {
                    content_type: outputs::guess_content_type(&frame),
                    url: frame,
                });
            }
            RemoteStatus::Succeeded { outputs }
        }
        "failed" => RemoteStatus::Failed {
            reason: format!("byteplus: {}", reason(&task)),
        },
        "expired" => RemoteStatus::Expired {
            reason: format!("byteplus: task expired: {}", reason(&task)),
        },
        "cancelled" => RemoteStatus::Cancelled,
        other => {
            return Err(ProviderError::retryable(format!(
                "byteplus status: unknown status {:?} for task {}",
                http::truncate(other),
                task.id
            )))
        }
    })
}

/// The `{"error": {code, message}}` of a BytePlus error body.
fn error_of(reply: &Reply) -> (Option<String>, String) {
    let Some(body) = reply.json() else {
        return (None, String::new());
    };
    let error = body.get("error").unwrap_or(&body);
    let code = error
        .get("code")
        .and_then(Value::as_str)
        .map(str::to_string);
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    (code, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(input: Value) -> SubmitRequest {
        SubmitRequest {
            generation_id: uuid::Uuid::nil(),
            model: "seedance-1-0-pro".into(),
            input,
            webhook_url: None,
        }
    }

    #[test]
    fn content_is_built_from_prompt_and_images() {
        let body = request_body(&req(json!({
            "prompt": "a cat", "image_url": "https://x/a.png", "duration": 5, "model": "evil"
        })))
        .unwrap();
        assert_eq!(body["model"], "seedance-1-0-pro");
        assert_eq!(body["duration"], 5);
        assert!(body.get("prompt").is_none() && body.get("image_url").is_none());
        assert_eq!(
            body["content"],
            json!([
                {"type": "text", "text": "a cat"},
                {"type": "image_url", "image_url": {"url": "https://x/a.png"}, "role": "first_frame"}
            ])
        );
    }

    #[test]
    fn given_content_is_sent_verbatim() {
        let content = json!([{"type": "text", "text": "x --rs 720p"}]);
        let body = request_body(&req(json!({"content": content, "prompt": "kept"}))).unwrap();
        assert_eq!(body["content"], content);
        assert_eq!(body["prompt"], "kept");
        assert!(request_body(&req(json!({"duration": 5}))).is_err());
        assert!(request_body(&req(json!("text"))).is_err());
    }
}
