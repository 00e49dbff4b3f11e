//! The operator's sampling-rate policy, one for every protocol: a default rate for flows
//! whose exporter announced none, and per-exporter overrides by address prefix.
//!
//! Precedence for each flow (NetFlow/IPFIX: once the whole datagram is decoded, see
//! `netflow::fidelity`; sFlow: per sample): an override matching the exporter's address
//! (longest prefix wins) replaces whatever the exporter announced and flags the flow
//! `SAMPLING_RATE_OVERRIDDEN`; otherwise the exporter's own rate (v5 header, options
//! data, the record itself; the sFlow sample's rate); otherwise `default_rate`, flagged
//! `SAMPLING_RATE_DEFAULTED` and counted in `DatagramReport::sampling_rate_defaulted`;
//! otherwise 0, "unknown", counted in `DatagramReport::sampling_rate_unknown`.
//!
//! The exporter's address is the UDP source for NetFlow/IPFIX, and the agent address of
//! the datagram for sFlow (the UDP source when the agent address is unknown).

use std::net::IpAddr;

use flowpb::FlowMessage;
use thiserror::Error;

use crate::decode_flags::{SAMPLING_RATE_DEFAULTED, SAMPLING_RATE_OVERRIDDEN};
use crate::prefix::{IpNet, PrefixError, contains, parse_prefix, prefix};
use crate::report::DatagramReport;

/// Why a sampling policy entry is not valid.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SamplingPolicyError {
    #[error("a sampling rate must be at least 1 (1 = unsampled)")]
    ZeroRate,
    #[error(transparent)]
    Prefix(#[from] PrefixError),
}

/// A rate forced for every exporter inside one address prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SamplingOverride {
    network: IpNet,
    rate: u64,
}

impl SamplingOverride {
    /// An override of `rate` for exporters in `network`/`prefix_len`.
    pub fn new(network: IpAddr, prefix_len: u8, rate: u64) -> Result<Self, SamplingPolicyError> {
        Self::for_prefix(prefix(network, prefix_len)?, rate)
    }

    /// An override of `rate` for exporters in `network`.
    pub fn for_prefix(network: IpNet, rate: u64) -> Result<Self, SamplingPolicyError> {
        if rate == 0 {
            return Err(SamplingPolicyError::ZeroRate);
        }
        Ok(Self { network, rate })
    }

    /// Parses `"192.0.2.0/24"`, `"2001:db8::/32"` or a single address (a host route).
    pub fn parse(network: &str, rate: u64) -> Result<Self, SamplingPolicyError> {
        Self::for_prefix(parse_prefix(network)?, rate)
    }

    pub fn network(&self) -> IpNet {
        self.network
    }

    pub fn prefix_len(&self) -> u8 {
        self.network.prefix_len()
    }

    pub fn rate(&self) -> u64 {
        self.rate
    }

    /// Whether `exporter` is inside this override's prefix.
    fn contains(&self, exporter: IpAddr) -> bool {
        contains(&self.network, exporter)
    }
}

/// Per-exporter sampling rate policy of a listener (NetFlow or sFlow).
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
            .max_by_key(|o| o.prefix_len())
            .map(|o| o.rate)
    }

    /// The default rate, ignoring an invalid 0.
    pub(crate) fn default_rate(&self) -> Option<u64> {
        self.default_rate.filter(|rate| *rate > 0)
    }

    /// The policy as it applies to the exporter at `exporter`.
    pub(crate) fn for_exporter(&self, exporter: IpAddr) -> ExporterPolicy {
        ExporterPolicy {
            override_rate: self.override_for(exporter),
            default_rate: self.default_rate(),
        }
    }
}

/// The sampling policy as it applies to one exporter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct ExporterPolicy {
    /// The override matching the exporter's address.
    pub override_rate: Option<u64>,
    /// The default for flows whose rate the exporter did not announce.
    pub default_rate: Option<u64>,
}

