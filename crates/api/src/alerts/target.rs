//! Where webhooks may go (`[alerts] webhook_allow_private`, docs/alerts.md "Webhook targets").
//!
//! A webhook subscription makes the server send a POST to a URL any user chose, from inside
//! the site's network: without a limit that is a request forgery towards the site's own
//! services (`http://127.0.0.1:…`, the database's admin port, a router) and cloud metadata
//! (`http://169.254.169.254/`, which hands out credentials on some clouds), with the answer's
//! status shown back in the deliveries list. So unless the site allows it:
//!
//! - **at subscription time** ([`check_url`]), a target whose host is an IP literal in a
//!   non-public range ([`non_public`]) or `localhost` (and `*.localhost`, RFC 6761 6.3) is
//!   refused with 400;
//! - **at send time**, the same check runs again on the URL (the setting may have changed since),
//!   and names are resolved by [`GuardedResolver`], which drops non-public addresses: the
//!   connection is made only to the addresses that were checked, so a name that resolved to a
//!   public address at subscription time and to `127.0.0.1` now (DNS rebinding) fails with a
//!   clear last error ([`RefusedAddress`]) instead of reaching the inside.
//!
//! Redirects are never followed (the client's policy), so a public target cannot bounce the
//! request inward either.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Why `ip` is not a public unicast address, or `None` when it is one.
///
/// IPv4: `0.0.0.0/8` (this network; `0.0.0.0` reaches the host itself on Linux), `127.0.0.0/8`
/// loopback, `10/8`, `172.16/12`, `192.168/16` private (RFC 1918), `100.64/10` shared address
/// space (RFC 6598: carrier NAT, and some clouds' metadata), `169.254/16` link-local (cloud
/// metadata, RFC 3927), `224/3` multicast, reserved and broadcast. IPv6: `::1`, `::`, `fc00::/7`
/// unique-local (RFC 4193; AWS' metadata `fd00:ec2::254`), `fe80::/10` link-local, `fec0::/10`
/// site-local (deprecated), `ff00::/8` multicast, and IPv4 addresses carried in IPv6
/// (`::ffff:a.b.c.d` mapped, `::a.b.c.d` compatible, `64:ff9b::a.b.c.d` NAT64, RFC 6052) by the
/// class of the IPv4 address.
pub fn non_public(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => non_public_v4(v4),
        IpAddr::V6(v6) => non_public_v6(v6),
    }
}

fn non_public_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if a == 0 {
        Some("this-network (0.0.0.0/8)")
    } else if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() {
        Some("private (RFC 1918)")
    } else if a == 100 && (64..128).contains(&b) {
        Some("shared (RFC 6598)")
    } else if ip.is_link_local() {
        Some("link-local (cloud metadata)")
    } else if a >= 224 {
        Some("multicast, reserved or broadcast")
    } else {
        None
    }
}

fn non_public_v6(ip: Ipv6Addr) -> Option<&'static str> {
    let s = ip.segments();
    if ip.is_loopback() {
        return Some("loopback");
    }
    if ip.is_unspecified() {
        return Some("unspecified");
    }
    if let Some(v4) = ip.to_ipv4_mapped() {
        return non_public_v4(v4);
    }
    let embedded = |hi: u16, lo: u16| Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
    // ::a.b.c.d (IPv4-compatible, deprecated) and 64:ff9b::a.b.c.d (NAT64's well-known prefix).
    if s[..6] == [0; 6] || s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return non_public_v4(embedded(s[6], s[7]));
    }
    if ip.is_unique_local() {
        Some("unique-local (fc00::/7)")
    } else if ip.is_unicast_link_local() {
        Some("link-local (fe80::/10)")
    } else if s[0] & 0xffc0 == 0xfec0 {
        Some("site-local (fec0::/10)")
    } else if ip.is_multicast() {
        Some("multicast")
    } else {
        None
    }
}

