//! The operator's sampling-rate policy for NetFlow/IPFIX exporters: a default rate for
//! flows whose exporter announced none, and per-exporter overrides by address prefix.
//!
//! Precedence for each flow (applied once the whole datagram is decoded, see
//! [`super::fidelity`]): an override matching the exporter's address (longest prefix
//! wins) replaces whatever the exporter announced and flags the flow
//! `SAMPLING_RATE_OVERRIDDEN`; otherwise the exporter's own rate (v5 header, options
//! data, the record itself); otherwise `default_rate`, flagged
//! `SAMPLING_RATE_DEFAULTED`; otherwise 0, "unknown", counted in
//! `DatagramReport::sampling_rate_unknown`.

use std::net::IpAddr;

use thiserror::Error;

/// Why a sampling policy entry is not valid.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SamplingPolicyError {
    #[error("a sampling rate must be at least 1 (1 = unsampled)")]
    ZeroRate,
    #[error("{text:?} is not an address or address/prefix-length")]
    BadNetwork { text: String },
    #[error("prefix length {prefix_len} is longer than the {bits}-bit address")]
    PrefixTooLong { prefix_len: u8, bits: u8 },
    #[error("{network}/{prefix_len} has bits set past the prefix length")]
    HostBits { network: IpAddr, prefix_len: u8 },
}

/// A rate forced for every exporter inside one address prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SamplingOverride {
    network: IpAddr,
    prefix_len: u8,
    rate: u64,
}

/// Address width in bits.
fn bits(addr: IpAddr) -> u8 {
    match addr {
        IpAddr::V4(_) => 32,
        IpAddr::V6(_) => 128,
    }
}

/// The address as a 128-bit number, IPv4 in the low 32 bits.
fn as_u128(addr: IpAddr) -> u128 {
    match addr {
        IpAddr::V4(v4) => u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

/// The mask of the host bits of an address of `width` bits under `prefix_len`.
fn host_mask(width: u8, prefix_len: u8) -> u128 {
    let host_bits = u32::from(width.saturating_sub(prefix_len));
    1u128.checked_shl(host_bits).map_or(u128::MAX, |bit| bit - 1)
}

impl SamplingOverride {
    /// An override of `rate` for exporters in `network`/`prefix_len`.
    pub fn new(network: IpAddr, prefix_len: u8, rate: u64) -> Result<Self, SamplingPolicyError> {
        let network = network.to_canonical();
        if rate == 0 {
            return Err(SamplingPolicyError::ZeroRate);
        }
        if prefix_len > bits(network) {
            return Err(SamplingPolicyError::PrefixTooLong { prefix_len, bits: bits(network) });
        }
        if as_u128(network) & host_mask(bits(network), prefix_len) != 0 {
            return Err(SamplingPolicyError::HostBits { network, prefix_len });
        }
        Ok(Self { network, prefix_len, rate })
    }

    /// Parses `"192.0.2.0/24"`, `"2001:db8::/32"` or a single address (a host route).
    pub fn parse(network: &str, rate: u64) -> Result<Self, SamplingPolicyError> {
        let bad = || SamplingPolicyError::BadNetwork { text: network.to_owned() };
        let (addr, prefix_len) = match network.split_once('/') {
            Some((addr, len)) => (addr, Some(len.parse::<u8>().map_err(|_| bad())?)),
            None => (network, None),
        };
        let addr: IpAddr = addr.trim().parse().map_err(|_| bad())?;
        let addr = addr.to_canonical();
        Self::new(addr, prefix_len.unwrap_or_else(|| bits(addr)), rate)
    }

    pub fn network(&self) -> IpAddr {
        self.network
    }

    pub fn prefix_len(&self) -> u8 {
        self.prefix_len
    }

    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// Whether `exporter` is inside this override's prefix.
    fn contains(&self, exporter: IpAddr) -> bool {
        let exporter = exporter.to_canonical();
        if bits(exporter) != bits(self.network) {
            return false;
        }
        let mask = !host_mask(bits(exporter), self.prefix_len);
        as_u128(exporter) & mask == as_u128(self.network)
    }
}

/// Per-exporter sampling rate policy of a NetFlow listener.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SamplingPolicy {
    /// Rate given to flows whose exporter announced none; `None` leaves them 0
    /// ("unknown"). Must be at least 1 when set.
    pub default_rate: Option<u64>,
    /// Rates forced per exporter prefix; the longest matching prefix wins.
    pub overrides: Vec<SamplingOverride>,
}

impl SamplingPolicy {
    /// Checks what [`SamplingOverride::new`] cannot: the default rate.
    pub fn validate(&self) -> Result<(), SamplingPolicyError> {
        match self.default_rate {
            Some(0) => Err(SamplingPolicyError::ZeroRate),
            _ => Ok(()),
        }
    }

    /// The override for an exporter, if any prefix holds it.
    pub fn override_for(&self, exporter: IpAddr) -> Option<u64> {
        self.overrides
            .iter()
            .filter(|o| o.contains(exporter))
            .max_by_key(|o| o.prefix_len)
            .map(|o| o.rate)
    }

    /// The default rate, ignoring an invalid 0.
    pub(crate) fn default_rate(&self) -> Option<u64> {
        self.default_rate.filter(|rate| *rate > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn longest_prefix_wins_and_families_do_not_mix() {
        let policy = SamplingPolicy {
            default_rate: None,
            overrides: vec![
                SamplingOverride::parse("10.0.0.0/8", 100).unwrap(),
                SamplingOverride::parse("10.1.0.0/16", 1000).unwrap(),
                SamplingOverride::parse("2001:db8::/32", 7).unwrap(),
                SamplingOverride::parse("0.0.0.0/0", 2).unwrap(),
            ],
        };
        assert_eq!(policy.override_for(ip("10.1.2.3")), Some(1000));
        assert_eq!(policy.override_for(ip("10.2.2.3")), Some(100));
        assert_eq!(policy.override_for(ip("192.0.2.1")), Some(2));
        assert_eq!(policy.override_for(ip("::ffff:10.1.0.1")), Some(1000), "v4-mapped is IPv4");
        assert_eq!(policy.override_for(ip("2001:db8::9")), Some(7));
        assert_eq!(policy.override_for(ip("2001:db9::9")), None);
    }

    #[test]
    fn a_bare_address_is_a_host_route() {
        let host = SamplingOverride::parse("192.0.2.7", 5).unwrap();
        assert_eq!(host.prefix_len(), 32);
        assert!(host.contains(ip("192.0.2.7")));
        assert!(!host.contains(ip("192.0.2.8")));
    }

    #[test]
    fn invalid_entries_are_rejected() {
        let cases = [
            ("10.0.0.0/8", 0, SamplingPolicyError::ZeroRate),
            ("10.0.0.0/33", 1, SamplingPolicyError::PrefixTooLong { prefix_len: 33, bits: 32 }),
            (
                "10.0.0.1/8",
                1,
                SamplingPolicyError::HostBits { network: ip("10.0.0.1"), prefix_len: 8 },
            ),
            ("router-1", 1, SamplingPolicyError::BadNetwork { text: "router-1".to_owned() }),
            ("10.0.0.0/x", 1, SamplingPolicyError::BadNetwork { text: "10.0.0.0/x".to_owned() }),
        ];
        for (text, rate, error) in cases {
            assert_eq!(SamplingOverride::parse(text, rate), Err(error), "{text}");
        }
        let policy = SamplingPolicy { default_rate: Some(0), overrides: Vec::new() };
        assert_eq!(policy.validate(), Err(SamplingPolicyError::ZeroRate));
        assert_eq!(policy.default_rate(), None);
    }
}
