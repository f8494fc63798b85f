//! Who sent a request, as the per-client limits see it.
//!
//! The client is the TCP peer, unless the peer is one of the `--trusted-proxy` networks: then
//! `X-Forwarded-For` is read from the right (each proxy appends the address it saw), skipping
//! trusted proxies, and the first address that is not one is the client. Whatever lies left of
//! it was written by the client itself and is never believed. An entry that doesn't parse ends
//! the walk at the last trusted hop, whose own address then stands for the client.
//!
//! IPv6 clients are counted by their /64: one host is routinely given a whole /64, so counting
//! single addresses would let it take any number of shares. IPv4-mapped IPv6 addresses (what a
//! dual-stack socket reports for IPv4 peers) count as the IPv4 address.

use axum::{
    extract::{FromRef, FromRequestParts},
    http::{HeaderMap, request::Parts},
};
use ipnet::{IpNet, Ipv4Net};
use std::{
    convert::Infallible,
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
};

/// The TCP peer of the connection a request arrived on. Found in request extensions.
#[derive(Clone, Copy, Debug)]
pub struct ClientAddr(pub SocketAddr);

/// What the limits count by: an IPv4 address or an IPv6 /64.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClientKey {
    V4(Ipv4Addr),
    /// The upper 64 bits of the address.
    V6(u64),
}

impl ClientKey {
    pub fn of(ip: IpAddr) -> Self {
        match ip.to_canonical() {
            IpAddr::V4(v4) => Self::V4(v4),
            IpAddr::V6(v6) => Self::V6((v6.to_bits() >> 64) as u64),
        }
    }
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::V4(v4) => v4.fmt(f),
            Self::V6(prefix) => write!(f, "{}/64", Ipv6Addr::from_bits(u128::from(prefix) << 64)),
        }
    }
}

/// Parses a `--trusted-proxy` value: a CIDR, or a bare address for that one host. IPv4-mapped
/// IPv6 networks (`::ffff:10.0.0.0/104`) become the IPv4 network they stand for, since peers
/// are compared as IPv4.
pub fn parse_cidr(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    let net = match s.parse::<IpNet>() {
        Ok(net) => net,
        Err(_) => s.parse::<IpAddr>().map(IpNet::from).map_err(|_| {
            format!("`{s}` is neither a CIDR (10.0.0.0/8, fd00::/8) nor an address")
        })?,
    };
    if let IpNet::V6(v6) = net
        && let Some(v4) = v6.addr().to_ipv4_mapped()
        && v6.prefix_len() >= 96
    {
        let v4 = Ipv4Net::new(v4, v6.prefix_len() - 96).expect("a prefix of at most 32");
        return Ok(IpNet::V4(v4));
    }
    Ok(net)
}

/// The `--trusted-proxy` networks.
#[derive(Clone, Debug, Default)]
pub struct TrustedProxies(Arc<[IpNet]>);

impl TrustedProxies {
    pub fn new(nets: &[IpNet]) -> Self {
        Self(nets.into())
    }

    fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|net| net.contains(&ip))
    }

    /// The client's address: `peer`, or for a trusted peer the first untrusted address in
    /// `X-Forwarded-For` from the right.
    pub fn client_ip(&self, peer: IpAddr, headers: &HeaderMap) -> IpAddr {
        let mut client = peer.to_canonical();
        if self.0.is_empty() || !self.contains(client) {
            return client;
        }
        // Several headers count as one list, in order: walk the last one first.
        let entries = headers
            .get_all("x-forwarded-for")
            .iter()
            .rev()
            // A value that is not text is one unparseable entry.
            .flat_map(|value| value.to_str().unwrap_or("").rsplit(','));
        for entry in entries {
            let Some(hop) = parse_hop(entry) else {
                // Garbage, appended by a trusted proxy or not: nothing left of it can be
                // believed, so the last trusted hop stands for the client.
                return client;
            };
            let hop = hop.to_canonical();
            if !self.contains(hop) {
                return hop;
            }
            client = hop;
        }
        // Every hop is a trusted proxy (a proxy's own health check, say).
        client
    }
}

/// One `X-Forwarded-For` entry: an address, optionally with a port (`1.2.3.4:80`,
/// `[2001:db8::1]:80`) or in brackets (`[2001:db8::1]`), as some proxies write them.
fn parse_hop(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(ip);
    }
    if let Ok(addr) = entry.parse::<SocketAddr>() {
        return Some(addr.ip());
    }
    entry
        .strip_prefix('[')?
        .strip_suffix(']')?
        .parse::<Ipv6Addr>()
        .ok()
        .map(IpAddr::V6)
}

/// The request's client, by the [`ClientAddr`] the accept loop put in its extensions. A
/// request that came some other way (a router called directly) counts as `0.0.0.0`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Client(pub ClientKey);