/// Whether `host` is a name for this machine that never needs DNS (RFC 6761 6.3).
fn is_localhost(host: &str) -> bool {
    let h = host.trim_end_matches('.').to_ascii_lowercase();
    h == "localhost" || h.ends_with(".localhost")
}

/// Checks a webhook target: an `http(s)` URL with a host of at most 2000 bytes; unless
/// `allow_private`, its host is not an IP literal [`non_public`] nor `localhost`. The error is
/// the message for the user.
pub fn check_url(target: &str, allow_private: bool) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(target)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        .filter(|_| target.len() <= 2000)
        .ok_or_else(|| "a webhook needs an http(s) URL as its target".to_owned())?;
    if allow_private {
        return Ok(url);
    }
    // The URL parser reads IPv4 the WHATWG way, so `http://2130706433/`, `http://0x7f.1/` and
    // `http://127.0.0.1./` all arrive here as the IP literal 127.0.0.1.
    // (`host_str` writes IP literals normalised, IPv6 in brackets.)
    let host = url.host_str().unwrap_or_default();
    let refused = match host.trim_start_matches('[').trim_end_matches(']').parse() {
        Ok(ip) => non_public(ip).map(|why| (host.to_owned(), why)),
        Err(_) if is_localhost(host) => Some((host.to_owned(), "loopback")),
        Err(_) => None,
    };
    match refused {
        Some((host, why)) => Err(format!(
            "webhook target {host} is a {why} address inside the site's network; such targets \
             are refused unless the site sets [alerts] webhook_allow_private = true"
        )),
        None => Ok(url),
    }
}

/// A name resolved only to non-public addresses while they are not allowed (the last error of
/// a delivery that was refused at send time).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedAddress {
    /// The name.
    pub host: String,
    /// The addresses it resolved to, each with why it was refused.
    pub addresses: Vec<(IpAddr, &'static str)>,
}

impl fmt::Display for RefusedAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let list: Vec<String> = self
            .addresses
            .iter()
            .map(|(ip, why)| format!("{ip} ({why})"))
            .collect();
        write!(
            f,
            "refused: {} resolves to {}, inside the site's network ([alerts] \
             webhook_allow_private = false)",
            self.host,
            list.join(", ")
        )
    }
}

impl std::error::Error for RefusedAddress {}

/// Keeps the public addresses of `addrs`; [`RefusedAddress`] when none is left.
pub fn public_only(host: &str, addrs: Vec<SocketAddr>) -> Result<Vec<SocketAddr>, RefusedAddress> {
    let (ok, refused): (Vec<_>, Vec<_>) = addrs
        .into_iter()
        .partition(|a| non_public(a.ip()).is_none());
    if ok.is_empty() && !refused.is_empty() {
        return Err(RefusedAddress {
            host: host.to_owned(),
            addresses: refused
                .iter()
                .filter_map(|a| non_public(a.ip()).map(|why| (a.ip(), why)))
                .collect(),
        });
    }
    Ok(ok)
}

