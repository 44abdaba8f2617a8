//! fal.ai queue API: `POST {base}/{model}` to enqueue, then the `status_url`,
//! `response_url` and `cancel_url` that the submit answer names (they use owner/app only,
//! without the model's subpath, so they are kept in `provider_meta` instead of rebuilt).
//! Those URLs are called with the fal key, so only URLs on the configured fal host (scheme,
//! host, port of `base_url`) are kept or used; any other is replaced by the URL rebuilt
//! from owner/app on the fal host.
//!
//! `COMPLETED` is not success: the result is fetched, and it carries the model's own status
//! code. A 2xx result with an output URL is success; 404/410 means the result is gone
//! (fal keeps it about an hour) and the request is `Expired`; 499/`client_cancelled` is
//! `Cancelled`; fal's gateway errors (429, 502, 503, 504, 500 `internal_error`) are
//! retried; any other error result is the model failing (`Failed`), never retried, since
//! fetching a completed request again returns the same answer.
//!
//! fal has no list API, so [`Provider::find_submitted`] cannot reconcile an ambiguous
//! submit; the generation id rides in the `fal_webhook` URL so fal's webhook can still
//! name the request.

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{json, Value};

use super::http::{self, ApiKey, Op, Reply};
use super::progress::{Phase, Progress};
use super::{
    outputs, tag_webhook_url, CancelOutcome, Provider, ProviderError, ProviderKind, RemoteStatus,
    SubmitRequest, Submitted,
};

const KIND: ProviderKind = ProviderKind::Fal;

/// The fal.ai adapter. Auth: `Authorization: Key <FAL_KEY>`.
#[derive(Debug)]
pub struct Fal {
    api: http::Api,
}

#[derive(Deserialize)]
struct SubmitBody {
    request_id: String,
    #[serde(default)]
    gateway_request_id: Option<String>,
    #[serde(default)]
    status_url: Option<String>,
    #[serde(default)]
    response_url: Option<String>,
    #[serde(default)]
    cancel_url: Option<String>,
}

#[derive(Deserialize)]
struct StatusBody {
    status: String,
    #[serde(default)]
    error: Option<Value>,
    #[serde(default)]
    error_type: Option<String>,
    /// While `IN_QUEUE`.
    #[serde(default)]
    queue_position: Option<i64>,
    /// With `?logs=1`, while `IN_PROGRESS`: only the last percent and line are kept.
    #[serde(default)]
    logs: Option<Vec<LogLine>>,
}

#[derive(Deserialize)]
struct LogLine {
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct CancelBody {
    status: String,
}

impl Fal {
    /// An adapter talking to `base_url` (`https://queue.fal.run`, or the fake's `/fal`).
    pub fn new(client: reqwest::Client, base_url: &str, key: ApiKey) -> anyhow::Result<Self> {
        Ok(Self {
            api: http::Api::new(KIND, client, base_url, key)?,
        })
    }

    fn authorize(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        self.api.key.authorize(req, "Key")
    }

    /// Whether `url` is on the configured fal host (same scheme, host and port as the base
    /// URL). The submit answer's URLs are called with the fal key, so one naming another
    /// host would send the key there; such a URL is never used.
    fn on_fal_host(&self, url: &str) -> bool {
        match (url::Url::parse(&self.api.base), url::Url::parse(url)) {
            (Ok(base), Ok(url)) => {
                base.scheme() == url.scheme()
                    && base.host() == url.host()
                    && base.port_or_known_default() == url.port_or_known_default()
                    && url.username().is_empty()
                    && url.password().is_none()
            }
            _ => false,
        }
    }

    /// A URL from the meta stored at submit, if it is on the fal host, else rebuilt from
    /// owner/app.
    fn url(
        &self,
        meta: &Value,
        field: &str,
        request_id: &str,
        suffix: &str,
    ) -> Result<String, ProviderError> {
        if let Some(url) = meta.get(field).and_then(Value::as_str) {
            if self.on_fal_host(url) {
                return Ok(url.to_string());
            }
            tracing::warn!(
                request_id,
                field,
                "fal: stored URL is not on the fal host; rebuilt from the app"
            );
        }
        let app = meta.get("app").and_then(Value::as_str).ok_or_else(|| {
            ProviderError::permanent(format!(
                "fal request {request_id}: provider_meta has neither {field} nor app"
            ))
        })?;
        Ok(format!(
            "{}/{app}/requests/{request_id}{suffix}",
            self.api.base
        ))
    }

    fn error(&self, op: Op, reply: &Reply) -> ProviderError {
        http::status_error(KIND, op, reply, &describe(reply), &self.api.key)
    }

