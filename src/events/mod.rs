//! Live progress for browsers: Server-Sent Events of generation changes, served on the
//! public listener (`crate::http::events` is the thin axum edge).
//!
//! Why this shape: a studio page wants the state, queue position and progress of its
//! generations the moment they change, without polling its backend (which would poll
//! Postgres). Every change of a generation is NOTIFYed at commit on `genq_generation`; one
//! LISTEN per daemon ([`listen`]) reads each change once and fans it out in process
//! ([`hub`]) to the streams of that user, so 10,000 streams cost 10,000 small buffers, not
//! 10,000 database connections. Browsers authenticate with a token verified locally
//! ([`auth`]: a backend-minted HS256 JWT or the user's Supabase access token), so opening a
//! stream costs no round trip to the backend; a user only ever sees their own generations,
//! and another user's generation answers exactly like a missing one.
//!
//! Nothing final is lost: a stream starts with the current state (after registering, so no
//! change slips between), a reconnect with `Last-Event-ID` replays what changed since, and
//! after a lost LISTEN connection a catch-up read replays for every open stream.

pub mod auth;
pub mod config;
pub mod hub;
mod jwks;
pub mod listen;
pub mod reads;
pub mod stream;

use std::pin::Pin;
use std::sync::Arc;

use futures::Stream;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use tokio::sync::watch;
use uuid::Uuid;

pub use auth::{Auth, AuthError, Caller};
pub use config::EventsConfig;
pub use hub::{Hub, Limits, Refused};
pub use stream::Kind;

/// One change of a generation, as every stream of its user sends it.
#[derive(Debug)]
pub struct Change {
    /// The generation.
    pub id: Uuid,
    /// Its version (bumped by every change of state or progress).
    pub version: i64,
    /// Its `updated_at` in unix microseconds: orders a user's events.
    pub cursor: i64,
    /// Whether the state is final (succeeded, failed, cancelled).
    pub is_final: bool,
    /// `genq.get_generation`'s JSON.
    pub data: Arc<str>,
}

/// The changes of one open stream, in the order to send them.
pub type Changes = Pin<Box<dyn Stream<Item = Arc<Change>> + Send>>;

