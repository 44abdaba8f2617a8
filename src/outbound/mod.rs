//! Every HTTP request genq makes goes through this module: provider APIs, stores, the fal
//! JWKS, Plisio, and the download of outputs whose URL a provider named.
//!
//! Why one module: the rules for talking to the outside world are security rules, and they
//! used to be repeated (two `Retry-After` parsers that disagreed, error messages that kept
//! a URL with an API key in its query, bodies read whole). Here each rule has one place:
//! - [`client`]: the client builders (timeouts, no proxies from the environment for the
//!   guarded client, no redirects for APIs);
//! - [`retry_after`]: the one `Retry-After` parser;
//! - [`errors`]: error text without URLs (a URL may carry a key or a signature);
//! - [`secret`]: [`Secret`], whose `Debug`/`Display` never show the value;
//! - [`body`]: reading a response under a byte limit;
//! - [`guard`] and [`fetch`]: the guarded download of URLs a provider named, which refuses
//!   private, loopback, link-local, CGNAT, multicast and metadata addresses on every hop
//!   unless `[outbound] allow_private` lets a range in.

pub mod body;
pub mod client;
pub mod errors;
pub mod fetch;
pub mod guard;
pub mod retry_after;
pub mod secret;

use serde::{Deserialize, Serialize};

pub use body::{read_capped, BodyError};
pub use fetch::{FetchError, Guarded};
pub use guard::AddressPolicy;
pub use secret::Secret;

/// `[outbound]`: what the guarded fetch of provider-named URLs may reach.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct OutboundConfig {
    /// Address ranges (CIDR, e.g. `"127.0.0.0/8"`, `"10.1.0.0/16"`, `"::1/128"`) that output
    /// downloads may reach although they are private, loopback, link-local, CGNAT or
    /// otherwise non-public. Defaults to none: only public addresses. Tests, the demo and
    /// the benchmarks allow loopback (the fake provider serves its files there); a
    /// self-hosted provider on a private network needs its range here.
    pub allow_private: Vec<String>,
}
