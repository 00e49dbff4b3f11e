//! Sampling Information Elements, options data, and the per-scope table of the
//! sampling rates options data announced.
//!
//! **Rate of one record** (options data or a flow record carrying sampling IEs),
//! following the selector algorithm (IE 304, RFC 5475 §6.1) when it is given:
//! - systematic count-based (1): (samplingPacketInterval + samplingPacketSpace) /
//!   samplingPacketInterval (305/306, RFC 5477 §8.2.1; both are needed);
//! - random n-out-of-N (3): samplingPopulation / samplingSize (310/309);
//! - uniform probabilistic (4): round(1 / samplingProbability) (311, float64 or
//!   reduced-size float32);
//! - any algorithm, as the fallback: samplingInterval / samplerRandomInterval (34/50,
//!   the NetFlow v9 SAMPLING_INTERVAL and FLOW_SAMPLER_RANDOM_INTERVAL);
//! - no algorithm given: the first of population/size, interval/space, 34/50, 311.
//!
//! A lone samplingPacketInterval (Cisco IOS-XR sends `1` with algorithm 3 and no
//! population) says nothing about the rate: it is not read as 1:1. Ratios are
//! truncated to whole numbers (at least 1).
//!
//! **Keys**: an announced rate belongs to the selector (302 selectorId) or sampler (48
//! samplerId / FLOW_SAMPLER_ID) it names, else to the ingress interface its scope names
//! (IPFIX scope IE 10, v9 scope type Interface), else to the whole domain. A flow
//! record takes, in order: a rate carried in the record itself, the rate of its
//! selectorId, of its samplerId, of its ingressInterface, the domain's rate; else it
//! is unknown.

use netflow_parser::variable_versions::v9::ScopeDataField;

use crate::SessionMap;

use super::fields::FieldSpec;
use super::slots::be_uint;

/// Sampler entries kept per scope; announcements past it are ignored (bounds memory
/// against exporters that invent ids).
const MAX_SAMPLERS: usize = 1024;

/// selectorAlgorithm (IE 304) values, RFC 5475 §6.1 / IANA "Packet Selection Methods".
const SYSTEMATIC_COUNT_BASED: u64 = 1;
const RANDOM_N_OUT_OF_N: u64 = 3;
const UNIFORM_PROBABILISTIC: u64 = 4;

/// IPFIX ingressInterface, as an options scope field.
const INGRESS_INTERFACE: u16 = 10;

/// Which sampler a rate belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum SamplerKey {
    Domain,
    Interface(u64),
    Sampler(u64),
    Selector(u64),
}

/// The sampling Information Elements of one record.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct SamplingFields {
    sampler_id: Option<u64>,
    selector_id: Option<u64>,
    algorithm: Option<u64>,
    interval: Option<u64>,
    packet_interval: Option<u64>,
    packet_space: Option<u64>,
    size: Option<u64>,
    population: Option<u64>,
    probability: Option<f64>,
    /// Whether any sampling element was taken ([`SamplingFields::apply`]).
    taken: bool,
}

fn first(slot: &mut Option<u64>, bytes: &[u8]) {
    if slot.is_none() {
        *slot = be_uint(bytes);
    }
}

/// samplingProbability: float64, or float32 in reduced-size encoding.
fn probability(bytes: &[u8]) -> Option<f64> {
    match bytes.len() {
        8 => bytes.try_into().ok().map(f64::from_be_bytes),
        4 => bytes.try_into().ok().map(|b| f64::from(f32::from_be_bytes(b))),
        _ => None,
    }
}

impl SamplingFields {
    /// Takes one IANA Information Element; `false` when it is not a sampling IE.
    pub fn apply(&mut self, id: u16, value: &[u8]) -> bool {
        match id {
            34 | 50 => first(&mut self.interval, value),
            48 => first(&mut self.sampler_id, value),
            302 => first(&mut self.selector_id, value),
            304 => first(&mut self.algorithm, value),
            305 => first(&mut self.packet_interval, value),
            306 => first(&mut self.packet_space, value),
            309 => first(&mut self.size, value),
            310 => first(&mut self.population, value),
            311 if self.probability.is_none() => self.probability = probability(value),
            311 => {}
            _ => return false,
        }
        self.taken = true;
        true
    }

    /// The 1-in-N rate the record's own sampling IEs give, if any (no call for a
    /// record without them: most).
    #[inline]
    pub fn rate(&self) -> Option<u64> {
        if !self.taken {
            return None;
        }
        self.announced_rate()
    }

    /// [`SamplingFields::rate`] of a record with sampling IEs.
    fn announced_rate(&self) -> Option<u64> {
        let interval = self.interval.filter(|v| *v > 0);
        match self.algorithm {
            Some(SYSTEMATIC_COUNT_BASED) => self.count_based().or(interval),
            Some(RANDOM_N_OUT_OF_N) => self.n_out_of_n().or(interval),
            Some(UNIFORM_PROBABILISTIC) => self.probabilistic().or(interval),
            _ => self
                .n_out_of_n()
                .or_else(|| self.count_based())
                .or(interval)
                .or_else(|| self.probabilistic()),
        }
    }

