//! What the product adds to a daemon besides handlers, carried by the [`Registry`] as
//! River's periodic jobs travel with its client config: periodic job definitions, hooks run
//! once at start (after the queues are registered) and hooks run at every statistics
//! sample. The composition root registers them with the product's kinds, so the engine runs
//! them without naming any of them.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use sqlx::PgPool;

use crate::daemon::config::PeriodicConfig;
use crate::daemon::Registry;

/// The future a hook returns.
pub type HookFuture = Pin<Box<dyn Future<Output = Result<(), sqlx::Error>> + Send>>;

/// A named hook over the daemon's pool.
#[derive(Clone)]
pub(crate) struct Hook {
    pub name: String,
    pub run: Arc<dyn Fn(PgPool) -> HookFuture + Send + Sync>,
}

impl Hook {
    fn new<F, Fut>(name: impl Into<String>, f: F) -> Self
    where
        F: Fn(PgPool) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), sqlx::Error>> + Send + 'static,
    {
        Self {
            name: name.into(),
            run: Arc::new(move |pool| Box::pin(f(pool))),
        }
    }
}

/// Periodic jobs and hooks of a registry.
#[derive(Clone, Default)]
pub(crate) struct Hooks {
    pub periodic: Vec<PeriodicConfig>,
    pub on_start: Vec<Hook>,
    pub on_sample: Vec<Hook>,
}

impl Registry {
    /// Adds a periodic job (replacing one of the same name): the daemon enqueues it once
    /// per slot, fleet-wide, beside the configured `[[periodic]]` jobs.
    pub fn periodic(&mut self, def: PeriodicConfig) -> &mut Self {
        self.hooks.periodic.retain(|p| p.name != def.name);
        self.hooks.periodic.push(def);
        self
    }

    /// Periodic jobs registered with [`Registry::periodic`].
    pub fn periodic_jobs(&self) -> &[PeriodicConfig] {
        &self.hooks.periodic
    }

    /// Runs `f` once when the daemon starts, after its queues are registered; a database
    /// error retries the queue registration and every start hook with backoff until all
    /// succeed or the daemon stops, so a hook must be idempotent.
    pub fn on_start<F, Fut>(&mut self, name: impl Into<String>, f: F) -> &mut Self
    where
        F: Fn(PgPool) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), sqlx::Error>> + Send + 'static,
    {
        self.hooks.on_start.push(Hook::new(name, f));
        self
    }

    /// Runs `f` at every statistics sample (`metrics.sample_interval`), on every daemon;
    /// an error is logged and the next sample tries again.
    pub fn on_sample<F, Fut>(&mut self, name: impl Into<String>, f: F) -> &mut Self
    where
        F: Fn(PgPool) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), sqlx::Error>> + Send + 'static,
    {
        self.hooks.on_sample.push(Hook::new(name, f));
        self
    }
}