    async fn result(&self, request_id: &str, meta: &Value) -> Result<RemoteStatus, ProviderError> {
        let url = self.url(meta, "response_url", request_id, "")?;
        let reply = http::send(self.authorize(self.api.client.get(url)), KIND, Op::Result).await?;
        if reply.status.is_success() {
            let body: Value = reply.parse(KIND, Op::Result)?;
            let outputs = outputs::fal(&body);
            if outputs.is_empty() {
                return Ok(RemoteStatus::Failed {
                    reason: "fal: completed without an output URL".into(),
                });
            }
            return Ok(RemoteStatus::Succeeded { outputs });
        }
        let error_type = reply
            .header("x-fal-error-type")
            .unwrap_or_default()
            .to_string();
        match reply.status.as_u16() {
            404 | 410 => Ok(RemoteStatus::Expired {
                reason: format!(
                    "fal result gone (HTTP {}): {}",
                    reply.status.as_u16(),
                    describe(&reply)
                ),
            }),
            499 => Ok(RemoteStatus::Cancelled),
            _ if error_type == "client_cancelled" => Ok(RemoteStatus::Cancelled),
            401 | 403 | 429 | 502 | 503 | 504 => Err(self.error(Op::Result, &reply)),
            500 if error_type == "internal_error" => Err(self.error(Op::Result, &reply)),
            code => Ok(RemoteStatus::Failed {
                reason: format!("fal: HTTP {code}: {}", http::truncate(&describe(&reply))),
            }),
        }
    }
}

#[async_trait]
impl Provider for Fal {
    fn kind(&self) -> ProviderKind {
        KIND
    }

    async fn submit(&self, req: &SubmitRequest) -> Result<Submitted, ProviderError> {
        if !http::is_safe_path(&req.model) || !req.model.contains('/') {
            return Err(ProviderError::permanent(format!(
                "fal submit: invalid model id {:?} (expected owner/app[/path])",
                req.model
            )));
        }
        let mut builder = self
            .api
            .client
            .post(format!("{}/{}", self.api.base, req.model))
            .json(&req.input);
        if let Some(webhook) = &req.webhook_url {
            builder =
                builder.query(&[("fal_webhook", tag_webhook_url(webhook, req.generation_id))]);
        }
        let reply = http::send(self.authorize(builder), KIND, Op::Submit).await?;
        if !reply.status.is_success() {
            return Err(self.error(Op::Submit, &reply));
        }
        let body: SubmitBody = reply.parse(KIND, Op::Submit)?;
        let app: String = req.model.split('/').take(2).collect::<Vec<_>>().join("/");
        let mut meta = json!({ "app": app });
        for (field, value) in [
            ("status_url", body.status_url),
            ("response_url", body.response_url),
            ("cancel_url", body.cancel_url),
        ] {
            match value {
                Some(v) if self.on_fal_host(&v) => meta[field] = Value::String(v),
                Some(_) => tracing::warn!(
                    request_id = %body.request_id,
                    field,
                    "fal submit: answer names a URL off the fal host; ignored (rebuilt from the app)"
                ),
                None => {}
            }
        }
        if let Some(v) = body.gateway_request_id {
            meta["gateway_request_id"] = Value::String(v);
        }
        Ok(Submitted {
            request_id: body.request_id,
            meta,
        })
    }

    async fn status(&self, request_id: &str, meta: &Value) -> Result<RemoteStatus, ProviderError> {
        let url = self.url(meta, "status_url", request_id, "/status")?;
        // logs=1: fal sends the run's logs only when asked (the percent and last line).
        let get = self.api.client.get(url).query(&[("logs", "1")]);
        let reply = http::send(self.authorize(get), KIND, Op::Status).await?;
        if !reply.status.is_success() {
            return Err(self.error(Op::Status, &reply));
        }
        let body: StatusBody = reply.parse(KIND, Op::Status)?;
        match body.status.as_str() {
            "IN_QUEUE" => Ok(RemoteStatus::Queued(
                Progress::phase(Phase::Queued).with_queue_position(body.queue_position),
            )),
            "IN_PROGRESS" => Ok(RemoteStatus::Running(
                Progress::phase(Phase::Running)
                    .with_log_lines(body.logs.iter().flatten().map(|line| line.message.as_str())),
            )),
            "COMPLETED" => match body.error.filter(|e| !e.is_null()) {
                // Newer status bodies already say that the run failed.
                Some(error) => Ok(RemoteStatus::Failed {
                    reason: format!(
                        "fal: {}{}",
                        body.error_type
                            .map(|t| format!("{t}: "))
                            .unwrap_or_default(),
                        http::truncate(
                            &error
                                .as_str()
                                .map_or_else(|| error.to_string(), str::to_string)
                        )
                    ),
                }),
                None => self.result(request_id, meta).await,
            },
            other => Err(ProviderError::retryable(format!(
                "fal status: unknown status {:?} for request {request_id}",
                http::truncate(other)
            ))),
        }
    }

