//! The egress policy of the network plugins (fetch, notify): which addresses a fetch may connect to. Checked on the
//! resolved addresses (so a name cannot hide a private address), for the first
//! request and every redirect, before any connection is opened.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod tls;

pub use tls::Trust;

/// One allow-listed network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    bits: u8,
}

impl Cidr {
    /// Reads a plugin's `config.egress_allow` (absent or null: empty), the
    /// CIDRs both HTTP plugins let through the policy.
    pub fn allow_list(v: Option<&serde_json::Value>) -> Result<Vec<Cidr>, String> {
        use serde_json::Value;
        match v {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(a)) => a
                .iter()
                .map(|x| {
                    x.as_str()
                        .ok_or_else(|| format!("config.egress_allow must hold CIDRs, got {x}"))
                        .and_then(|s| {
                            Cidr::parse(s).map_err(|e| format!("config.egress_allow: {e}"))
                        })
                })
                .collect(),
            Some(v) => Err(format!("config.egress_allow must be a list, got {v}")),
        }
    }

    /// Reads `10.0.0.0/8`, `::1/128` or a bare address.
    pub fn parse(s: &str) -> Result<Cidr, String> {
        let (addr, bits) = match s.split_once('/') {
            Some((a, b)) => (a, Some(b)),
            None => (s, None),
        };
        let net: IpAddr = addr
            .trim()
            .parse()
            .map_err(|_| format!("{s:?} is not an address or CIDR"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let bits = match bits {
            None => max,
            Some(b) => b
                .trim()
                .parse::<u8>()
                .ok()
                .filter(|b| *b <= max)
                .ok_or_else(|| format!("{s:?} has a bad prefix length"))?,
        };
        Ok(Cidr { net, bits })
    }

    /// Whether `ip` is inside.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.net, canonical(ip)) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.bits)).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.bits))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// An IPv4-mapped IPv6 address is its IPv4 address.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// Why `ip` is not a public unicast address, if it is not.
pub fn restricted(ip: IpAddr) -> Option<&'static str> {
    match canonical(ip) {
        IpAddr::V4(a) => restricted_v4(a),
        IpAddr::V6(a) => restricted_v6(a),
    }
}

fn restricted_v4(a: Ipv4Addr) -> Option<&'static str> {
    let o = a.octets();
    if a.is_loopback() {
        Some("loopback")
    } else if a.is_private() {
        Some("private")
    } else if a.is_link_local() {
        Some("link-local")
    } else if o[0] == 100 && (64..128).contains(&o[1]) {
        Some("carrier-grade NAT")
    } else if o[0] == 0 || a.is_broadcast() || o[0] >= 240 {
        Some("reserved")
    } else if a.is_multicast() {
        Some("multicast")
    } else {
        None
    }
}

fn restricted_v6(a: Ipv6Addr) -> Option<&'static str> {
    let first = a.segments()[0];
    if a.is_loopback() {
        Some("loopback")
    } else if a.is_unspecified() {
        Some("reserved")
    } else if first & 0xffc0 == 0xfe80 {
        Some("link-local")
    } else if first & 0xfe00 == 0xfc00 {
        Some("private (unique local)")
    } else if a.is_multicast() {
        Some("multicast")
    } else {
        None
    }
}

/// The policy, and the refusal it made (so the caller can tell a refusal
/// from a network failure).
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Networks allowed although restricted.
    pub allow: Vec<Cidr>,
    /// The certificates HTTPS servers are checked against.
    pub trust: Trust,
    /// The last refusal (or missing trust store), if any.
    pub refused: Arc<Mutex<Option<String>>>,
}

impl Policy {
    /// An agent that connects only through this policy (every connection,
    /// redirects included, resolves through [`Policy::resolve`]) and speaks
    /// HTTPS with [`tls::Connector`].
    pub fn agent(&self, timeout: Duration, redirects: u32) -> ureq::Agent {
        let resolver = self.clone();
        let connector = tls::Connector::new(self.trust.clone(), self.refused.clone());
        ureq::AgentBuilder::new()
            .timeout(timeout)
            .redirects(redirects)
            .resolver(move |netloc: &str| resolver.resolve(netloc))
            .tls_connector(Arc::new(connector))
            .build()
    }

