//! One LISTEN per daemon on `genq_generation`, whatever the number of open streams. A
//! notification names the generation and its user; when that user has a stream here, the
//! generation is read once (`genq.get_generation`) and the JSON handed to the hub. Reads run
//! on a few shard tasks keyed by generation id, so one generation's reads stay in order
//! while different generations proceed in parallel.
//!
//! Notifications sent while the LISTEN connection is down are lost. After every (re)connect
//! a catch-up read replays, for every user with a stream open, the generations not final and
//! those changed since shortly before the connection was lost; streams drop what they sent
//! already (by version), so nothing final is missed and nothing is sent twice.

use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::{mpsc, watch};
use uuid::Uuid;

use super::hub::Hub;
use super::reads;

/// The channel `genq_generation` changes are notified on (payload: JSON with `id`,
/// `user_id`, `version`, `state`).
pub const CHANNEL: &str = "genq_generation";

/// Read tasks; a generation always goes to the same one.
const SHARDS: usize = 4;
/// Notifications queued per shard before the LISTEN task waits.
const SHARD_QUEUE: usize = 4096;
/// Users per catch-up statement.
const CATCH_UP_CHUNK: usize = 500;
/// Tries of one catch-up statement.
const CATCH_UP_ATTEMPTS: u32 = 5;
/// How far before the loss of the connection the catch-up looks: covers transactions whose
/// `updated_at` (their start) precedes their commit, and clocks that disagree a little.
pub const REPLAY_SLACK: Duration = Duration::from_secs(60);

#[derive(Deserialize)]
struct Notice {
    id: Uuid,
    user_id: String,
}

/// What the LISTEN task needs.
pub struct Listen {
    /// The streams.
    pub hub: Arc<Hub>,
    /// A one-connection pool for the LISTEN session (direct, never through a pooler).
    pub listen_pool: PgPool,
    /// Reads.
    pub pool: PgPool,
    /// Generations per user in a catch-up.
    pub replay_limit: i64,
}

/// Runs until `stop` turns true.
pub async fn run(listen: Listen, mut stop: watch::Receiver<bool>) {
    let listen = Arc::new(listen);
    let shards: Vec<mpsc::Sender<Notice>> = (0..SHARDS)
        .map(|_| {
            let (tx, rx) = mpsc::channel(SHARD_QUEUE);
            tokio::spawn(read_shard(listen.clone(), rx));
            tx
        })
        .collect();
    let mut delay = Duration::from_millis(100);
    let mut lost_at = now_micros();
    loop {
        let mut listener = match connect(&listen.listen_pool).await {
            Ok(l) => l,
            Err(err) => {
                tracing::warn!(error = %err, retry_in = ?delay, "events LISTEN connection failed");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                delay = (delay * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        delay = Duration::from_millis(100);
        tokio::spawn(catch_up(listen.clone(), lost_at));
        loop {
            let next = tokio::select! {
                n = listener.try_recv() => n,
                _ = stop.wait_for(|s| *s) => return,
            };
            match next {
                Ok(Some(n)) => {
                    let Ok(notice) = serde_json::from_str::<Notice>(n.payload()) else {
                        tracing::warn!("malformed {CHANNEL} notification ignored");
                        continue;
                    };
                    if listen.hub.follows(&notice.user_id) {
                        let shard = (notice.id.as_u128() % SHARDS as u128) as usize;
                        if shards[shard].send(notice).await.is_err() {
                            return;
                        }
                    }
                }
                Ok(None) | Err(_) => {
                    tracing::warn!("events LISTEN connection lost; reconnecting, then catching up");
                    metrics::counter!(crate::metrics::EVENT_LISTEN_RECONNECTS).increment(1);
                    lost_at = now_micros();
                    break;
                }
            }
        }
    }
}

async fn connect(pool: &PgPool) -> Result<PgListener, sqlx::Error> {
    let mut listener = PgListener::connect_with(pool).await?;
    listener.listen(CHANNEL).await?;
    Ok(listener)
}

fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

async fn read_shard(listen: Arc<Listen>, mut rx: mpsc::Receiver<Notice>) {
    while let Some(notice) = rx.recv().await {
        if !listen.hub.follows(&notice.user_id) {
            continue;
        }
        match reads::read_one(&listen.pool, notice.id).await {
            Ok(Some((user, change))) => listen.hub.publish(&user, &change),
            Ok(None) => {}
            Err(err) => {
                // The catch-up after the next reconnect, or the browser's reconnect, covers it.
                tracing::warn!(error = %err, generation = %notice.id, "cannot read a changed generation for its streams");
            }
        }
    }
}

/// Replays, for every user with a stream, what changed since shortly before `lost_at`.
async fn catch_up(listen: Arc<Listen>, lost_at: i64) {
    let since = lost_at - REPLAY_SLACK.as_micros() as i64;
    let users = listen.hub.users();
    for chunk in users.chunks(CATCH_UP_CHUNK) {
        let mut attempt = 1;
        loop {
            match reads::read_users(&listen.pool, chunk, since, listen.replay_limit).await {
                Ok(changes) => {
                    for (user, change) in changes {
                        listen.hub.publish(&user, &change);
                    }
                    break;
                }
                // Just after a restart the read pool may still hand out a dead connection.
                Err(err) if attempt < CATCH_UP_ATTEMPTS => {
                    tracing::debug!(error = %err, attempt, "events catch-up read failed; retrying");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    attempt += 1;
                }
                Err(err) => {
                    tracing::warn!(error = %err, "events catch-up read failed; streams resume when browsers reconnect");
                    return;
                }
            }
        }
    }
    if !users.is_empty() {
        tracing::info!(users = users.len(), "event streams caught up");
    }
}
