//! Replicate predictions.
//!
//! The model string picks the endpoint: a 64-hex version id, or `owner/name:version`, is
//! created with `POST {base}/predictions {version, ...}`; `owner/name` (official models) with
//! `POST {base}/models/{owner}/{name}/predictions`. No `Prefer: wait`: a worker slot is never
//! held while the model renders. The webhook asks for the `completed` event only.
//!
//! `succeeded` with `data_removed` (outputs are deleted an hour after the run) and
//! `aborted` (a deadline passed before it started) are `Expired`. A 429 carries its wait in
//! `Retry-After` or in the body ("Expected available in N seconds").
//!
//! An ambiguous submit is reconciled by walking the prediction list (newest first, by
//! cursor) and matching the generation id in `webhook`.

use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{json, Value};

use super::http::{self, ApiKey, Op, Reply};
use super::progress::{Phase, Progress};
use super::{
    outputs, tag_webhook_url, CancelOutcome, Provider, ProviderError, ProviderKind, RemoteStatus,
    SubmitRequest, Submitted,
};

const KIND: ProviderKind = ProviderKind::Replicate;

/// Most list pages read while reconciling. Past that the search gives up rather than
/// claim the request never arrived.
const MAX_PAGES: u32 = 50;

/// The Replicate adapter. Auth: `Authorization: Bearer <REPLICATE_API_TOKEN>`.
#[derive(Debug)]
pub struct Replicate {
    api: http::Api,
}

#[derive(Debug, Deserialize)]
struct Prediction {
    id: String,
    #[serde(default)]
    status: String,
    #[serde(default)]
    output: Value,
    #[serde(default)]
    error: Value,
    #[serde(default)]
    data_removed: bool,
    #[serde(default)]
    created_at: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(default)]
    webhook: Option<String>,
    /// The model's stdout so far; only its last percent and line are kept.
    #[serde(default, deserialize_with = "null_as_empty")]
    logs: String,
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    next: Option<String>,
    #[serde(default)]
    results: Vec<Prediction>,
}

/// Where a model string sends the create call.
#[derive(Debug, PartialEq, Eq)]
enum Target {
    Version(String),
    Model(String),
}

impl Replicate {
    /// An adapter talking to `base_url` (`https://api.replicate.com/v1`, or the fake's
    /// `/replicate/v1`).
    pub fn new(client: reqwest::Client, base_url: &str, key: ApiKey) -> anyhow::Result<Self> {
        Ok(Self {
            api: http::Api::new(KIND, client, base_url, key)?,
        })
    }

    fn authorize(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        self.api.key.authorize(req, "Bearer")
    }

    fn prediction_url(&self, id: &str, suffix: &str) -> Result<String, ProviderError> {
        if !http::is_safe_path(id) || id.contains('/') {
            return Err(ProviderError::permanent(format!(
                "replicate: invalid prediction id {id:?}"
            )));
        }
        Ok(format!("{}/predictions/{id}{suffix}", self.api.base))
    }

    fn error(&self, op: Op, reply: &Reply) -> ProviderError {
        let detail = reply
            .json()
            .map(|body| {
                let title = body
                    .get("title")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let detail = body
                    .get("detail")
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                match (title.is_empty(), detail.is_empty()) {
                    (false, false) => format!("{title}: {detail}"),
                    (true, _) => detail.to_string(),
                    (false, true) => title.to_string(),
                }
            })
            .unwrap_or_default();
        let mut error = http::status_error(KIND, op, reply, &detail, &self.api.key);
        if let ProviderError::Retryable { retry_after, .. } = &mut error {
            if retry_after.is_none() {
                *retry_after = throttle_wait(&detail);
            }
        }
        error
    }

