//! Which addresses a push may reach: a tenant must not aim Plinth at the operator's network.
//!
//! Loopback, private, shared (carrier NAT), link-local (with the cloud metadata address),
//! unspecified, broadcast, multicast, documentation and reserved addresses are refused,
//! IPv4 inside IPv6 by the IPv4 rules, unless the operator's `messaging_push_allow` covers
//! them. The rule is applied when an endpoint is set and again on every connection: the
//! HTTP client resolves names through [`Guard`], so a name that later resolves elsewhere
//! (DNS rebinding) is refused too. Redirects are not followed.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;
use plinth_shared::ApiError;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use url::{Host, Url};

/// Longest endpoint URL accepted.
const MAX_ENDPOINT_BYTES: usize = 2048;

/// The push address rule, with the operator's exceptions.
#[derive(Clone, Debug, Default)]
pub(crate) struct Guard {
    allow: Arc<Vec<IpNet>>,
}

fn v4_forbidden(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0
        // Shared address space (RFC 6598), benchmarking (RFC 2544), reserved (240/4).
        || (a == 100 && (64..128).contains(&b))
        || (a == 198 && (b == 18 || b == 19))
        || a >= 240
        // IETF protocol assignments (192.0.0.0/24).
        || ip.octets()[..3] == [192, 0, 0]
}

fn v4_of(hi: u16, lo: u16) -> Ipv4Addr {
    Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo))
}

fn v6_forbidden(ip: Ipv6Addr) -> bool {
    if ip.is_unspecified() || ip.is_loopback() {
        return true;
    }
    let s = ip.segments();
    // Addresses that carry an IPv4 address, by the IPv4 rules: mapped (::ffff:a.b.c.d),
    // compatible (::a.b.c.d), SIIT (::ffff:0:a.b.c.d), NAT64 (64:ff9b::/96 and the local
    // 64:ff9b:1::/48) in their last 32 bits, and 6to4 (2002::/16) in bits 16 to 48.
    if let Some(v4) = ip.to_ipv4() {
        return v4_forbidden(v4);
    }
    if s[..6] == [0, 0, 0, 0, 0xffff, 0] || s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        return v4_forbidden(v4_of(s[6], s[7]));
    }
    if s[..3] == [0x64, 0xff9b, 1] {
        return true;
    }
    if s[0] == 0x2002 {
        return v4_forbidden(v4_of(s[1], s[2]));
    }
    ip.is_multicast()
        || ip.is_unique_local()
        || ip.is_unicast_link_local()
        // Site-local (deprecated, still routed inside some networks), documentation,
        // Teredo (2001::/32, which tunnels to an IPv4 address) and discard (100::/64).
        || (s[0] & 0xffc0) == 0xfec0
        || (s[0] == 0x2001 && (s[1] == 0x0db8 || s[1] == 0))
        || s[..4] == [0x100, 0, 0, 0]
}

impl Guard {
    /// A guard that lets pushes reach these networks as well.
    pub(crate) fn new(allow: Vec<IpNet>) -> Guard {
        Guard {
            allow: Arc::new(allow),
        }
    }

    /// Whether a push may connect to this address.
    pub(crate) fn permits(&self, ip: IpAddr) -> bool {
        let forbidden = match ip {
            IpAddr::V4(v4) => v4_forbidden(v4),
            IpAddr::V6(v6) => v6_forbidden(v6),
        };
        !forbidden || self.allow.iter().any(|net| net.contains(&ip))
    }

    /// Checks an endpoint a subscription is to push to: an `http` or `https` URL whose host
    /// resolves, and only to addresses a push may reach.
    pub(crate) async fn check_endpoint(&self, endpoint: &str) -> Result<Url, ApiError> {
        let invalid = |reason: &str| ApiError::InvalidPushEndpoint(reason.to_owned());
        if endpoint.len() > MAX_ENDPOINT_BYTES {
            return Err(invalid("longer than 2048 bytes"));
        }
        let url = Url::parse(endpoint).map_err(|err| invalid(&err.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid("must be an http or https URL"));
        }
        if url.fragment().is_some() {
            return Err(invalid("must not have a #fragment"));
        }
        let port = url
            .port_or_known_default()
            .ok_or_else(|| invalid("has no port"))?;
        let addresses: Vec<IpAddr> = match url.host() {
            None => return Err(invalid("has no host")),
            Some(Host::Ipv4(ip)) => vec![IpAddr::V4(ip)],
            Some(Host::Ipv6(ip)) => vec![IpAddr::V6(ip)],
            // A name that does not resolve is refused like one that resolves inward, and
            // neither answer names an address: the operator's DNS is not for tenants to map.
            Some(Host::Domain(name)) => tokio::net::lookup_host((name, port))
                .await
                .map(|found| found.map(|addr| addr.ip()).collect())
                .unwrap_or_default(),
        };
        if addresses.is_empty() || addresses.iter().any(|ip| !self.permits(*ip)) {
            return Err(ApiError::PushEndpointForbidden(format!(
                "{} does not resolve, or resolves to an address pushes may not reach \
                 (loopback, private, link-local or reserved)",
                url.host_str().unwrap_or_default()
            )));
        }
        Ok(url)
    }