impl<S> FromRequestParts<S> for Client
where
    S: Send + Sync,
    TrustedProxies: FromRef<S>,
{
    type Rejection = Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Infallible> {
        let peer = parts
            .extensions
            .get::<ClientAddr>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |ClientAddr(addr)| {
                addr.ip()
            });
        let trusted = TrustedProxies::from_ref(state);
        Ok(Self(ClientKey::of(trusted.client_ip(peer, &parts.headers))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn trusting(nets: &[&str]) -> TrustedProxies {
        let nets: Vec<IpNet> = nets.iter().map(|n| parse_cidr(n).unwrap()).collect();
        TrustedProxies::new(&nets)
    }

    fn xff(values: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for v in values {
            headers.append("x-forwarded-for", HeaderValue::from_str(v).unwrap());
        }
        headers
    }

    /// The client `peer` stands for, given these `X-Forwarded-For` headers.
    fn client(trusted: &TrustedProxies, peer: &str, values: &[&str]) -> String {
        trusted.client_ip(ip(peer), &xff(values)).to_string()
    }

    #[test]
    fn without_trusted_proxies_the_peer_is_the_client() {
        let none = TrustedProxies::default();
        assert_eq!(client(&none, "203.0.113.9", &[]), "203.0.113.9");
        // Spoofing: anyone can write the header; nobody is trusted to.
        assert_eq!(client(&none, "203.0.113.9", &["1.2.3.4"]), "203.0.113.9");
        assert_eq!(
            client(&none, "::ffff:203.0.113.9", &["1.2.3.4"]),
            "203.0.113.9"
        );
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_forwards() {
        let t = trusting(&["10.0.0.0/8"]);
        assert_eq!(client(&t, "203.0.113.9", &["10.0.0.1"]), "203.0.113.9");
        assert_eq!(
            client(&t, "203.0.113.9", &["1.2.3.4, 5.6.7.8"]),
            "203.0.113.9"
        );
        assert_eq!(client(&t, "11.0.0.1", &["1.2.3.4"]), "11.0.0.1");
    }

    #[test]
    fn behind_a_trusted_proxy_the_rightmost_untrusted_entry_is_the_client() {
        let t = trusting(&["10.0.0.0/8", "fd00::/8"]);
        assert_eq!(client(&t, "10.0.0.1", &["198.51.100.7"]), "198.51.100.7");
        // The client put a fake address first; the proxy appended the real one.
        assert_eq!(
            client(&t, "10.0.0.1", &["1.1.1.1, 198.51.100.7"]),
            "198.51.100.7"
        );
        // A chain of trusted proxies is skipped, across several headers too.
        assert_eq!(
            client(
                &t,
                "10.0.0.1",
                &["6.6.6.6, 198.51.100.7, 10.1.1.1", "fd00::2"]
            ),
            "198.51.100.7"
        );
        assert_eq!(
            client(&t, "10.0.0.1", &["6.6.6.6", "198.51.100.7", "10.9.9.9"]),
            "198.51.100.7"
        );
        // No header: a request from the proxy itself.
        assert_eq!(client(&t, "10.0.0.1", &[]), "10.0.0.1");
        // All hops trusted: the leftmost stands for the client.
        assert_eq!(client(&t, "10.0.0.1", &["10.0.0.3, 10.0.0.2"]), "10.0.0.3");
    }

    #[test]
    fn an_unparseable_entry_ends_the_walk_at_the_last_trusted_hop() {
        let t = trusting(&["10.0.0.0/8"]);
        for values in [
            &["1.1.1.1, garbage"][..],
            &["unknown"],
            &["1.1.1.1, "],
            &[""],
            &["1.1.1.1,,"],
            &["1.1.1.1, 300.1.1.1"],
        ] {
            assert_eq!(client(&t, "10.0.0.1", values), "10.0.0.1", "{values:?}");
        }
        // Past a trusted hop, that hop stands for the client, never what is left of the garbage.
        assert_eq!(
            client(&t, "10.0.0.1", &["1.1.1.1, x, 10.0.0.7"]),
            "10.0.0.7"
        );
        // A value that is not text at all is garbage too.
        let mut headers = HeaderMap::new();
        headers.append(
            "x-forwarded-for",
            HeaderValue::from_bytes(b"1.1.1.1, \xff").unwrap(),
        );
        assert_eq!(t.client_ip(ip("10.0.0.1"), &headers), ip("10.0.0.1"));
    }

    #[test]
    fn entries_with_ports_and_brackets() {
        let t = trusting(&["10.0.0.0/8"]);
        assert_eq!(
            client(&t, "10.0.0.1", &["198.51.100.7:4711"]),
            "198.51.100.7"
        );
        assert_eq!(
            client(&t, "10.0.0.1", &["[2001:db8::1]:443"]),
            "2001:db8::1"
        );
        assert_eq!(client(&t, "10.0.0.1", &["[2001:db8::1]"]), "2001:db8::1");
        assert_eq!(client(&t, "10.0.0.1", &[" 2001:db8::1 "]), "2001:db8::1");
    }

    #[test]
    fn ipv4_mapped_addresses_are_ipv4_everywhere() {
        let t = trusting(&["10.0.0.0/8"]);
        // A dual-stack socket reports the proxy as ::ffff:10.0.0.1; it is still trusted.
        assert_eq!(client(&t, "::ffff:10.0.0.1", &["1.2.3.4"]), "1.2.3.4");
        assert_eq!(client(&t, "10.0.0.1", &["::ffff:1.2.3.4"]), "1.2.3.4");
        // A mapped entry naming a trusted proxy is skipped like the IPv4 one.
        assert_eq!(
            client(&t, "10.0.0.1", &["1.2.3.4, ::ffff:10.0.0.9"]),
            "1.2.3.4"
        );
        // A mapped CIDR is the IPv4 network.
        let mapped = trusting(&["::ffff:10.0.0.0/104"]);
        assert_eq!(client(&mapped, "10.0.0.1", &["1.2.3.4"]), "1.2.3.4");
        assert_eq!(
            ClientKey::of(ip("::ffff:1.2.3.4")),
            ClientKey::of(ip("1.2.3.4"))
        );
    }

    #[test]
    fn cidrs_and_addresses_parse() {
        let shown = |s: &str| parse_cidr(s).map(|n| n.to_string());
        assert_eq!(shown("10.0.0.0/8").unwrap(), "10.0.0.0/8");
        assert_eq!(shown(" 127.0.0.1 ").unwrap(), "127.0.0.1/32");
        assert_eq!(shown("::1").unwrap(), "::1/128");
        assert_eq!(shown("fd00::/8").unwrap(), "fd00::/8");
        assert_eq!(shown("::ffff:10.0.0.0/104").unwrap(), "10.0.0.0/8");
        assert_eq!(shown("::ffff:0:0/96").unwrap(), "0.0.0.0/0");
        for bad in [
            "",
            "10.0.0.0/33",
            "10.0.0",
            "fd00::/129",
            "localhost",
            "10.0.0.0/8/8",
        ] {
            assert!(parse_cidr(bad).is_err(), "{bad:?}");
        }
        // A network given by any of its addresses holds the same hosts.
        let t = trusting(&["10.1.2.3/8"]);
        assert_eq!(client(&t, "10.200.0.1", &["1.2.3.4"]), "1.2.3.4");
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64() {
        let a = ClientKey::of(ip("2001:db8:1:2:aaaa::1"));
        let b = ClientKey::of(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"));
        let other = ClientKey::of(ip("2001:db8:1:3::1"));
        assert_eq!(a, b);
        assert_ne!(a, other);
        assert_eq!(a.to_string(), "2001:db8:1:2::/64");
        assert_eq!(ClientKey::of(ip("1.2.3.4")).to_string(), "1.2.3.4");
        assert_ne!(ClientKey::of(ip("1.2.3.4")), ClientKey::of(ip("1.2.3.5")));
        // IPv4 and IPv6 never share a key, even when the bits would line up.
        assert_ne!(ClientKey::of(ip("0.0.0.1")), ClientKey::of(ip("::1")));
    }

    #[tokio::test]
    async fn the_extractor_reads_the_extension_and_the_header() {
        #[derive(Clone)]
        struct State(TrustedProxies);
        impl FromRef<State> for TrustedProxies {
            fn from_ref(s: &State) -> Self {
                s.0.clone()
            }
        }
        let state = State(trusting(&["127.0.0.1"]));
        let request = |peer: Option<&str>, forwarded: Option<&str>| {
            let mut builder = axum::http::Request::builder();
            if let Some(f) = forwarded {
                builder = builder.header("x-forwarded-for", f);
            }
            let mut request = builder.body(()).unwrap();
            if let Some(peer) = peer {
                let addr = SocketAddr::new(ip(peer), 40000);
                request.extensions_mut().insert(ClientAddr(addr));
            }
            request.into_parts().0
        };
        let key = async |mut parts: Parts| {
            let Ok(Client(key)) = Client::from_request_parts(&mut parts, &state).await;
            key.to_string()
        };
        assert_eq!(
            key(request(Some("127.0.0.1"), Some("1.2.3.4"))).await,
            "1.2.3.4"
        );
        assert_eq!(
            key(request(Some("127.0.0.2"), Some("1.2.3.4"))).await,
            "127.0.0.2"
        );
        assert_eq!(key(request(None, Some("1.2.3.4"))).await, "0.0.0.0");
    }
}