/// Why a stream was not opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// No such generation, or not the caller's (the two are never told apart), or not one
    /// the token lists.
    #[error("no such generation")]
    NotFound,
    /// The generation is final and the client has that state already (`Last-Event-ID`):
    /// nothing more will come (HTTP 204 tells EventSource to stop reconnecting).
    #[error("the generation is final and its state was sent")]
    Finished,
    /// A limit (per user, per daemon) or the shutdown.
    #[error(transparent)]
    Refused(#[from] Refused),
    /// The database failed.
    #[error("database error")]
    Database(#[from] sqlx::Error),
}

/// The events service of one daemon.
pub struct Events {
    /// Token verification.
    pub auth: Auth,
    /// Open streams.
    pub hub: Arc<Hub>,
    /// `[events]`.
    pub config: EventsConfig,
    pool: PgPool,
    stop: watch::Sender<bool>,
}

impl Events {
    /// Starts the LISTEN task when a token verifier is configured; `None` (events off)
    /// otherwise. `pool` serves the reads; `listen` are the options of the LISTEN session,
    /// which a transaction-mode pooler (`pooler`) cannot carry: events then refuse to start.
    pub fn start(
        config: &EventsConfig,
        outbound: &crate::outbound::OutboundConfig,
        pooler: crate::db::Pooler,
        pool: PgPool,
        listen: PgConnectOptions,
    ) -> anyhow::Result<Option<Arc<Self>>> {
        config.validate().map_err(anyhow::Error::msg)?;
        let http =
            crate::outbound::Guarded::from_config(outbound, std::time::Duration::from_secs(10))?;
        let Some(auth) = Auth::from_config(config, http)? else {
            return Ok(None);
        };
        anyhow::ensure!(
            pooler != crate::db::Pooler::Transaction,
            "live events need LISTEN, which a transaction-mode pooler (database.pooler = \"transaction\") \
             cannot carry: run the daemons with the direct database URL or a session-mode pooler, \
             or leave [events] unconfigured"
        );
        let hub = Hub::new(Limits {
            per_user: config.max_streams_per_user,
            total: config.max_streams,
            buffer: config.stream_buffer,
        });
        let (stop, stopped) = watch::channel(false);
        let task = listen::Listen {
            hub: hub.clone(),
            listen_pool: PgPoolOptions::new()
                .max_connections(1)
                .connect_lazy_with(listen),
            pool: pool.clone(),
            replay_limit: config.replay_limit,
        };
        tokio::spawn(listen::run(task, stopped));
        tracing::info!(?auth, "live events enabled on the public listener");
        Ok(Some(Arc::new(Self {
            auth,
            hub,
            config: config.clone(),
            pool,
            stop,
        })))
    }

    /// Opens the stream of generation `id` for `caller`. `last` is the version the client
    /// has (`Last-Event-ID`).
    pub async fn open_one(
        &self,
        caller: &Caller,
        id: Uuid,
        last: Option<i64>,
    ) -> Result<Changes, OpenError> {
        if !caller.may_read(id) {
            return Err(OpenError::NotFound);
        }
        let only = Some(Arc::new([id].into_iter().collect()));
        let sub = self.hub.subscribe(&caller.user, only)?;
        let Some((owner, current)) = reads::read_one(&self.pool, id).await? else {
            return Err(OpenError::NotFound);
        };
        if owner != caller.user {
            return Err(OpenError::NotFound);
        }
        if current.is_final && last.is_some_and(|v| v >= current.version) {
            return Err(OpenError::Finished);
        }
        let already = last.map(|v| (id, v));
        Ok(Box::pin(stream::follow(
            vec![current],
            sub,
            Kind::One,
            already,
        )))
    }

    /// Opens the stream of every generation of `caller` (those the token lists, if it lists
    /// any). `last` is the cursor the client has (`Last-Event-ID`).
    pub async fn open_user(
        &self,
        caller: &Caller,
        last: Option<i64>,
    ) -> Result<Changes, OpenError> {
        let sub = self.hub.subscribe(&caller.user, caller.only.clone())?;
        let since = last.unwrap_or_else(|| chrono::Utc::now().timestamp_micros())
            - listen::REPLAY_SLACK.as_micros() as i64;
        let users = [caller.user.clone()];
        let initial = reads::read_users(&self.pool, &users, since, self.config.replay_limit)
            .await?
            .into_iter()
            .map(|(_, change)| change)
            .filter(|change| caller.may_read(change.id))
            .collect();
        Ok(Box::pin(stream::follow(initial, sub, Kind::User, None)))
    }

    /// Ends every stream and the LISTEN task (shutdown).
    pub fn stop(&self) {
        let _ = self.stop.send(true);
        self.hub.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn events_are_off_without_a_verifier_and_refused_behind_a_transaction_pooler() {
        let options: PgConnectOptions = "postgres://nobody@127.0.0.1:1/none".parse().unwrap();
        let pool = PgPoolOptions::new().connect_lazy_with(options.clone());
        let start = |config: &EventsConfig, pooler| {
            Events::start(
                config,
                &Default::default(),
                pooler,
                pool.clone(),
                options.clone(),
            )
        };
        let off = EventsConfig {
            jwt_secret_env: String::new(),
            supabase_jwt_secret_env: String::new(),
            ..EventsConfig::default()
        };
        assert!(start(&off, crate::db::Pooler::Transaction)
            .unwrap()
            .is_none());
        let on = EventsConfig {
            supabase_jwks_url: "https://example.supabase.co/auth/v1/.well-known/jwks.json".into(),
            ..off
        };
        let err = start(&on, crate::db::Pooler::Transaction).err().unwrap();
        assert!(err.to_string().contains("transaction-mode pooler"), "{err}");
        let events = start(&on, crate::db::Pooler::None).unwrap().unwrap();
        events.stop();
    }
}
