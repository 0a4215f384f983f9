//! Who a login attempt comes from, for rate limiting: the TCP peer, or what a trusted
//! reverse proxy says the client was.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::str::FromStr;

use ipnet::{IpNet, Ipv4Net, Ipv6Net};

/// The peers whose `X-Forwarded-For` is believed (`PICLOUD_TRUSTED_PROXIES`). Anyone else
/// could write any header they like, so for them the TCP peer is the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrustedProxies(Vec<IpNet>);

impl TrustedProxies {
    /// The default: loopback, where the Caddy in front of PiCloud runs.
    pub fn loopback() -> Self {
        Self(vec![
            IpNet::V4(Ipv4Net::new_assert(Ipv4Addr::LOCALHOST, 8)),
            IpNet::V6(Ipv6Net::new_assert(Ipv6Addr::LOCALHOST, 128)),
        ])
    }

    /// Trusts no one: every client is its TCP peer.
    pub fn none() -> Self {
        Self(Vec::new())
    }

    /// Whether `peer` is one of the trusted proxies.
    pub fn contains(&self, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        self.0.iter().any(|net| net.contains(&peer))
    }
}

impl FromStr for TrustedProxies {
    type Err = String;

    /// A comma-separated list of addresses and networks (`127.0.0.1, 10.0.0.0/8, ::1`);
    /// empty or `none` trusts no one.
    fn from_str(list: &str) -> Result<Self, Self::Err> {
        let list = list.trim();
        if list.is_empty() || list.eq_ignore_ascii_case("none") {
            return Ok(Self::none());
        }
        list.split(',')
            .map(str::trim)
            .map(|entry| {
                IpNet::from_str(entry)
                    .or_else(|_| IpAddr::from_str(entry).map(IpNet::from))
                    .map_err(|_| format!("'{entry}' is not an IP address or network"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Self)
    }
}

/// The address a login attempt is counted against: the TCP peer; when that is a trusted
/// proxy, the rightmost `X-Forwarded-For` entry that is not itself a trusted proxy (each
/// proxy appends the address it saw; what is left of it are the client's own claims).
/// An IPv6 client is keyed by its /64, which one subscriber usually holds whole; `unknown`
/// when the server was not given connection info (in-process tests).
pub fn client_address<'h>(
    peer: Option<IpAddr>,
    forwarded_for: impl DoubleEndedIterator<Item = &'h str>,
    trusted: &TrustedProxies,
) -> String {
    let Some(peer) = peer.map(|p| p.to_canonical()) else {
        return "unknown".to_owned();
    };
    let mut client = peer;
    if trusted.contains(peer) {
        let hops = forwarded_for
            .rev()
            .flat_map(|value| value.rsplit(','))
            .map(str::trim)
            .filter(|entry| !entry.is_empty());
        for hop in hops {
            // An entry that is not an address ends the walk: the last hop that was one
            // is the best the proxies can vouch for.
            let Ok(hop) = hop.parse::<IpAddr>() else {
                break;
            };
            client = hop.to_canonical();
            if !trusted.contains(client) {
                break;
            }
        }
    }
    key_of(client)
}

fn key_of(client: IpAddr) -> String {
    match client {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => Ipv6Net::new(v6, 64)
            .map(|net| net.trunc().to_string())
            .unwrap_or_else(|_| v6.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn address(peer: &str, forwarded: &[&str], trusted: &TrustedProxies) -> String {
        client_address(
            Some(peer.parse().unwrap()),
            forwarded.iter().copied(),
            trusted,
        )
    }

    #[test]
    fn only_a_trusted_proxy_is_believed() {
        let loopback = TrustedProxies::loopback();
        let forwarded = ["1.1.1.1, 2.2.2.2", "203.0.113.7"];
        assert_eq!(
            address("198.51.100.4", &forwarded, &loopback),
            "198.51.100.4"
        );
        assert_eq!(address("127.0.0.1", &forwarded, &loopback), "203.0.113.7");
        assert_eq!(
            address("::ffff:127.0.0.1", &forwarded, &loopback),
            "203.0.113.7"
        );
        assert_eq!(address("127.0.0.1", &[], &loopback), "127.0.0.1");
        assert_eq!(
            address("127.0.0.1", &["not an address"], &loopback),
            "127.0.0.1"
        );
        assert_eq!(
            address("127.0.0.1", &forwarded, &TrustedProxies::none()),
            "127.0.0.1",
            "trusting no one, a local peer's header is ignored too"
        );
        assert_eq!(
            client_address(None, forwarded.into_iter(), &loopback),
            "unknown"
        );
    }

    #[test]
    fn a_chain_of_trusted_proxies_is_walked_to_the_client() {
        let proxies: TrustedProxies = "127.0.0.1, 10.0.0.0/8".parse().unwrap();
        assert_eq!(
            address("10.1.1.1", &["6.6.6.6, 203.0.113.7, 10.2.2.2"], &proxies),
            "203.0.113.7",
            "the claim left of the first untrusted hop is the client's own, ignored"
        );
        assert_eq!(address("10.1.1.1", &["10.2.2.2"], &proxies), "10.2.2.2");
    }

    #[test]
    fn an_ipv6_client_is_keyed_by_its_slash_64() {
        let none = TrustedProxies::none();
        assert_eq!(
            address("2001:db8:1:2:3:4:5:6", &[], &none),
            "2001:db8:1:2::/64"
        );
        assert_eq!(
            address("2001:db8:1:2:ffff::1", &[], &none),
            "2001:db8:1:2::/64"
        );
    }

    #[test]
    fn trusted_proxy_lists_parse_and_bad_entries_are_named() {
        assert_eq!(
            "".parse::<TrustedProxies>().unwrap(),
            TrustedProxies::none()
        );
        assert_eq!(
            "none".parse::<TrustedProxies>().unwrap(),
            TrustedProxies::none()
        );
        assert!(
            "127.0.0.1, ::1/128"
                .parse::<TrustedProxies>()
                .unwrap()
                .contains("::1".parse().unwrap())
        );
        let err = "10.0.0.0/8, proxy.local"
            .parse::<TrustedProxies>()
            .unwrap_err();
        assert!(err.contains("proxy.local"), "{err}");
    }
}
