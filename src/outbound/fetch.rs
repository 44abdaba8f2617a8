//! The guarded client for URLs a provider named (output files). Three checks, so that no
//! hop of a download reaches an address the [`AddressPolicy`] refuses:
//! - before the request, the URL's scheme and, for an IP literal, its address;
//! - a DNS resolver that drops refused addresses (a name with only refused addresses fails
//!   before any connection), so a name cannot smuggle a private address in;
//! - a redirect policy: at most [`MAX_REDIRECTS`] hops, each checked like the first URL
//!   (IP literals are never resolved, so the resolver alone would miss them).
//!
//! Environment proxies are ignored: through a proxy, the proxy resolves names and the
//! checks above would see nothing.

use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::Arc;
use std::time::Duration;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

use super::errors;
use super::guard::{AddressPolicy, Refused};

/// Redirect hops followed for one download (CDNs redirect once, to a signed URL).
pub const MAX_REDIRECTS: usize = 3;

/// Why a guarded request failed.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The URL or a hop was refused by the address policy or the redirect limit. Permanent:
    /// the same URL is refused again.
    #[error("{0}")]
    Refused(String),
    /// The transport failed (connect, timeout, reset). The text has no URL. Retryable.
    #[error("{message}")]
    Transport {
        /// What failed.
        message: String,
        /// reqwest said it timed out.
        timeout: bool,
    },
}

/// A client that only reaches addresses `policy` permits.
#[derive(Debug, Clone)]
pub struct Guarded {
    client: reqwest::Client,
    policy: AddressPolicy,
}

impl Guarded {
    /// A guarded client under `policy`; `timeout` bounds a whole download.
    pub fn new(policy: AddressPolicy, timeout: Duration) -> anyhow::Result<Self> {
        let redirects = policy.clone();
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .timeout(timeout)
            .no_proxy()
            .dns_resolver(Arc::new(GuardedResolver {
                policy: policy.clone(),
            }))
            .redirect(reqwest::redirect::Policy::custom(move |attempt| {
                if attempt.previous().len() > MAX_REDIRECTS {
                    return attempt.error(Refused(format!("more than {MAX_REDIRECTS} redirects")));
                }
                match redirects.check_url(attempt.url()) {
                    Ok(()) => attempt.follow(),
                    Err(refused) => attempt.error(refused),
                }
            }))
            .user_agent(concat!("genq/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self { client, policy })
    }

    /// From `[outbound]`.
    pub fn from_config(cfg: &super::OutboundConfig, timeout: Duration) -> anyhow::Result<Self> {
        Self::new(AddressPolicy::new(&cfg.allow_private)?, timeout)
    }

    /// `GET url`, checked on every hop. The response may be any status.
    pub async fn get(&self, url: &url::Url) -> Result<reqwest::Response, FetchError> {
        self.policy
            .check_url(url)
            .map_err(|r| FetchError::Refused(r.to_string()))?;
        self.client.get(url.clone()).send().await.map_err(classify)
    }
}

/// A refusal anywhere in the error's sources is a refusal; anything else is transport.
pub fn classify(err: reqwest::Error) -> FetchError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&err);
    while let Some(s) = source {
        if let Some(refused) = s.downcast_ref::<Refused>() {
            return FetchError::Refused(refused.to_string());
        }
        source = s.source();
    }
    FetchError::Transport {
        timeout: err.is_timeout(),
        message: errors::describe(err),
    }
}

/// The system resolver, with refused addresses removed.
struct GuardedResolver {
    policy: AddressPolicy,
}

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = self.policy.clone();
        Box::pin(async move {
            let host = name.as_str().to_string();
            let lookup = host.clone();
            let addrs: Vec<SocketAddr> = tokio::task::spawn_blocking(move || {
                (lookup.as_str(), 0)
                    .to_socket_addrs()
                    .map(Iterator::collect)
            })
            .await
            .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)??;
            let addrs = policy.filter(&host, addrs)?;
            Ok(Box::new(addrs.into_iter()) as Addrs)
        })
    }
}