    fn n_out_of_n(&self) -> Option<u64> {
        let size = self.size.filter(|v| *v > 0)?;
        let population = self.population.filter(|v| *v > 0)?;
        Some((population / size).max(1))
    }

    fn count_based(&self) -> Option<u64> {
        let interval = self.packet_interval.filter(|v| *v > 0)?;
        let space = self.packet_space?;
        Some((interval.saturating_add(space) / interval).max(1))
    }

    fn probabilistic(&self) -> Option<u64> {
        let p = self.probability.filter(|p| p.is_finite() && *p > 0.0 && *p <= 1.0)?;
        // A float-to-integer `as` saturates: a tiny probability gives u64::MAX.
        Some((1.0 / p).round() as u64)
    }
}

/// Fields of one options data record that the collector uses.
#[derive(Debug, Default)]
pub(crate) struct OptionsFields {
    sampling: SamplingFields,
    /// The ingress interface the record's scope names.
    interface: Option<u64>,
    pub system_init_ms: Option<u64>,
}

impl OptionsFields {
    /// Takes one non-scope field (or an IPFIX scope field that is no interface).
    pub fn apply(&mut self, spec: FieldSpec, value: &[u8]) {
        if spec.enterprise != 0 || self.sampling.apply(spec.id, value) {
            return;
        }
        if spec.id == 160 {
            first(&mut self.system_init_ms, value);
        }
    }

    /// Takes one IPFIX scope field: scope fields are Information Elements too.
    pub fn apply_ipfix_scope(&mut self, spec: FieldSpec, value: &[u8]) {
        if spec.enterprise == 0 && spec.id == INGRESS_INTERFACE {
            first(&mut self.interface, value);
        } else {
            self.apply(spec, value);
        }
    }

    /// Takes one field of an options record; `scope` marks an IPFIX scope field.
    pub fn apply_field(&mut self, spec: FieldSpec, value: &[u8], scope: bool) {
        if scope { self.apply_ipfix_scope(spec, value) } else { self.apply(spec, value) }
    }

    /// Takes one NetFlow v9 scope field (a scope type, not an Information Element).
    pub fn apply_v9_scope(&mut self, scope: &ScopeDataField) {
        if let ScopeDataField::Interface(value) = scope {
            first(&mut self.interface, value);
        }
    }

    fn key(&self) -> SamplerKey {
        match (self.sampling.selector_id, self.sampling.sampler_id, self.interface) {
            (Some(id), _, _) => SamplerKey::Selector(id),
            (None, Some(id), _) => SamplerKey::Sampler(id),
            (None, None, Some(ifindex)) => SamplerKey::Interface(ifindex),
            (None, None, None) => SamplerKey::Domain,
        }
    }
}

/// What a flow record says about its sampling, to find its rate.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SamplerRef {
    /// Rate from the record's own sampling IEs (IE 34/50 in the data template, …).
    pub own_rate: Option<u64>,
    /// FLOW_SAMPLER_ID / samplerId (48).
    pub sampler_id: Option<u64>,
    /// selectorId (302).
    pub selector_id: Option<u64>,
    /// ingressInterface (10).
    pub in_if: Option<u64>,
}

impl SamplerRef {
    /// The reference of a record with these sampling fields and ingress interface.
    pub fn new(fields: &SamplingFields, in_if: Option<u32>) -> Self {
        Self {
            own_rate: fields.rate(),
            sampler_id: fields.sampler_id,
            selector_id: fields.selector_id,
            in_if: in_if.map(u64::from),
        }
    }
}

/// A rate and the session datagram tick it was (re)announced in.
#[derive(Debug, Clone, Copy)]
struct Announced {
    rate: u64,
    tick: u64,
}

/// Sampling rates announced by one scope's options data.
#[derive(Debug, Default)]
pub(crate) struct SamplingTable {
    rates: SessionMap<SamplerKey, Announced>,
}

impl SamplingTable {
    /// Remembers the rate an options record announces, in datagram `tick`.
    pub fn learn(&mut self, options: &OptionsFields, tick: u64) {
        let Some(rate) = options.sampling.rate() else {
            return;
        };
        let key = options.key();
        if self.rates.len() < MAX_SAMPLERS || self.rates.contains_key(&key) {
            self.rates.insert(key, Announced { rate, tick });
        }
    }

    /// The rate for a flow record; `None` when unknown.
    #[inline]
    pub fn lookup(&self, record: &SamplerRef) -> Option<u64> {
        // An exporter that announces no rate (most do not sample) pays no lookup.
        if record.own_rate.is_some() || self.rates.is_empty() {
            return record.own_rate;
        }
        self.announced(record)
    }