    /// Reads (GET) or cancels (POST `/cancel`) a prediction; `None` when Replicate does
    /// not know it (404).
    async fn call(
        &self,
        method: reqwest::Method,
        id: &str,
        op: Op,
        suffix: &str,
    ) -> Result<Option<Prediction>, ProviderError> {
        let url = self.prediction_url(id, suffix)?;
        let builder = self.api.client.request(method, url);
        let reply = http::send(self.authorize(builder), KIND, op).await?;
        if reply.status == reqwest::StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !reply.status.is_success() {
            return Err(self.error(op, &reply));
        }
        reply.parse(KIND, op).map(Some)
    }
}

#[async_trait]
impl Provider for Replicate {
    fn kind(&self) -> ProviderKind {
        KIND
    }

    async fn submit(&self, req: &SubmitRequest) -> Result<Submitted, ProviderError> {
        let mut body = json!({ "input": req.input });
        let url = match target(&req.model)? {
            Target::Version(version) => {
                body["version"] = Value::String(version);
                format!("{}/predictions", self.api.base)
            }
            Target::Model(model) => format!("{}/models/{model}/predictions", self.api.base),
        };
        if let Some(webhook) = &req.webhook_url {
            body["webhook"] = Value::String(tag_webhook_url(webhook, req.generation_id));
            body["webhook_events_filter"] = json!(["completed"]);
        }
        let reply = http::send(
            self.authorize(self.api.client.post(url).json(&body)),
            KIND,
            Op::Submit,
        )
        .await?;
        if !reply.status.is_success() {
            return Err(self.error(Op::Submit, &reply));
        }
        let prediction: Prediction = reply.parse(KIND, Op::Submit)?;
        Ok(Submitted {
            request_id: prediction.id,
            meta: json!({}),
        })
    }

    async fn status(&self, request_id: &str, _meta: &Value) -> Result<RemoteStatus, ProviderError> {
        match self
            .call(reqwest::Method::GET, request_id, Op::Status, "")
            .await?
        {
            Some(p) => remote_status(p),
            None => Err(ProviderError::permanent(format!(
                "replicate status: prediction {request_id} not found"
            ))),
        }
    }

    async fn cancel(
        &self,
        request_id: &str,
        _meta: &Value,
    ) -> Result<CancelOutcome, ProviderError> {
        let Some(p) = self
            .call(reqwest::Method::POST, request_id, Op::Cancel, "/cancel")
            .await?
        else {
            return Ok(CancelOutcome::NotFound);
        };
        Ok(match p.status.as_str() {
            "canceled" => CancelOutcome::Cancelled,
            "succeeded" | "failed" | "aborted" => CancelOutcome::AlreadyFinished,
            // Replicate stops it shortly; the answer may still show it running.
            _ => CancelOutcome::Requested,
        })
    }