    async fn cancel(&self, request_id: &str, meta: &Value) -> Result<CancelOutcome, ProviderError> {
        let url = self.url(meta, "cancel_url", request_id, "/cancel")?;
        let reply = http::send(self.authorize(self.api.client.put(url)), KIND, Op::Cancel).await?;
        let said = serde_json::from_slice::<CancelBody>(&reply.body)
            .ok()
            .map(|b| b.status);
        match (said.as_deref(), reply.status.as_u16()) {
            (Some("OK"), _) => Ok(CancelOutcome::Cancelled),
            (Some("CANCELLATION_REQUESTED"), _) => Ok(CancelOutcome::Requested),
            (Some("ALREADY_COMPLETED"), _) => Ok(CancelOutcome::AlreadyFinished),
            (Some("NOT_FOUND"), _) | (None, 404) => Ok(CancelOutcome::NotFound),
            _ if !reply.status.is_success() => Err(self.error(Op::Cancel, &reply)),
            (Some(other), _) => Err(ProviderError::retryable(format!(
                "fal cancel: unknown answer {:?} for request {request_id}",
                http::truncate(other)
            ))),
            (None, code) => Err(ProviderError::retryable(format!(
                "fal cancel: HTTP {code} with an unreadable body for request {request_id}"
            ))),
        }
    }

    async fn find_submitted(
        &self,
        _req: &SubmitRequest,
        _since: chrono::DateTime<chrono::Utc>,
    ) -> Result<Option<Submitted>, ProviderError> {
        Err(ProviderError::permanent(
            "fal has no API to list requests: an ambiguous fal submit cannot be reconciled \
             (wait for the fal webhook, which names the generation, and never resubmit)",
        ))
    }
}

/// fal's description of an error: `detail` (a string, or a list of `{loc, msg, type}`),
/// `error_type` or the `X-Fal-Error-Type` header. Inputs quoted back in `input`/`ctx` are
/// left out.
fn describe(reply: &Reply) -> String {
    let mut parts = Vec::new();
    if let Some(t) = reply.header("x-fal-error-type") {
        parts.push(t.to_string());
    }
    if let Some(body) = reply.json() {
        if let Some(t) = body.get("error_type").and_then(Value::as_str) {
            if !parts.iter().any(|p| p == t) {
                parts.push(t.to_string());
            }
        }
        match body.get("detail") {
            Some(Value::String(s)) => parts.push(s.clone()),
            Some(Value::Array(items)) => {
                for item in items {
                    let msg = item.get("msg").and_then(Value::as_str).unwrap_or("");
                    let ty = item.get("type").and_then(Value::as_str).unwrap_or("");
                    let loc = item
                        .get("loc")
                        .and_then(Value::as_array)
                        .map(|l| {
                            l.iter()
                                .map(|p| p.as_str().map_or_else(|| p.to_string(), str::to_string))
                                .collect::<Vec<_>>()
                                .join(".")
                        })
                        .unwrap_or_default();
                    parts.push(format!("{msg} ({ty} at {loc})"));
                }
            }
            _ => {}
        }
    }
    http::truncate(&parts.join(": "))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fal() -> Fal {
        let client = http::client(std::time::Duration::from_secs(5)).unwrap();
        Fal::new(client, "https://queue.fal.run", ApiKey::new("k")).unwrap()
    }

    #[test]
    fn urls_off_the_fal_host_are_never_called_with_the_key() {
        let fal = fal();
        for foreign in [
            "http://169.254.169.254/latest/meta-data/",
            "https://queue.fal.run.evil.example/fal-ai/x/requests/r1/status",
            "http://queue.fal.run/fal-ai/x/requests/r1/status",
            "https://queue.fal.run:8443/fal-ai/x/requests/r1/status",
            "https://user@queue.fal.run/fal-ai/x/requests/r1/status",
        ] {
            let meta = json!({"app": "fal-ai/x", "status_url": foreign});
            let url = fal.url(&meta, "status_url", "r1", "/status").unwrap();
            assert_eq!(
                url, "https://queue.fal.run/fal-ai/x/requests/r1/status",
                "{foreign}"
            );
        }
        let own = "https://queue.fal.run/fal-ai/x/requests/r1/status";
        let meta = json!({"app": "fal-ai/x", "status_url": own});
        assert_eq!(fal.url(&meta, "status_url", "r1", "/status").unwrap(), own);
    }
}
