//! Source-address allow-lists: single IPs and CIDR blocks (`10.1.2.3`, `10.1.0.0/16`,
//! `fd00::/8`), as configured for calling AE titles ([`vesalius_store::directory::AeEntry`]).
//!
//! IPv4-mapped IPv6 addresses (`::ffff:10.1.2.3`, what a dual-stack socket reports for an IPv4
//! peer) are compared as the IPv4 address they carry.

use std::net::IpAddr;

/// One allow-list entry: a network address and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Parses `ip` or `ip/prefix`; `None` when malformed or the prefix is too long.
    pub fn parse(entry: &str) -> Option<Cidr> {
        let entry = entry.trim();
        let (ip, prefix) = match entry.split_once('/') {
            Some((ip, p)) => (ip, Some(p.parse::<u8>().ok()?)),
            None => (entry, None),
        };
        let addr = canonical(ip.parse::<IpAddr>().ok()?);
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = prefix.unwrap_or(max);
        (prefix <= max).then_some(Cidr { addr, prefix })
    }

    /// Whether `ip` lies in this block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// Whether `ip` is allowed by `entries`: an empty list allows every address; malformed entries
/// allow nothing (validate them with [`Cidr::parse`] when they are written).
pub fn addr_allowed(ip: IpAddr, entries: &[String]) -> bool {
    entries.is_empty()
        || entries
            .iter()
            .filter_map(|e| Cidr::parse(e))
            .any(|c| c.contains(ip))
}

/// The IP part of a source string as the HTTP and DIMSE layers write it (`1.2.3.4`,
/// `1.2.3.4:5678`, `[::1]:5678`, `::1`); `None` when it is none of these.
pub fn source_ip(source: &str) -> Option<IpAddr> {
    if let Ok(ip) = source.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    source
        .parse::<std::net::SocketAddr>()
        .ok()
        .map(|s| canonical(s.ip()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidr_blocks() {
        let c = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(c.contains(ip("10.1.200.3")));
        assert!(!c.contains(ip("10.2.0.1")));
        assert!(c.contains(ip("::ffff:10.1.0.9")));
        assert!(Cidr::parse("0.0.0.0/0").unwrap().contains(ip("8.8.8.8")));
        assert!(Cidr::parse("fd00::/8").unwrap().contains(ip("fd12::1")));
        assert!(!Cidr::parse("fd00::/8").unwrap().contains(ip("10.0.0.1")));
        assert!(Cidr::parse("::/0").unwrap().contains(ip("::1")));
        for bad in ["10.0.0.0/33", "10.0.0", "x", "10.0.0.0/", "::/129"] {
            assert!(Cidr::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn allow_lists() {
        let list = vec!["192.168.1.10".to_string(), "10.0.0.0/8".to_string()];
        assert!(addr_allowed(ip("192.168.1.10"), &list));
        assert!(!addr_allowed(ip("192.168.1.11"), &list));
        assert!(addr_allowed(ip("10.9.9.9"), &list));
        assert!(addr_allowed(ip("1.2.3.4"), &[]));
        assert!(!addr_allowed(ip("1.2.3.4"), &["garbage".to_string()]));
    }

    #[test]
    fn sources() {
        assert_eq!(source_ip("1.2.3.4:99"), Some(ip("1.2.3.4")));
        assert_eq!(source_ip("[::1]:99"), Some(ip("::1")));
        assert_eq!(source_ip("::ffff:1.2.3.4"), Some(ip("1.2.3.4")));
        assert_eq!(source_ip("nonsense"), None);
    }
}
