//! The SSRF guard: which addresses an outbound request may reach, and a DNS resolver that only
//! hands the HTTP client addresses it has checked — the connection goes to exactly the address
//! that was checked, so there is no window for DNS rebinding.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Host names refused whatever they resolve to (cloud metadata services).
const BLOCKED_NAMES: &[&str] = &["metadata.google.internal", "metadata.internal", "metadata"];

/// The outbound policy. `allow_private` (a server option for local development and tests) lets
/// requests reach loopback and private networks; link-local (cloud metadata), multicast and
/// reserved ranges stay refused even then.
#[derive(Debug, Default)]
pub struct Policy {
    allow_private: AtomicBool,
}

impl Policy {
    /// A policy; private targets are refused unless `allow_private`.
    pub fn new(allow_private: bool) -> Policy {
        Policy {
            allow_private: AtomicBool::new(allow_private),
        }
    }

    /// Whether loopback and private networks may be reached.
    pub fn allows_private(&self) -> bool {
        self.allow_private.load(Ordering::Relaxed)
    }

    /// Changes whether loopback and private networks may be reached.
    pub fn set_allow_private(&self, allow: bool) {
        self.allow_private.store(allow, Ordering::Relaxed);
    }

    /// Why `ip` may not be reached, or `None` when it may.
    pub fn refuses(&self, ip: IpAddr) -> Option<&'static str> {
        let (class, private) = classify(ip)?;
        if private && self.allows_private() {
            None
        } else {
            Some(class)
        }
    }

    /// Why a host name may not be reached by name alone, or `None`.
    pub fn refuses_name(&self, host: &str) -> Option<&'static str> {
        let h = host.trim_end_matches('.').to_ascii_lowercase();
        if BLOCKED_NAMES.contains(&h.as_str()) {
            return Some("a cloud metadata host");
        }
        if (h == "localhost" || h.ends_with(".localhost")) && !self.allows_private() {
            return Some("loopback");
        }
        None
    }

    /// Resolves `host` and checks every address it resolves to. All must be allowed: a name with
    /// one private address among public ones is refused.
    pub async fn resolve(&self, host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
        if let Some(why) = self.refuses_name(host) {
            return Err(format!("{host} is {why}, which cueapi does not call"));
        }
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return match self.refuses(ip) {
                Some(why) => Err(format!(
                    "{ip} is a {why} address, which cueapi does not call"
                )),
                None => Ok(vec![SocketAddr::new(ip, port)]),
            };
        }
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
            .await
            .map_err(|e| format!("cannot resolve {host}: {e}"))?
            .collect();
        if addrs.is_empty() {
            return Err(format!("cannot resolve {host}: no addresses"));
        }
        for a in &addrs {
            if let Some(why) = self.refuses(a.ip()) {
                return Err(format!(
                    "{host} resolves to {}, a {why} address, which cueapi does not call",
                    a.ip()
                ));
            }
        }
        Ok(addrs)
    }
}

