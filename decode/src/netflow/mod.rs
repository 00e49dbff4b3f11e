//! NetFlow v5, v9 and IPFIX.
//!
//! netflow_parser 1.0.6 parses headers, templates and records and keeps the template
//! caches; this module scopes those caches, maps records to `FlowMessage`s and covers
//! the parser's gaps (wire-contract §5):
//!
//! - **Scope**: one parser per (protocol, UDP source port, observation domain / v9
//!   source id) of the exporter (RFC 3954 §5.1, RFC 7011 §8), at most [`MAX_SCOPES`]
//!   per exporter, the least recently used giving way.
//! - **One set at a time**: sets are walked here and each is parsed as its own
//!   datagram (original header + that set), so a malformed set costs only itself (and,
//!   when its length cannot be trusted, the sets after it): netflow_parser alone would
//!   drop the whole v9 datagram, or silently cut an IPFIX message.
//! - **No silent record limit**: `max_records_per_flowset` is raised past the most
//!   records a set can hold; the decoded-output limits stay at netflow_parser's
//!   defaults (65,536 values / 4 MiB per set), over which a set is a counted error.
//! - **Lifecycle events** from our own record of the templates each parser holds
//!   ([`templates`]): learned (new id or layout only, not refreshes), collision
//!   (reused id, new layout), evicted, withdrawn, missing (once per template until it
//!   is known).
//! - **Pending flows** are ours ([`pending`]): replayed with their own header.
//! - **Records**: netflow_parser's values are turned back into wire bytes and mapped
//!   by Information Element ([`fields`]); reduced-size integers of any width decode;
//!   an IPFIX set cut short by an empty variable-length value is finished here.
//! - **Options data** is consumed (sampling rates, system init time), never emitted.

mod fields;
mod options;
mod pending;
mod scope;
mod templates;
mod time;
mod v5;
mod wire;

use std::collections::HashMap;
use std::time::Duration;

use flowpb::FlowMessage;
use netflow_parser::{NetflowParser, NetflowParserBuilder};

use crate::event::{LifecycleEvent, Protocol};
use crate::report::{CacheStats, DatagramReport, DecodeError, SessionStats};
use crate::{Datagram, ExporterSession, address_bytes};

use pending::{Held, PendingCache, PendingEntry};
use scope::{Arrival, Buffers, Scope, SetFailure};
use wire::{ExportHeader, FIRST_DATA_SET, SetRef, SetWalk, single_set_datagram};

/// Template scopes (protocol, source port, domain) kept per exporter. Real exporters
/// use a handful; the cap bounds memory against datagrams that invent domains.
pub const MAX_SCOPES: usize = 256;

/// More records than a 65,535-byte set can hold (each record takes at least one byte),
/// so netflow_parser's per-set record limit never drops a record.
const MAX_RECORDS_PER_SET: usize = 65_536;

/// Per-exporter NetFlow/IPFIX limits, from the listener's config entry.
#[derive(Debug, Clone)]
pub struct NetflowSettings {
    /// Templates kept per exporter scope (`max_templates`). netflow_parser applies it to
    /// each of its per-kind caches (data templates and options templates separately).
    pub max_templates: usize,
    /// Largest field count accepted in a template (`max_template_fields`).
    pub max_template_fields: usize,
    /// The pending-flows cache; `None` disables it (data before its template is dropped and counted).
    pub pending: Option<PendingFlowSettings>,
}

/// Limits of the cache for data that arrives before its template (`pending_flows`).
#[derive(Debug, Clone)]
pub struct PendingFlowSettings {
    /// (scope, template id) queues held per exporter.
    pub max_pending_flows: usize,
    /// Data sets held per queue.
    pub max_entries_per_template: usize,
    /// Largest data set body held.
    pub max_entry_size_bytes: usize,
    /// How long a held data set waits for its template.
    pub ttl: Duration,
}

/// A template scope of one exporter (RFC 3954 §5.1, RFC 7011 §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ScopeKey {
    pub protocol: Protocol,
    pub port: u16,
    pub domain: u32,
}

/// Counters of one protocol, for [`SessionStats`].
#[derive(Debug, Default, Clone, Copy)]
struct ProtocolCounters {
    seen: bool,
    hits: u64,
    misses: u64,
    evictions: u64,
    collisions: u64,
}

