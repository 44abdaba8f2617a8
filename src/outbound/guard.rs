//! Which addresses a provider-named URL may reach. A URL in a provider's answer is data we
//! do not control (a model can echo a prompt; a CDN can redirect), so before any
//! connection every resolved address is checked, on the first request and on every
//! redirect hop: a name resolving to a private address is refused like the address itself.
//!
//! Refused unless `[outbound] allow_private` names a range containing the address: IPv4
//! `0/8`, `10/8`, `100.64/10` (CGNAT, Alibaba metadata), `127/8`, `169.254/16` (link-local,
//! the cloud metadata address), `172.16/12`, `192.0.0/24`, `192.0.2/24`, `192.168/16`,
//! `198.18/15`, `198.51.100/24`, `203.0.113/24`, `224/4` (multicast), `240/4` and the
//! broadcast address; IPv6 `::`, `::1`, `100::/64`, `2001:db8::/32`, `fc00::/7` (unique
//! local, AWS's `fd00:ec2::254` metadata), `fe80::/10`, `fec0::/10`, `ff00::/8`, and the
//! IPv4 address embedded in `::ffff:0:0/96`, `64:ff9b::/96` and `2002::/16` (checked as
//! IPv4).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;

/// A URL or address the policy refused. The message names the host and the address,
/// never a query.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("refused: {0}")]
pub struct Refused(pub String);

/// The address policy: blocked non-public ranges, minus the configured allowlist.
#[derive(Debug, Clone, Default)]
pub struct AddressPolicy {
    allow: Arc<Vec<IpNet>>,
}

const BLOCKED_V4: &[(u8, u8, u8, u8, u8)] = &[
    (0, 0, 0, 0, 8),
    (10, 0, 0, 0, 8),
    (100, 64, 0, 0, 10),
    (127, 0, 0, 0, 8),
    (169, 254, 0, 0, 16),
    (172, 16, 0, 0, 12),
    (192, 0, 0, 0, 24),
    (192, 0, 2, 0, 24),
    (192, 168, 0, 0, 16),
    (198, 18, 0, 0, 15),
    (198, 51, 100, 0, 24),
    (203, 0, 113, 0, 24),
    (224, 0, 0, 0, 4),
    (240, 0, 0, 0, 4),
];

impl AddressPolicy {
    /// A policy allowing the ranges in `allow_private` (CIDR; a bare address is one host).
    pub fn new(allow_private: &[String]) -> anyhow::Result<Self> {
        let allow = allow_private
            .iter()
            .map(|raw| {
                let raw = raw.trim();
                raw.parse::<IpNet>()
                    .or_else(|_| raw.parse::<IpAddr>().map(IpNet::from))
                    .map_err(|_| {
                        anyhow::anyhow!(
                            "outbound.allow_private: {raw:?} is not an address range \
                             (expected CIDR such as \"127.0.0.0/8\")"
                        )
                    })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self {
            allow: Arc::new(allow),
        })
    }

    /// Whether `ip` may be reached.
    pub fn permits(&self, ip: IpAddr) -> bool {
        self.allow.iter().any(|net| net.contains(&ip)) || is_public(ip)
    }

    /// Checks one resolved address; the error names `host` and the address.
    pub fn check(&self, host: &str, ip: IpAddr) -> Result<(), Refused> {
        if self.permits(ip) {
            Ok(())
        } else {
            Err(Refused(format!(
                "{host} resolves to {ip}, a non-public address (see [outbound] allow_private)"
            )))
        }
    }

    /// Checks a URL before a request: http or https, a host, and when the host is an IP
    /// literal (which no resolver sees), that address.
    pub fn check_url(&self, url: &url::Url) -> Result<(), Refused> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Refused(format!("scheme {:?} is not http(s)", url.scheme())));
        }
        match url.host() {
            None => Err(Refused("the URL has no host".into())),
            Some(url::Host::Ipv4(ip)) => self.check(&ip.to_string(), IpAddr::V4(ip)),
            Some(url::Host::Ipv6(ip)) => self.check(&ip.to_string(), IpAddr::V6(ip)),
            Some(url::Host::Domain(_)) => Ok(()),
        }
    }

    /// Keeps the permitted addresses of `host`'s resolution; none left is refused.
    pub fn filter(&self, host: &str, addrs: Vec<SocketAddr>) -> Result<Vec<SocketAddr>, Refused> {
        let (ok, refused): (Vec<_>, Vec<_>) = addrs.into_iter().partition(|a| self.permits(a.ip()));
        match (ok.is_empty(), refused.first()) {
            (false, _) => Ok(ok),
            (true, Some(first)) => Err(self.check(host, first.ip()).unwrap_err()),
            (true, None) => Err(Refused(format!("{host} has no address"))),
        }
    }
}