    async fn find_submitted(
        &self,
        req: &SubmitRequest,
        since: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<Submitted>, ProviderError> {
        if req.webhook_url.is_none() {
            return Err(ProviderError::permanent(
                "replicate: the submit carried no webhook URL, so the generation id cannot be \
                 matched and the ambiguous submit cannot be reconciled",
            ));
        }
        let id = req.generation_id.to_string();
        let mut url = format!("{}/predictions", self.api.base);
        for _ in 0..MAX_PAGES {
            let reply =
                http::send(self.authorize(self.api.client.get(&url)), KIND, Op::List).await?;
            if !reply.status.is_success() {
                return Err(self.error(Op::List, &reply));
            }
            let page: Page = reply.parse(KIND, Op::List)?;
            let scan = http::scan_page(
                KIND,
                "prediction",
                &page.results,
                &id,
                |p| p.webhook.as_deref(),
                |p| p.created_at,
                since,
            );
            if let Some(p) = scan.matches.first() {
                return Ok(Some(Submitted {
                    request_id: p.id.clone(),
                    meta: json!({}),
                }));
            }
            // Newest first: a page wholly older than `since` ends the window.
            match page.next {
                Some(next) if !scan.all_older => {
                    // The cursor URL is absolute; our key goes only to our own API.
                    if !next.starts_with(&self.api.base) {
                        return Err(ProviderError::permanent(format!(
                            "replicate list: next page {next:?} is outside {}",
                            self.api.base
                        )));
                    }
                    url = next;
                }
                _ => return Ok(None),
            }
        }
        Err(ProviderError::permanent(format!(
            "replicate: no prediction of generation {id} in the newest {MAX_PAGES} pages, and the \
             window is longer; cannot prove the submit never arrived"
        )))
    }
}

/// Which create endpoint a model string means.
fn target(model: &str) -> Result<Target, ProviderError> {
    let is_version = |v: &str| v.len() == 64 && v.chars().all(|c| c.is_ascii_hexdigit());
    if is_version(model) {
        return Ok(Target::Version(model.to_string()));
    }
    let (name, version) = match model.split_once(':') {
        Some((name, version)) => (name, Some(version)),
        None => (model, None),
    };
    let well_formed = http::is_safe_path(name) && name.split('/').count() == 2;
    match version {
        Some(v) if well_formed && is_version(v) => Ok(Target::Version(v.to_string())),
        None if well_formed => Ok(Target::Model(name.to_string())),
        _ => Err(ProviderError::permanent(format!(
            "replicate submit: invalid model {model:?} (expected owner/name, owner/name:version \
             or a 64-hex version id)"
        ))),
    }
}

fn remote_status(p: Prediction) -> Result<RemoteStatus, ProviderError> {
    let error = || match &p.error {
        Value::Null => "no reason given".to_string(),
        Value::String(s) => http::truncate(s),
        other => http::truncate(&other.to_string()),
    };
    Ok(match p.status.as_str() {
        "starting" => RemoteStatus::Queued(Progress::phase(Phase::Starting).with_log_text(&p.logs)),
        "processing" => {
            RemoteStatus::Running(Progress::phase(Phase::Running).with_log_text(&p.logs))
        }
        "succeeded" if p.data_removed => RemoteStatus::Expired {
            reason: "replicate: output already removed (data_removed)".into(),
        },
        "succeeded" => {
            let outputs = outputs::replicate(&p.output);
            if outputs.is_empty() {
                RemoteStatus::Failed {
                    reason: "replicate: succeeded without an output URL".into(),
                }
            } else {
                RemoteStatus::Succeeded { outputs }
            }
        }
        "failed" => RemoteStatus::Failed {
            reason: format!("replicate: {}", error()),
        },
        "canceled" => RemoteStatus::Cancelled,
        "aborted" => RemoteStatus::Expired {
            reason: "replicate: aborted (its deadline passed before it started)".into(),
        },
        other => {
            return Err(ProviderError::retryable(format!(
                "replicate status: unknown status {:?} for prediction {}",
                http::truncate(other),
                p.id
            )))
        }
    })
}

/// The wait in Replicate's throttle message: "Request was throttled. Expected available in
/// 1 second." (also "in 12 seconds", "in 0.5 seconds").
fn throttle_wait(detail: &str) -> Option<Duration> {
    let rest = detail.split("available in ").nth(1)?;
    let number = rest.split_whitespace().next()?;
    let secs: f64 = number.parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_message_gives_the_wait() {
        assert_eq!(
            throttle_wait("Request was throttled. Expected available in 1 second."),
            Some(Duration::from_secs(1))
        );
        assert_eq!(
            throttle_wait("Request was throttled. Expected available in 12 seconds."),
            Some(Duration::from_secs(12))
        );
        assert_eq!(throttle_wait("Request was throttled."), None);
    }

    #[test]
    fn model_strings_pick_the_endpoint() {
        let v = "5c7d5dc6dd8bf75c1acaa8565735e7986bc5b66206b55cca93cb72c9bf15ccaa";
        assert_eq!(target(v).unwrap(), Target::Version(v.into()));
        assert_eq!(
            target(&format!("owner/name:{v}")).unwrap(),
            Target::Version(v.into())
        );
        assert_eq!(
            target("kwaivgi/kling-v2.1").unwrap(),
            Target::Model("kwaivgi/kling-v2.1".into())
        );
        assert!(target("owner/name:short").is_err());
        assert!(target("../predictions").is_err());
        assert!(target("one-segment").is_err());
    }
}