/// One exporter's NetFlow/IPFIX decoder state.
pub struct NetflowSession {
    settings: NetflowSettings,
    parser_builder: NetflowParserBuilder,
    v5_parser: NetflowParser,
    scopes: HashMap<ScopeKey, Scope>,
    pending: Option<PendingCache>,
    /// Counters of V5, V9 and IPFIX, in that order.
    counters: [ProtocolCounters; 3],
    buffers: Buffers,
    /// Datagrams decoded, as a clock for least-recently-used scopes.
    tick: u64,
}

fn counter_index(protocol: Protocol) -> usize {
    match protocol {
        Protocol::V5 => 0,
        Protocol::V9 => 1,
        _ => 2,
    }
}

const COUNTED_PROTOCOLS: [Protocol; 3] = [Protocol::V5, Protocol::V9, Protocol::Ipfix];

impl NetflowSession {
    pub fn new(settings: &NetflowSettings) -> Self {
        let parser_builder = NetflowParser::builder()
            .with_allowed_versions(&[9, 10])
            .with_cache_size(settings.max_templates.max(1))
            .with_max_field_count(settings.max_template_fields)
            .with_max_records_per_flowset(MAX_RECORDS_PER_SET)
            .with_max_decoded_field_values_per_message(
                netflow_parser::DEFAULT_MAX_DECODED_FIELD_VALUES_PER_MESSAGE,
            )
            .with_max_decoded_field_payload_bytes_per_message(
                netflow_parser::DEFAULT_MAX_DECODED_FIELD_PAYLOAD_BYTES_PER_MESSAGE,
            );
        Self {
            settings: settings.clone(),
            parser_builder,
            v5_parser: build_parser(NetflowParser::builder().with_allowed_versions(&[5])),
            scopes: HashMap::new(),
            pending: settings.pending.clone().map(PendingCache::new),
            counters: Default::default(),
            buffers: Buffers::default(),
            tick: 0,
        }
    }

    fn counters(&mut self, protocol: Protocol) -> &mut ProtocolCounters {
        &mut self.counters[counter_index(protocol)]
    }

    fn decode_templated(
        &mut self,
        version: u16,
        datagram: Datagram<'_>,
        out: &mut Vec<FlowMessage>,
        report: &mut DatagramReport,
    ) {
        let (header, sets) = match ExportHeader::parse(datagram.payload, version) {
            Ok(parsed) => parsed,
            Err(error) => {
                self.counters(if version == 9 { Protocol::V9 } else { Protocol::Ipfix }).seen =
                    true;
                report.errors.push(error);
                return;
            }
        };
        self.counters(header.protocol).seen = true;
        let key = ScopeKey {
            protocol: header.protocol,
            port: datagram.source.port(),
            domain: header.domain,
        };
        self.touch_scope(key, report);
        let sampler_address = address_bytes(datagram.source.ip());
        let arrival = Arrival {
            source: datagram.source,
            received_ns: datagram.received_ns,
            sampler_address: &sampler_address,
        };
        let header_bytes = &datagram.payload[..header.header_len()];
        for set in SetWalk::new(header.protocol, sets) {
            match set {
                Ok(set) if is_template_set(header.protocol, set.id) => {
                    self.template_set(key, header_bytes, set, datagram.received_ns, out, report)
                }
                Ok(set) if set.id >= FIRST_DATA_SET => {
                    self.data_set(key, &header, header_bytes, set, &arrival, out, report)
                }
                // Reserved set ids (v9 2..=255; IPFIX 0, 1, 4..=255) are skipped.
                Ok(_) => {}
                Err(error) => report.errors.push(error),
            }
        }
    }

    /// Finds or creates the scope, evicting the least recently used one at the cap.
    fn touch_scope(&mut self, key: ScopeKey, report: &mut DatagramReport) {
        self.tick += 1;
        if !self.scopes.contains_key(&key) {
            if self.scopes.len() >= MAX_SCOPES {
                self.evict_oldest_scope(report);
            }
            let parser = build_parser(self.parser_builder.clone());
            self.scopes.insert(key, Scope::new(key.protocol, key.domain, parser));
        }
        if let Some(scope) = self.scopes.get_mut(&key) {
            scope.last_used = self.tick;
        }
    }