    /// Checks the host of a URL about to be requested when it is an address (the client
    /// resolves names through the guard, but never calls it for addresses).
    pub(crate) fn check_literal(&self, url: &Url) -> Result<(), String> {
        let ip = match url.host() {
            Some(Host::Ipv4(ip)) => IpAddr::V4(ip),
            Some(Host::Ipv6(ip)) => IpAddr::V6(ip),
            _ => return Ok(()),
        };
        if self.permits(ip) {
            Ok(())
        } else {
            Err(format!("{ip} is not an address pushes may reach"))
        }
    }
}

impl Resolve for Guard {
    fn resolve(&self, name: Name) -> Resolving {
        let guard = self.clone();
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let permitted: Vec<SocketAddr> = found
                .iter()
                .copied()
                .filter(|addr| guard.permits(addr.ip()))
                .collect();
            if permitted.is_empty() {
                // The delivery log shows this to the tenant: no addresses in it.
                return Err(
                    format!("`{host}` resolves only to addresses pushes may not reach").into(),
                );
            }
            let addrs: Addrs = Box::new(permitted.into_iter());
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn the_operators_network_is_out_of_reach() {
        let guard = Guard::default();
        for refused in [
            "127.0.0.1",
            "127.8.9.10",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "198.18.0.1",
            "192.0.0.8",
            "240.0.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00:ec2::254",
            "fc00::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "64:ff9b::a9fe:a9fe",
            "64:ff9b:1::a00:1",
            "::127.0.0.1",
            "::169.254.169.254",
            "::ffff:0:10.0.0.1",
            "2002:a00:1::1",
            "2002:7f00:1::1",
            "2001:0:4136:e378::1",
            "100::1",
            "2001:db8::1",
            "ff02::1",
        ] {
            assert!(!guard.permits(ip(refused)), "{refused} should be refused");
        }
        for public in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert!(guard.permits(ip(public)), "{public} should be allowed");
        }
    }

    #[test]
    fn the_operator_can_allow_a_network() {
        let guard = Guard::new(vec![
            "127.0.0.1/32".parse().unwrap(),
            "10.1.0.0/16".parse().unwrap(),
        ]);
        assert!(guard.permits(ip("127.0.0.1")));
        assert!(guard.permits(ip("10.1.200.3")));
        assert!(!guard.permits(ip("127.0.0.2")));
        assert!(!guard.permits(ip("10.2.0.1")));
        assert!(!guard.permits(ip("::1")));
    }

    #[tokio::test]
    async fn endpoints_are_checked_before_they_are_stored() {
        let guard = Guard::new(vec!["127.0.0.1/32".parse().unwrap()]);
        let code = |err: ApiError| err.code().as_str();
        assert!(
            guard
                .check_endpoint("http://127.0.0.1:9/hook")
                .await
                .is_ok()
        );
        for (endpoint, expected) in [
            ("ftp://127.0.0.1/x", "invalid_push_endpoint"),
            ("not a url", "invalid_push_endpoint"),
            ("http://127.0.0.1/x#frag", "invalid_push_endpoint"),
            ("http://[::1]:8080/", "push_endpoint_forbidden"),
            ("http://10.0.0.1/", "push_endpoint_forbidden"),
            (
                "http://169.254.169.254/latest/meta-data",
                "push_endpoint_forbidden",
            ),
            ("http://0x7f000002/", "push_endpoint_forbidden"),
            ("http://name.invalid/", "push_endpoint_forbidden"),
        ] {
            let err = guard.check_endpoint(endpoint).await.unwrap_err();
            assert_eq!(code(err), expected, "{endpoint}");
        }
        let literal = Url::parse("http://10.0.0.1/").unwrap();
        assert!(guard.check_literal(&literal).is_err());
        assert!(
            guard
                .check_literal(&Url::parse("http://127.0.0.1/").unwrap())
                .is_ok()
        );
    }
}