/// The webhook client's resolver while non-public targets are refused: the system's resolver
/// (`getaddrinfo`, through tokio), then [`public_only`]. The client connects only to what this
/// answers, so the addresses checked are the addresses used.
#[derive(Debug, Default, Clone, Copy)]
pub struct GuardedResolver;

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let ok = public_only(&host, addrs)?;
            Ok(Box::new(ok.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// The [`RefusedAddress`] somewhere in `e`'s chain of sources, if any.
pub fn refused_in<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a RefusedAddress> {
    let mut cur = Some(e);
    while let Some(x) = cur {
        if let Some(r) = x.downcast_ref::<RefusedAddress>() {
            return Some(r);
        }
        cur = x.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(s: &str) -> Option<&'static str> {
        non_public(s.parse().unwrap())
    }

    #[test]
    fn loopback_private_link_local_and_unique_local_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "127.255.0.9",
            "0.0.0.0",
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "100.100.100.200",
            "224.0.0.1",
            "255.255.255.255",
            "::1",
            "::",
            "fd00:ec2::254",
            "fc00::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "64:ff9b::a9fe:a9fe",
        ] {
            assert!(class(ip).is_some(), "{ip} should not be public");
        }
        assert_eq!(
            class("169.254.169.254"),
            Some("link-local (cloud metadata)")
        );
        assert_eq!(class("::ffff:127.0.0.1"), Some("loopback"));
        assert_eq!(class("10.0.0.1"), Some("private (RFC 1918)"));
        assert_eq!(class("fd00:ec2::254"), Some("unique-local (fc00::/7)"));
    }

    #[test]
    fn public_addresses_are_public() {
        for ip in [
            "8.8.8.8",
            "1.1.1.1",
            "172.15.255.255",
            "172.32.0.1",
            "192.169.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "169.255.0.1",
            "223.255.255.255",
            "2001:4860:4860::8888",
            "2a00:1450::1",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
        ] {
            assert_eq!(class(ip), None, "{ip} is public");
        }
    }

    #[test]
    fn targets_inside_the_network_are_refused_unless_allowed() {
        for t in [
            "http://127.0.0.1/hook",
            "http://127.0.0.1:8080/hook",
            "https://[::1]/x",
            "http://[::ffff:7f00:1]/x",
            "http://169.254.169.254/latest/meta-data/",
            "http://10.0.0.5/",
            "http://192.168.0.1:80/",
            "http://[fd00:ec2::254]/",
            "http://[fe80::1]/",
            "http://localhost:9000/",
            "http://LOCALHOST./",
            "http://api.localhost/",
            "http://2130706433/",
            "http://0x7f.1/",
            "http://127.1/",
            "http://127.0.0.1./",
            "http://0/",
        ] {
            let e = check_url(t, false).expect_err(t);
            assert!(e.contains("webhook_allow_private"), "{t}: {e}");
            assert!(
                check_url(t, true).is_ok(),
                "{t} allowed when the site says so"
            );
        }
        let e = check_url("http://169.254.169.254/", false).unwrap_err();
        assert!(
            e.contains("169.254.169.254") && e.contains("link-local"),
            "{e}"
        );
        for t in [
            "https://pager.example/hooks/v",
            "http://8.8.8.8/",
            "https://[2001:db8::1]:8443/x",
            "http://localhost.example/",
        ] {
            assert!(check_url(t, false).is_ok(), "{t}");
        }
        for t in ["ftp://x", "not a url", "http://", "file:///etc/passwd"] {
            assert_eq!(
                check_url(t, true).unwrap_err(),
                "a webhook needs an http(s) URL as its target"
            );
        }
        let long = format!("https://a.example/{}", "x".repeat(2000));
        assert!(check_url(&long, true).is_err());
    }

    #[test]
    fn resolved_addresses_keep_only_public_ones() {
        let a = |s: &str| SocketAddr::new(s.parse().unwrap(), 0);
        assert_eq!(
            public_only("h", vec![a("10.0.0.1"), a("8.8.8.8")]).unwrap(),
            vec![a("8.8.8.8")]
        );
        let e = public_only("rebound.example", vec![a("127.0.0.1"), a("::1")]).unwrap_err();
        assert_eq!(e.addresses.len(), 2);
        let msg = e.to_string();
        assert!(
            msg.contains("rebound.example resolves to 127.0.0.1 (loopback), ::1 (loopback)"),
            "{msg}"
        );
        assert!(msg.contains("webhook_allow_private = false"), "{msg}");
    }

    #[tokio::test]
    async fn the_guarded_resolver_refuses_a_name_of_this_machine() {
        use reqwest::dns::Resolve;
        // `localhost` resolves through the system's resolver (/etc/hosts) to loopback only.
        let r = GuardedResolver
            .resolve("localhost".parse().unwrap())
            .await
            .err()
            .expect("refused");
        let refused = refused_in(r.as_ref()).expect("a RefusedAddress");
        assert_eq!(refused.host, "localhost");
        assert!(refused.addresses.iter().all(|(ip, _)| ip.is_loopback()));
    }
}