    fn evict_oldest_scope(&mut self, report: &mut DatagramReport) {
        let Some(oldest) = self.scopes.iter().min_by_key(|(_, s)| s.last_used).map(|(k, _)| *k)
        else {
            return;
        };
        let Some(scope) = self.scopes.remove(&oldest) else {
            return;
        };
        let ids = scope.layouts.all_ids();
        self.counters(oldest.protocol).evictions += ids.len() as u64;
        for template_id in ids {
            report.events.push(LifecycleEvent::TemplateEvicted {
                protocol: oldest.protocol,
                domain: oldest.domain,
                template_id,
            });
        }
        if let Some(pending) = self.pending.as_mut() {
            for template_id in pending.drop_scope(oldest) {
                report.events.push(LifecycleEvent::PendingDropped {
                    protocol: oldest.protocol,
                    domain: oldest.domain,
                    template_id,
                    reason: "scope_evicted",
                });
            }
        }
    }

    fn template_set(
        &mut self,
        key: ScopeKey,
        header_bytes: &[u8],
        set: SetRef<'_>,
        now_ns: u64,
        out: &mut Vec<FlowMessage>,
        report: &mut DatagramReport,
    ) {
        let max_fields = self.settings.max_template_fields;
        let Some(scope) = self.scopes.get_mut(&key) else {
            return;
        };
        let changes = scope.template_set(header_bytes, set, max_fields, &mut self.buffers, report);
        let counters = self.counters(key.protocol);
        counters.collisions += changes.collisions;
        counters.evictions += changes.evictions;
        for template_id in changes.installed {
            self.replay_pending(key, template_id, now_ns, out, report);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn data_set(
        &mut self,
        key: ScopeKey,
        header: &ExportHeader,
        header_bytes: &[u8],
        set: SetRef<'_>,
        arrival: &Arrival<'_>,
        out: &mut Vec<FlowMessage>,
        report: &mut DatagramReport,
    ) {
        let Some(scope) = self.scopes.get_mut(&key) else {
            return;
        };
        single_set_datagram(header_bytes, set.whole, &mut self.buffers.datagram);
        let outcome = if scope.layouts.get(set.id).is_some() {
            let Buffers { datagram, value } = &mut self.buffers;
            scope.decode_data_set(datagram, header, arrival, value, out, report)
        } else {
            Err(SetFailure::MissingTemplate)
        };
        match outcome {
            Ok(_) => self.counters(key.protocol).hits += 1,
            Err(SetFailure::Error(error)) => {
                self.counters(key.protocol).hits += 1;
                report.errors.push(error);
            }
            Err(SetFailure::MissingTemplate) => {
                self.counters(key.protocol).misses += 1;
                self.missing_template(key, set, arrival, report);
            }
        }
    }

    /// Data for a template the scope does not hold: one MissingTemplate event per
    /// template until it is learned, and the set is held for it or counted as dropped.
    fn missing_template(
        &mut self,
        key: ScopeKey,
        set: SetRef<'_>,
        arrival: &Arrival<'_>,
        report: &mut DatagramReport,
    ) {
        let (protocol, domain, template_id) = (key.protocol, key.domain, set.id);
        if let Some(scope) = self.scopes.get_mut(&key) {
            // A layout without a parser template means the parser lost it: forget it.
            scope.layouts.remove(template_id);
            if scope.first_miss(template_id) {
                report.events.push(LifecycleEvent::MissingTemplate {
                    protocol,
                    domain,
                    template_id,
                });
            }
        }
        let held = self.pending.as_mut().map(|pending| {
            let entry = PendingEntry {
                datagram: self.buffers.datagram.clone(),
                received_ns: arrival.received_ns,
                source: arrival.source,
            };
            pending.hold(key, template_id, set.body.len(), entry)
        });
        match held {
            Some(Held::Yes { evicted }) => {
                report.records_pending += 1;
                if let Some((scope, template_id)) = evicted {
                    report.events.push(LifecycleEvent::PendingDropped {
                        protocol: scope.protocol,
                        domain: scope.domain,
                        template_id,
                        reason: "evicted",
                    });
                }
            }
            Some(Held::Refused) | None => {
                report.errors.push(DecodeError::NoTemplate { protocol, template_id })
            }
        }
    }

    /// Decodes the data held for a template that just arrived, each set with the
    /// header and receive time it came with.
    fn replay_pending(
        &mut self,
        key: ScopeKey,
        template_id: u16,
        now_ns: u64,
        out: &mut Vec<FlowMessage>,
        report: &mut DatagramReport,
    ) {
        let Some(pending) = self.pending.as_mut() else {
            return;
        };
        let Some(entries) = pending.take(key, template_id) else {
            return;
        };
        let stale = entries.iter().filter(|e| pending.is_stale(e.received_ns, now_ns)).count();
        let Some(scope) = self.scopes.get_mut(&key) else {
            return;
        };
        let version = if key.protocol == Protocol::V9 { 9 } else { 10 };
        let (mut records, mut failed) = (0, 0);
        for entry in entries.iter().filter(|e| !pending.is_stale(e.received_ns, now_ns)) {
            let sampler_address = address_bytes(entry.source.ip());
            let arrival = Arrival {
                source: entry.source,
                received_ns: entry.received_ns,
                sampler_address: &sampler_address,
            };
            let decoded =
                ExportHeader::parse(&entry.datagram, version).ok().and_then(|(header, _)| {
                    let value = &mut self.buffers.value;
                    scope
                        .decode_data_set(&entry.datagram, &header, &arrival, value, out, report)
                        .ok()
                });
            match decoded {
                Some(outcome) => records += outcome.flows + outcome.options,
                None => failed += 1,
            }
        }
        let (protocol, domain) = (key.protocol, key.domain);
        if records > 0 {
            report.events.push(LifecycleEvent::PendingReplayed {
                protocol,
                domain,
                template_id,
                records,
            });
        }
        for (count, reason) in [(stale, "ttl"), (failed, "replay_failed")] {
            if count > 0 {
                report.events.push(LifecycleEvent::PendingDropped {
                    protocol,
                    domain,
                    template_id,
                    reason,
                });
            }
        }
    }
}

/// Builds a parser from settings validated at start-up (cache size ≥ 1, limits > 0),
/// which netflow_parser cannot reject; its defaults stand in should it ever.
fn build_parser(builder: NetflowParserBuilder) -> NetflowParser {
    builder.build().unwrap_or_default()
}

fn is_template_set(protocol: Protocol, id: u16) -> bool {
    match protocol {
        Protocol::Ipfix => {
            matches!(id, wire::IPFIX_TEMPLATE_SET | wire::IPFIX_OPTIONS_TEMPLATE_SET)
        }
        _ => matches!(id, wire::V9_TEMPLATE_SET | wire::V9_OPTIONS_TEMPLATE_SET),
    }
}

impl ExporterSession for NetflowSession {
    fn decode(&mut self, datagram: Datagram<'_>, out: &mut Vec<FlowMessage>) -> DatagramReport {
        let mut report = DatagramReport::default();
        let payload = datagram.payload;
        match payload.get(..2).map(|v| u16::from_be_bytes([v[0], v[1]])) {
            Some(5) => {
                self.counters(Protocol::V5).seen = true;
                let sampler_address = address_bytes(datagram.source.ip());
                v5::decode(&mut self.v5_parser, datagram, &sampler_address, out, &mut report);
            }
            Some(version @ (9 | 10)) => self.decode_templated(version, datagram, out, &mut report),
            Some(version) => report.errors.push(DecodeError::UnsupportedVersion { version }),
            None => report
                .errors
                .push(DecodeError::TruncatedHeader { protocol: Protocol::V9, len: payload.len() }),
        }
        report
    }

    fn expire(&mut self, now_ns: u64) -> Vec<LifecycleEvent> {
        let Some(pending) = self.pending.as_mut() else {
            return Vec::new();
        };
        pending
            .expire(now_ns)
            .into_iter()
            .map(|(scope, template_id)| LifecycleEvent::PendingDropped {
                protocol: scope.protocol,
                domain: scope.domain,
                template_id,
                reason: "ttl",
            })
            .collect()
    }

    fn stats(&self) -> SessionStats {
        let caches = COUNTED_PROTOCOLS
            .iter()
            .filter(|p| self.counters[counter_index(**p)].seen)
            .map(|protocol| {
                let counters = self.counters[counter_index(*protocol)];
                let templated = *protocol != Protocol::V5;
                CacheStats {
                    protocol: Some(*protocol),
                    templates: self
                        .scopes
                        .iter()
                        .filter(|(key, _)| key.protocol == *protocol)
                        .map(|(_, scope)| scope.layouts.len())
                        .sum(),
                    max_templates: if templated { self.settings.max_templates } else { 0 },
                    pending_flows: self
                        .pending
                        .as_ref()
                        .map_or(0, |p| p.queues_where(|scope| scope.protocol == *protocol)),
                    max_pending_flows: match (&self.pending, templated) {
                        (Some(p), true) => p.max_queues(),
                        _ => 0,
                    },
                    template_hits: counters.hits,
                    template_misses: counters.misses,
                    evictions: counters.evictions,
                    collisions: counters.collisions,
                    expired: 0,
                }
            })
            .collect();
        SessionStats { caches }
    }
}