    /// The rate announced for the sampler, selector, interface or domain of `record`.
    fn announced(&self, record: &SamplerRef) -> Option<u64> {
        let get = |key: Option<SamplerKey>| key.and_then(|k| self.rates.get(&k)).map(|a| a.rate);
        get(record.selector_id.map(SamplerKey::Selector))
            .or_else(|| get(record.sampler_id.map(SamplerKey::Sampler)))
            .or_else(|| get(record.in_if.map(SamplerKey::Interface)))
            .or_else(|| get(Some(SamplerKey::Domain)))
    }

    /// Forgets what was announced before datagram `tick` (the exporter restarted).
    pub fn forget_before(&mut self, tick: u64) {
        self.rates.retain(|_, announced| announced.tick >= tick);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(id: u16) -> FieldSpec {
        FieldSpec { id, enterprise: 0, length: 4 }
    }

    fn options(fields: &[(u16, u64)]) -> OptionsFields {
        let mut options = OptionsFields::default();
        for (id, value) in fields {
            options.apply(spec(*id), &value.to_be_bytes());
        }
        options
    }

    fn announce(table: &mut SamplingTable, fields: &[(u16, u64)]) {
        table.learn(&options(fields), 1);
    }

    fn selector(id: u64) -> SamplerRef {
        SamplerRef { selector_id: Some(id), ..Default::default() }
    }

    #[test]
    fn n_out_of_population_wins_over_packet_interval() {
        let mut table = SamplingTable::default();
        announce(&mut table, &[(302, 1), (304, 3), (305, 1), (309, 1), (310, 256)]);
        assert_eq!(table.lookup(&selector(1)), Some(256));
        assert_eq!(table.lookup(&selector(2)), None);
    }

    #[test]
    fn packet_interval_and_space_follow_rfc_5477() {
        let mut table = SamplingTable::default();
        announce(&mut table, &[(48, 7), (305, 1), (306, 99)]);
        let record = SamplerRef { sampler_id: Some(7), ..Default::default() };
        assert_eq!(table.lookup(&record), Some(100));
        assert_eq!(options(&[(305, 2), (306, 8), (304, 1)]).sampling.rate(), Some(5));
    }

    #[test]
    fn a_lone_packet_interval_is_no_rate() {
        // Cisco IOS-XR: random n-out-of-N with samplingPacketInterval 1, no population.
        assert_eq!(options(&[(302, 1), (304, 3), (305, 1)]).sampling.rate(), None);
        assert_eq!(options(&[(305, 1)]).sampling.rate(), None);
    }

    #[test]
    fn domain_wide_rate_and_in_record_rate() {
        let mut table = SamplingTable::default();
        announce(&mut table, &[(34, 1000)]);
        assert_eq!(table.lookup(&SamplerRef::default()), Some(1000));
        let record = SamplerRef { own_rate: Some(10), ..Default::default() };
        assert_eq!(table.lookup(&record), Some(10));
    }

    #[test]
    fn interface_scoped_rates_apply_by_ingress_interface() {
        let mut table = SamplingTable::default();
        let mut scoped = OptionsFields::default();
        scoped.apply_v9_scope(&ScopeDataField::Interface(vec![0, 0, 0, 3]));
        scoped.apply(spec(34), &64u32.to_be_bytes());
        table.learn(&scoped, 1);
        let on = |ifindex| SamplerRef { in_if: Some(ifindex), ..Default::default() };
        assert_eq!(table.lookup(&on(3)), Some(64));
        assert_eq!(table.lookup(&on(4)), None);
    }

    #[test]
    fn probability_inverts_in_both_float_widths() {
        let mut wide = OptionsFields::default();
        wide.apply(FieldSpec { id: 311, enterprise: 0, length: 8 }, &0.01f64.to_be_bytes());
        assert_eq!(wide.sampling.rate(), Some(100));
        let mut narrow = OptionsFields::default();
        narrow.apply(FieldSpec { id: 311, enterprise: 0, length: 4 }, &0.25f32.to_be_bytes());
        assert_eq!(narrow.sampling.rate(), Some(4));
        let mut bad = OptionsFields::default();
        bad.apply(FieldSpec { id: 311, enterprise: 0, length: 8 }, &1.5f64.to_be_bytes());
        assert_eq!(bad.sampling.rate(), None);
    }

    #[test]
    fn forgetting_keeps_what_the_current_datagram_announced() {
        let mut table = SamplingTable::default();
        table.learn(&options(&[(48, 1), (34, 10)]), 1);
        table.learn(&options(&[(48, 2), (34, 20)]), 5);
        table.forget_before(5);
        let sampler = |id| SamplerRef { sampler_id: Some(id), ..Default::default() };
        assert_eq!((table.lookup(&sampler(1)), table.lookup(&sampler(2))), (None, Some(20)));
    }
}
