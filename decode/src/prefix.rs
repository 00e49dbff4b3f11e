//! Address prefixes as operators write them in the config: `"192.0.2.0/24"`,
//! `"2001:db8::/32"`, or a bare address (a host route). Host bits past the prefix length
//! are refused rather than silently cleared: `"10.0.0.1/8"` is more likely a typo than
//! a wish for all of 10/8. IPv4-mapped IPv6 addresses count as their IPv4 address.
//!
//! One parser for every such list: sampling overrides and the listeners' allow and deny
//! lists.

use std::net::IpAddr;

pub use ipnet::IpNet;
use thiserror::Error;

/// Why a prefix is not valid.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PrefixError {
    #[error("{text:?} is not an address or address/prefix-length")]
    BadNetwork { text: String },
    #[error("prefix length {prefix_len} is longer than the {bits}-bit address")]
    PrefixTooLong { prefix_len: u8, bits: u8 },
    #[error("{network}/{prefix_len} has bits set past the prefix length")]
    HostBits { network: IpAddr, prefix_len: u8 },
}

/// Parses one prefix (see the module docs).
pub fn parse_prefix(text: &str) -> Result<IpNet, PrefixError> {
    let bad = || PrefixError::BadNetwork { text: text.to_owned() };
    let (addr, prefix_len) = match text.split_once('/') {
        Some((addr, len)) => (addr, Some(len.trim().parse::<u8>().map_err(|_| bad())?)),
        None => (text, None),
    };
    let addr: IpAddr = addr.trim().parse().map_err(|_| bad())?;
    prefix(addr, prefix_len.unwrap_or_else(|| max_prefix_len(addr.to_canonical())))
}

/// `network`/`prefix_len` as a prefix, checked as [`parse_prefix`] checks text.
pub fn prefix(network: IpAddr, prefix_len: u8) -> Result<IpNet, PrefixError> {
    let network = network.to_canonical();
    let bits = max_prefix_len(network);
    let net = IpNet::new(network, prefix_len)
        .map_err(|_| PrefixError::PrefixTooLong { prefix_len, bits })?;
    if net.trunc() != net {
        return Err(PrefixError::HostBits { network, prefix_len });
    }
    Ok(net)
}

/// Whether `addr` (IPv4-mapped counting as IPv4) is inside `net`.
pub fn contains(net: &IpNet, addr: IpAddr) -> bool {
    net.contains(&addr.to_canonical())
}

fn max_prefix_len(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn prefixes_and_bare_addresses_parse() {
        assert_eq!(parse_prefix("10.0.0.0/8"), Ok("10.0.0.0/8".parse().unwrap()));
        assert_eq!(parse_prefix("192.0.2.7"), Ok("192.0.2.7/32".parse().unwrap()));
        assert_eq!(parse_prefix("2001:db8::/32"), Ok("2001:db8::/32".parse().unwrap()));
        let net = parse_prefix("10.1.0.0/16").unwrap();
        assert!(contains(&net, ip("10.1.2.3")));
        assert!(contains(&net, ip("::ffff:10.1.2.3")), "v4-mapped is IPv4");
        assert!(!contains(&net, ip("10.2.0.1")));
    }

    #[test]
    fn invalid_prefixes_are_rejected() {
        let cases = [
            ("10.0.0.0/33", PrefixError::PrefixTooLong { prefix_len: 33, bits: 32 }),
            ("10.0.0.1/8", PrefixError::HostBits { network: ip("10.0.0.1"), prefix_len: 8 }),
            ("router-1", PrefixError::BadNetwork { text: "router-1".to_owned() }),
            ("10.0.0.0/x", PrefixError::BadNetwork { text: "10.0.0.0/x".to_owned() }),
        ];
        for (text, error) in cases {
            assert_eq!(parse_prefix(text), Err(error), "{text}");
        }
    }
}