    /// Checks every address of `netloc` (`host:port`); all must pass, so a
    /// name that resolves to both public and private addresses is refused.
    pub fn check(&self, netloc: &str, addrs: Vec<SocketAddr>) -> io::Result<Vec<SocketAddr>> {
        for a in &addrs {
            if let Some(why) = restricted(a.ip()) {
                if !self.allow.iter().any(|c| c.contains(a.ip())) {
                    let msg = format!(
                        "egress refused: {netloc} resolves to {} ({why}); add it to egress_allow to permit",
                        a.ip()
                    );
                    if let Ok(mut r) = self.refused.lock() {
                        *r = Some(msg.clone());
                    }
                    return Err(io::Error::new(io::ErrorKind::PermissionDenied, msg));
                }
            }
        }
        if addrs.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{netloc} resolves to no address"),
            ));
        }
        Ok(addrs)
    }

    /// Resolves `netloc` and checks it: the resolver ureq connects through.
    pub fn resolve(&self, netloc: &str) -> io::Result<Vec<SocketAddr>> {
        let addrs: Vec<SocketAddr> = netloc.to_socket_addrs()?.collect();
        self.check(netloc, addrs)
    }

    /// The refusal recorded, if the last failure was one.
    pub fn refusal(&self) -> Option<String> {
        self.refused.lock().ok().and_then(|r| r.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn restricted_ranges_are_named() {
        for (a, why) in [
            ("127.0.0.1", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local"),
            ("100.64.0.1", "carrier-grade NAT"),
            ("0.0.0.0", "reserved"),
            ("::1", "loopback"),
            ("fe80::1", "link-local"),
            ("fd00::1", "private (unique local)"),
            ("::ffff:10.0.0.1", "private"),
            ("::ffff:127.0.0.1", "loopback"),
        ] {
            assert_eq!(restricted(ip(a)), Some(why), "{a}");
        }
        for a in ["93.184.216.34", "1.1.1.1", "2606:4700::1111", "172.32.0.1"] {
            assert_eq!(restricted(ip(a)), None, "{a}");
        }
    }

    #[test]
    fn cidrs_allow_what_they_cover() {
        let c = Cidr::parse("192.168.1.0/24").unwrap();
        assert!(c.contains(ip("192.168.1.77")));
        assert!(!c.contains(ip("192.168.2.1")));
        assert!(c.contains(ip("::ffff:192.168.1.5")));
        assert!(Cidr::parse("127.0.0.1").unwrap().contains(ip("127.0.0.1")));
        assert!(!Cidr::parse("127.0.0.1").unwrap().contains(ip("127.0.0.2")));
        assert!(Cidr::parse("::/0").unwrap().contains(ip("::1")));
        assert!(Cidr::parse("10.0.0.0/33").is_err());
        assert!(Cidr::parse("nope").is_err());
    }

    #[test]
    fn a_mixed_answer_is_refused_whole_and_recorded() {
        let p = Policy::default();
        let addrs = vec![
            "1.1.1.1:80".parse().unwrap(),
            "10.0.0.1:80".parse().unwrap(),
        ];
        let e = p.check("mixed.example:80", addrs).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied);
        assert!(p.refusal().unwrap().contains("10.0.0.1 (private)"));
        let allowed = Policy {
            allow: vec![Cidr::parse("10.0.0.0/8").unwrap()],
            ..Policy::default()
        };
        let addrs = vec!["10.0.0.1:80".parse().unwrap()];
        assert_eq!(allowed.check("x:80", addrs.clone()).unwrap(), addrs);
        // Literal addresses go through the same check.
        assert!(p.resolve("127.0.0.1:9").is_err());
    }
}
