//! LISTEN on its own connection: `genq_jobs` wakes the producer of the named queue,
//! `genq_cancel` aborts a running job this daemon holds (or drops it from its producer's
//! buffer), `genq_control`'s pauses make the producer hand its buffered jobs back. After any reconnect every producer
//! is woken, because notifications sent meanwhile are lost; polling covers the rest.

use std::sync::Arc;

use sqlx::postgres::PgListener;
use tokio::sync::watch;

use super::{error_backoff, sleep_or_stop, Shared};
use crate::queue::queue_control::CONTROL_CHANNEL;
use crate::queue::{CANCEL_CHANNEL, JOBS_CHANNEL};

/// Runs until `stop` turns true.
pub(crate) async fn run(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut backoff = error_backoff();
    loop {
        let mut listener = match connect(&shared).await {
            Ok(l) => l,
            Err(err) => {
                let delay = backoff.next().unwrap_or_default();
                tracing::warn!(error = %err, retry_in = ?delay, "LISTEN connection failed; polling meanwhile");
                if !sleep_or_stop(delay, &mut stop).await {
                    return;
                }
                continue;
            }
        };
        backoff = error_backoff();
        shared.wake_all();
        loop {
            let next = tokio::select! {
                n = listener.try_recv() => n,
                _ = stop.wait_for(|s| *s) => return,
            };
            match next {
                Ok(Some(n)) if n.channel() == JOBS_CHANNEL => shared.wake(n.payload()),
                Ok(Some(n)) if n.channel() == CANCEL_CHANNEL => cancel(&shared, n.payload()),
                Ok(Some(n)) if n.channel() == CONTROL_CHANNEL => control(&shared, n.payload()),
                Ok(Some(_)) => {}
                // The connection dropped; the next try_recv reconnects and re-listens.
                Ok(None) => {
                    tracing::warn!("LISTEN connection lost; reconnecting");
                    shared.wake_all();
                }
                Err(err) => {
                    tracing::warn!(error = %err, "LISTEN failed; reconnecting");
                    break;
                }
            }
        }
    }
}

async fn connect(shared: &Shared) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(&shared.listen_pool).await?;
    listener
        .listen_all([JOBS_CHANNEL, CANCEL_CHANNEL, CONTROL_CHANNEL])
        .await?;
    Ok(listener)
}

/// A pause makes the queue's producer hand back the jobs it holds unstarted: they were
/// claimed before the pause, but nothing has run yet, so the pause can hold them too.
fn control(shared: &Shared, payload: &str) {
    tracing::info!(control = payload, "queue control received");
    let Ok(v) = serde_json::from_str::<serde_json::Value>(payload) else {
        return;
    };
    if v["action"] == "pause" {
        if let Some(queue) = v["queue"].as_str() {
            shared.flush_buffer(queue);
        }
    }
}

fn cancel(shared: &Shared, payload: &str) {
    let Ok(id) = payload.parse::<i64>() else {
        return;
    };
    if let Some(job) = shared.take_running(id) {
        if let Some(abort) = job.abort {
            abort.abort();
        }
        if job.started {
            tracing::info!(job_id = id, "job cancelled while running: attempt aborted");
        } else {
            tracing::info!(
                job_id = id,
                "job cancelled while buffered: it will not start"
            );
        }
        metrics::counter!(crate::metrics::JOBS_FINISHED, "queue" => job.queue, "kind" => job.kind,
            "outcome" => "cancelled")
        .increment(1);
        shared.job_ended.notify_waiters();
    }
}
