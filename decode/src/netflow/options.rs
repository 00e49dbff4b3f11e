//! Options data: what the collector keeps from it (sampling rates, the exporter's
//! boot time) and the per-domain table the data records look rates up in.
//!
//! A rate announced by options data is keyed by the selector (IE 302 selectorId) or
//! sampler (IE 48 samplerId / FLOW_SAMPLER_ID) it names, or by the whole domain when
//! it names neither. A data record takes, in order: a rate carried in the record itself
//! (IE 34/50), the rate of its selectorId, of its samplerId, the domain's rate, else 0
//! (unknown).
//!
//! Rate from an options record, first that applies: samplingPopulation / samplingSize
//! (310/309, random n-out-of-N), (samplingPacketInterval + samplingPacketSpace) /
//! samplingPacketInterval (305/306, RFC 5477; with interval 1 this is 1 + space),
//! samplingInterval or samplerRandomInterval (34/50), 1 / samplingProbability (311).

use std::collections::HashMap;

use super::fields::{FieldSpec, SamplerRef, be_uint};

/// Sampler entries kept per scope; announcements past it are ignored (bounds memory
/// against exporters that invent ids).
const MAX_SAMPLERS: usize = 1024;

/// Which sampler a rate belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum SamplerKey {
    Domain,
    Sampler(u64),
    Selector(u64),
}

/// Fields of one options data record that the collector uses.
#[derive(Debug, Default)]
pub(crate) struct OptionsFields {
    sampler_id: Option<u64>,
    selector_id: Option<u64>,
    interval: Option<u64>,
    packet_interval: Option<u64>,
    packet_space: Option<u64>,
    size: Option<u64>,
    population: Option<u64>,
    probability: Option<f64>,
    pub system_init_ms: Option<u64>,
}

fn first(slot: &mut Option<u64>, bytes: &[u8]) {
    if slot.is_none() {
        *slot = be_uint(bytes);
    }
}

impl OptionsFields {
    pub fn apply(&mut self, spec: FieldSpec, value: &[u8]) {
        if spec.enterprise != 0 {
            return;
        }
        match spec.id {
            34 | 50 => first(&mut self.interval, value),
            48 => first(&mut self.sampler_id, value),
            160 => first(&mut self.system_init_ms, value),
            302 => first(&mut self.selector_id, value),
            305 => first(&mut self.packet_interval, value),
            306 => first(&mut self.packet_space, value),
            309 => first(&mut self.size, value),
            310 => first(&mut self.population, value),
            311 if self.probability.is_none() => {
                self.probability = value.try_into().ok().map(f64::from_be_bytes);
            }
            _ => {}
        }
    }

    /// The 1-in-N rate the record announces, if any.
    fn rate(&self) -> Option<u64> {
        let nonzero = |v: Option<u64>| v.filter(|v| *v > 0);
        if let (Some(size), Some(population)) = (nonzero(self.size), nonzero(self.population)) {
            return Some((population / size).max(1));
        }
        if let Some(interval) = nonzero(self.packet_interval) {
            let space = self.packet_space.unwrap_or(0);
            return Some((interval.saturating_add(space) / interval).max(1));
        }
        if let Some(interval) = nonzero(self.interval) {
            return Some(interval);
        }
        let probability = self.probability.filter(|p| *p > 0.0 && *p <= 1.0)?;
        Some((1.0 / probability).round() as u64)
    }

    fn key(&self) -> SamplerKey {
        match (self.selector_id, self.sampler_id) {
            (Some(id), _) => SamplerKey::Selector(id),
            (None, Some(id)) => SamplerKey::Sampler(id),
            (None, None) => SamplerKey::Domain,
        }
    }
}

/// Sampling rates announced by one scope's options data.
#[derive(Debug, Default)]
pub(crate) struct SamplingTable {
    rates: HashMap<SamplerKey, u64>,
}

impl SamplingTable {
    /// Remembers the rate an options record announces.
    pub fn learn(&mut self, options: &OptionsFields) {
        let Some(rate) = options.rate() else {
            return;
        };
        let key = options.key();
        if self.rates.len() < MAX_SAMPLERS || self.rates.contains_key(&key) {
            self.rates.insert(key, rate);
        }
    }

    /// The rate for a data record; 0 when unknown.
    pub fn rate_for(&self, sampler: SamplerRef) -> u64 {
        if let Some(interval) = sampler.interval.filter(|v| *v > 0) {
            return interval;
        }
        let lookup = |key: Option<SamplerKey>| key.and_then(|k| self.rates.get(&k).copied());
        lookup(sampler.selector_id.map(SamplerKey::Selector))
            .or_else(|| lookup(sampler.sampler_id.map(SamplerKey::Sampler)))
            .or_else(|| lookup(Some(SamplerKey::Domain)))
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(id: u16) -> FieldSpec {
        FieldSpec { id, enterprise: 0, length: 4 }
    }

    fn announce(table: &mut SamplingTable, fields: &[(u16, u64)]) {
        let mut options = OptionsFields::default();
        for (id, value) in fields {
            options.apply(spec(*id), &value.to_be_bytes());
        }
        table.learn(&options);
    }

    #[test]
    fn n_out_of_population_wins_over_packet_interval() {
        let mut table = SamplingTable::default();
        announce(&mut table, &[(302, 1), (305, 1), (309, 1), (310, 256)]);
        let record = SamplerRef { selector_id: Some(1), ..Default::default() };
        assert_eq!(table.rate_for(record), 256);
        assert_eq!(table.rate_for(SamplerRef { selector_id: Some(2), ..Default::default() }), 0);
    }

    #[test]
    fn packet_interval_and_space_follow_rfc_5477() {
        let mut table = SamplingTable::default();
        announce(&mut table, &[(48, 7), (305, 1), (306, 99)]);
        let record = SamplerRef { sampler_id: Some(7), ..Default::default() };
        assert_eq!(table.rate_for(record), 100);
    }

    #[test]
    fn domain_wide_rate_and_in_record_interval() {
        let mut table = SamplingTable::default();
        announce(&mut table, &[(34, 1000)]);
        assert_eq!(table.rate_for(SamplerRef::default()), 1000);
        let record = SamplerRef { interval: Some(10), ..Default::default() };
        assert_eq!(table.rate_for(record), 10);
    }

    #[test]
    fn probability_inverts() {
        let mut options = OptionsFields::default();
        options.apply(FieldSpec { id: 311, enterprise: 0, length: 8 }, &0.01f64.to_be_bytes());
        assert_eq!(options.rate(), Some(100));
    }
}