/// The class of a special-purpose address and whether it is a *private* one (reachable when the
/// policy allows private targets); `None` for an ordinary public address.
pub fn classify(ip: IpAddr) -> Option<(&'static str, bool)> {
    match ip {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

fn in_v4(ip: Ipv4Addr, net: [u8; 4], bits: u32) -> bool {
    let mask = if bits == 0 {
        0
    } else {
        u32::MAX << (32 - bits)
    };
    (u32::from(ip) & mask) == (u32::from(Ipv4Addr::from(net)) & mask)
}

fn classify_v4(ip: Ipv4Addr) -> Option<(&'static str, bool)> {
    const TABLE: &[([u8; 4], u32, &str, bool)] = &[
        ([0, 0, 0, 0], 8, "\"this network\"", false),
        ([10, 0, 0, 0], 8, "private", true),
        ([100, 64, 0, 0], 10, "carrier-grade NAT", true),
        ([127, 0, 0, 0], 8, "loopback", true),
        ([169, 254, 0, 0], 16, "link-local (cloud metadata)", false),
        ([172, 16, 0, 0], 12, "private", true),
        ([192, 0, 0, 0], 24, "IETF protocol assignment", false),
        ([192, 0, 2, 0], 24, "documentation", false),
        ([192, 88, 99, 0], 24, "6to4 relay", false),
        ([192, 168, 0, 0], 16, "private", true),
        ([198, 18, 0, 0], 15, "benchmarking", false),
        ([198, 51, 100, 0], 24, "documentation", false),
        ([203, 0, 113, 0], 24, "documentation", false),
        ([224, 0, 0, 0], 4, "multicast", false),
        ([240, 0, 0, 0], 4, "reserved", false),
    ];
    TABLE
        .iter()
        .find(|(net, bits, _, _)| in_v4(ip, *net, *bits))
        .map(|(_, _, class, private)| (*class, *private))
}

fn in_v6(ip: Ipv6Addr, net: [u16; 8], bits: u32) -> bool {
    let mask = if bits == 0 {
        0
    } else {
        u128::MAX << (128 - bits)
    };
    (u128::from(ip) & mask) == (u128::from(Ipv6Addr::from(net)) & mask)
}

fn classify_v6(ip: Ipv6Addr) -> Option<(&'static str, bool)> {
    if let Some(v4) = ip.to_ipv4_mapped() {
        return classify_v4(v4);
    }
    // IPv4-translated (::ffff:0:a.b.c.d, RFC 2765): a translator on the path turns it into the
    // IPv4 address it carries, so it is that address's class, and refused when that is public.
    if in_v6(ip, [0, 0, 0, 0, 0xffff, 0, 0, 0], 96) {
        let [.., a, b, c, d] = ip.octets();
        return classify_v4(Ipv4Addr::new(a, b, c, d)).or(Some(("IPv4-translated", false)));
    }
    if ip.is_unspecified() {
        return Some(("unspecified", false));
    }
    if ip.is_loopback() {
        return Some(("loopback", true));
    }
    const TABLE: &[([u16; 8], u32, &str, bool)] = &[
        ([0, 0, 0, 0, 0, 0, 0, 0], 96, "IPv4-compatible", false),
        ([0x64, 0xff9b, 0, 0, 0, 0, 0, 0], 96, "NAT64", false),
        ([0x64, 0xff9b, 1, 0, 0, 0, 0, 0], 48, "NAT64", false),
        ([0x100, 0, 0, 0, 0, 0, 0, 0], 64, "discard", false),
        (
            [0x2001, 0, 0, 0, 0, 0, 0, 0],
            23,
            "IETF protocol assignment",
            false,
        ),
        (
            [0x2001, 0xdb8, 0, 0, 0, 0, 0, 0],
            32,
            "documentation",
            false,
        ),
        ([0x2002, 0, 0, 0, 0, 0, 0, 0], 16, "6to4", false),
        (
            [0xfc00, 0, 0, 0, 0, 0, 0, 0],
            7,
            "unique local (private)",
            true,
        ),
        ([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, "link-local", false),
        ([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10, "site-local", false),
        ([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, "multicast", false),
    ];
    TABLE
        .iter()
        .find(|(net, bits, _, _)| in_v6(ip, *net, *bits))
        .map(|(_, _, class, private)| (*class, *private))
}

/// The resolver the delivery client uses: it resolves through [`Policy::resolve`], so the client
/// can only ever connect to addresses that passed the guard.
pub struct GuardedResolver(pub Arc<Policy>);

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let policy = Arc::clone(&self.0);
        Box::pin(async move {
            let addrs = policy
                .resolve(name.as_str(), 0)
                .await
                .map_err(|m| -> Box<dyn std::error::Error + Send + Sync> { m.into() })?;
            let it: Addrs = Box::new(addrs.into_iter());
            Ok(it)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(p: &Policy, s: &str) -> bool {
        p.refuses(s.parse().unwrap()).is_some()
    }

    #[test]
    fn the_table_of_ranges() {
        let strict = Policy::new(false);
        let dev = Policy::new(true);
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "172.31.255.255",
            "192.168.1.1",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::ffff:0:127.0.0.1",
            "::ffff:0:a00:1",
        ] {
            assert!(refused(&strict, ip), "{ip} refused by default");
            assert!(!refused(&dev, ip), "{ip} allowed with allow_private");
        }
        for ip in [
            "169.254.169.254",
            "0.0.0.0",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "192.0.2.5",
            "198.18.0.1",
            "::",
            "fe80::1",
            "ff02::1",
            "64:ff9b::a00:1",
            "2002::1",
            "2001:db8::1",
            "::ffff:169.254.169.254",
            "::ffff:0:169.254.169.254",
            "::ffff:0:808:808",
        ] {
            assert!(refused(&strict, ip), "{ip} refused by default");
            assert!(refused(&dev, ip), "{ip} refused even with allow_private");
        }
        for ip in ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "172.32.0.1"] {
            assert!(!refused(&strict, ip), "{ip} is public");
        }
    }

    #[test]
    fn names() {
        let strict = Policy::new(false);
        assert!(strict.refuses_name("LOCALHOST").is_some());
        assert!(strict.refuses_name("a.localhost.").is_some());
        assert!(strict.refuses_name("metadata.google.internal").is_some());
        assert!(strict.refuses_name("example.com").is_none());
        let dev = Policy::new(true);
        assert!(dev.refuses_name("localhost").is_none());
        assert!(dev.refuses_name("metadata.google.internal").is_some());
    }
}