/// Whether `ip` is a public unicast address.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_public_v4(v4),
        IpAddr::V6(v6) => is_public_v6(v6),
    }
}

fn is_public_v4(ip: Ipv4Addr) -> bool {
    let n = u32::from(ip);
    if ip.is_broadcast() {
        return false;
    }
    !BLOCKED_V4.iter().any(|&(a, b, c, d, len)| {
        let net = u32::from(Ipv4Addr::new(a, b, c, d));
        let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
        n & mask == net
    })
}

fn is_public_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    // IPv4-mapped (::ffff:a.b.c.d), NAT64 (64:ff9b::/96) and 6to4 (2002:AABB:CCDD::/48)
    // reach an IPv4 address: judge that one.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return is_public_v4(v4);
    }
    if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return is_public_v4(Ipv4Addr::from(((s[6] as u32) << 16) | s[7] as u32));
    }
    if s[0] == 0x2002 {
        return is_public_v4(Ipv4Addr::from(((s[1] as u32) << 16) | s[2] as u32));
    }
    let blocked = ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || s[..4] == [0x100, 0, 0, 0] // discard-only 100::/64
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] & 0xfe00) == 0xfc00 // unique local
        || (s[0] & 0xffc0) == 0xfe80 // link-local
        || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
        || s[..6] == [0, 0, 0, 0, 0, 0]; // IPv4-compatible (deprecated) and ::/96
    !blocked
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn non_public_addresses_are_refused() {
        let policy = AddressPolicy::default();
        for s in [
            "127.0.0.1",
            "127.5.6.7",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.100.100.200",
            "0.0.0.0",
            "224.0.0.1",
            "255.255.255.255",
            "198.18.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00:ec2::254",
            "fc00::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::",
            "2001:db8::1",
            "::127.0.0.1",
        ] {
            assert!(!policy.permits(ip(s)), "{s} must be refused");
        }
        for s in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(policy.permits(ip(s)), "{s} is public");
        }
    }

    #[test]
    fn the_allowlist_opens_only_its_ranges() {
        let policy = AddressPolicy::new(&["127.0.0.0/8".into(), "::1".into()]).unwrap();
        assert!(policy.permits(ip("127.0.0.1")));
        assert!(policy.permits(ip("::1")));
        assert!(!policy.permits(ip("10.0.0.1")));
        assert!(!policy.permits(ip("169.254.169.254")));
        assert!(AddressPolicy::new(&["localhost".into()]).is_err());
    }

    #[test]
    fn urls_are_checked_before_any_connection() {
        let policy = AddressPolicy::default();
        let url = |s: &str| url::Url::parse(s).unwrap();
        assert!(policy.check_url(&url("http://127.0.0.1:8080/x")).is_err());
        assert!(policy.check_url(&url("http://[::1]/x")).is_err());
        assert!(policy.check_url(&url("http://0x7f000001/x")).is_err());
        assert!(policy.check_url(&url("file:///etc/passwd")).is_err());
        assert!(policy.check_url(&url("ftp://cdn.example/x")).is_err());
        assert!(policy.check_url(&url("https://cdn.example/x.mp4")).is_ok());
    }
}
