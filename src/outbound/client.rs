//! Builders of the clients for endpoints genq is configured with (provider APIs, stores,
//! the JWKS, Plisio). Those hosts come from configuration, not from an answer, so they are
//! not address-checked (a self-hosted store on a private network is legitimate); they
//! never follow redirects, so an answer cannot send a request (and its key) elsewhere.

use std::time::Duration;

/// A client for a configured API: `timeout` bounds a whole call (`None`: no overall
/// limit, for uploads whose job time limit bounds them); redirects are not followed.
pub fn api(timeout: Option<Duration>) -> reqwest::Result<reqwest::Client> {
    let connect = timeout.map_or(Duration::from_secs(10), |t| t.min(Duration::from_secs(10)));
    let mut builder = reqwest::Client::builder()
        .connect_timeout(connect)
        .tcp_keepalive(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .user_agent(concat!("genq/", env!("CARGO_PKG_VERSION")));
    if let Some(timeout) = timeout {
        builder = builder.timeout(timeout);
    }
    builder.build()
}