impl ExporterPolicy {
    /// Gives `flow` its final rate: the override, else its own (non-zero) rate, else the
    /// default (counted as defaulted), else 0 (counted as unknown).
    pub(crate) fn apply(self, flow: &mut FlowMessage, report: &mut DatagramReport) {
        if let Some(rate) = self.override_rate {
            flow.sampling_rate = rate;
            flow.decode_flags |= SAMPLING_RATE_OVERRIDDEN;
        } else if flow.sampling_rate == 0 {
            match self.default_rate {
                Some(rate) => {
                    flow.sampling_rate = rate;
                    flow.decode_flags |= SAMPLING_RATE_DEFAULTED;
                    report.sampling_rate_defaulted += 1;
                }
                None => report.sampling_rate_unknown += 1,
            }
        }
    }
}

/// The policy of the exporter address last asked for: a session sees one exporter
/// address (or, for sFlow, a few agents behind one source), so it is worked out once.
#[derive(Debug, Clone, Default)]
pub(crate) struct PolicyCache {
    last: Option<(IpAddr, ExporterPolicy)>,
}

impl PolicyCache {
    /// `policy` as it applies to `exporter`, from the cache when the address is the same.
    pub(crate) fn get(&mut self, policy: &SamplingPolicy, exporter: IpAddr) -> ExporterPolicy {
        match self.last {
            Some((cached, applied)) if cached == exporter => applied,
            _ => {
                let applied = policy.for_exporter(exporter);
                self.last = Some((exporter, applied));
                applied
            }
        }
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
            (
                "10.0.0.1/8",
                1,
                SamplingPolicyError::Prefix(PrefixError::HostBits {
                    network: ip("10.0.0.1"),
                    prefix_len: 8,
                }),
            ),
        ];
        for (text, rate, error) in cases {
            assert_eq!(SamplingOverride::parse(text, rate), Err(error), "{text}");
        }
        let policy = SamplingPolicy { default_rate: Some(0), overrides: Vec::new() };
        assert_eq!(policy.validate(), Err(SamplingPolicyError::ZeroRate));
        assert_eq!(policy.default_rate(), None);
    }

    fn rated(rate: u64) -> FlowMessage {
        FlowMessage { sampling_rate: rate, ..Default::default() }
    }

    /// Applies `policy` to flows of rates 0 and 64: their (rate, flags), and the report.
    fn applied(policy: ExporterPolicy) -> (Vec<(u64, u32)>, (usize, usize)) {
        let mut report = DatagramReport::default();
        let mut flows = [rated(0), rated(64)];
        flows.iter_mut().for_each(|flow| policy.apply(flow, &mut report));
        let summary = flows.iter().map(|f| (f.sampling_rate, f.decode_flags)).collect();
        (summary, (report.sampling_rate_defaulted, report.sampling_rate_unknown))
    }

    #[test]
    fn override_beats_announced_and_default_fills_unknown() {
        let defaulted = ExporterPolicy { override_rate: None, default_rate: Some(10) };
        assert_eq!(applied(defaulted), (vec![(10, SAMPLING_RATE_DEFAULTED), (64, 0)], (1, 0)));
        let overridden = ExporterPolicy { override_rate: Some(1000), default_rate: Some(10) };
        let flagged = (1000, SAMPLING_RATE_OVERRIDDEN);
        assert_eq!(applied(overridden), (vec![flagged, flagged], (0, 0)));
        assert_eq!(applied(ExporterPolicy::default()), (vec![(0, 0), (64, 0)], (0, 1)));
    }

    #[test]
    fn the_cache_follows_the_exporter_address() {
        let policy = SamplingPolicy {
            default_rate: Some(3),
            overrides: vec![SamplingOverride::parse("10.0.0.0/8", 100).unwrap()],
        };
        let mut cache = PolicyCache::default();
        assert_eq!(cache.get(&policy, ip("10.0.0.1")).override_rate, Some(100));
        assert_eq!(cache.get(&policy, ip("192.0.2.1")).override_rate, None);
        assert_eq!(cache.get(&policy, ip("192.0.2.1")).default_rate, Some(3));
    }
}
