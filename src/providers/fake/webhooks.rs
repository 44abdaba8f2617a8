//! Webhooks: when a job that was given a callback URL reaches a final state, the fake POSTs
//! it once, in the provider's shape, and ignores the answer (real providers retry; tests
//! of lost webhooks are easier when the fake never does).
//!
//! Bodies: fal `{request_id, gateway_request_id, status: OK|ERROR, payload, error}`;
//! BytePlus the task (no signature, as BytePlus); Replicate the prediction with
//! `webhook-id` and `webhook-timestamp` headers but no `webhook-signature` yet.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::state::Shared;
use super::{byteplus, fal, replicate};
use crate::providers::ProviderKind;

/// Longest sleep between looks at a job, so a cancel is reported soon after it happens.
const LOOK_EVERY: Duration = Duration::from_millis(250);

/// Watches job `id` and delivers its webhook when it ends.
pub(super) fn watch(state: Shared, id: String) {
    let Some(first) = state.any_job(&id) else {
        return;
    };
    if first.webhook.is_none() {
        return;
    }
    tokio::spawn(async move {
        let (job, url) = loop {
            if state.stopping() {
                return;
            }
            let Some(job) = state.any_job(&id) else {
                return;
            };
            let now = Instant::now();
            if job.phase(now).is_final() {
                let Some(url) = job.webhook.clone() else {
                    return;
                };
                break (job, url);
            }
            state
                .sleep(
                    job.next_change(now)
                        .clamp(Duration::from_millis(5), LOOK_EVERY),
                )
                .await;
        };
        let (body, headers): (Value, Vec<(&str, String)>) = match job.provider {
            ProviderKind::Fal => (
                fal::webhook_body(&state, &job),
                vec![
                    ("x-fal-webhook-request-id", job.id.clone()),
                    ("x-fal-webhook-user-id", "fake-user".into()),
                    (
                        "x-fal-webhook-timestamp",
                        chrono::Utc::now().timestamp().to_string(),
                    ),
                ],
            ),
            ProviderKind::BytePlus => (byteplus::task_json(&state, &job), vec![]),
            ProviderKind::Replicate => (
                replicate::prediction_json(&state, &job),
                vec![
                    ("webhook-id", format!("msg_{}", job.id)),
                    (
                        "webhook-timestamp",
                        chrono::Utc::now().timestamp().to_string(),
                    ),
                ],
            ),
        };
        let mut request = state.webhook_client.post(&url).json(&body);
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let delivered = matches!(request.send().await, Ok(r) if r.status().is_success());
        tracing::debug!(job = %job.id, delivered, "fake provider: webhook");
        state.count_webhook(delivered);
    });
}
