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
//! - **Records** are split straight from the wire by the compiled layout of their
//!   template ([`templates`]), with netflow_parser asked only whether it holds the
//!   template, and each field's bytes mapped by Information Element ([`fields`]); a
//!   data template's mapping is worked out once, when it is installed ([`plan`]:
//!   integer fields read into one slot array, [`slots`], with no per-field lookup):
//!   reduced-size integers of any width decode, empty variable-length values (where
//!   netflow_parser stops a set) do not end the set, flags keep every bit the
//!   exporter sent. `layout_equivalence` proves the split equal to netflow_parser's
//!   decode on every record of the shared router captures. v9 options records still
//!   go through netflow_parser (it knows the v9 scope types).
//! - **Options data** is consumed (sampling rates, system init time), never emitted.
//!
//! Decode fidelity (see each module): sampling rates from the v5 header, options data
//! or the record itself, resolved once the whole datagram is decoded (so options data
//! later in the same datagram still applies to the flows before it), then the
//! operator's [`SamplingPolicy`] ([`options`], [`crate::sampling`], [`fidelity`]);
//! times from every IPFIX time element with a sanity check ([`time`], [`fidelity`]),
//! IPFIX sysUpTime times also resolved once the datagram is decoded (so
//! systemInitTimeMilliseconds announced later in it still applies); loss per
//! protocol rule, exporter restarts and stale datagrams ([`sequence`]); restarts drop
//! the previous incarnation's templates, pending data and sampling state ([`scope`]).

mod fidelity;
mod fields;
mod options;
mod pending;
mod plan;
mod scope;
mod sequence;
mod slots;
mod templates;
mod time;
mod v5;
mod wire;

#[cfg(test)]
mod layout_equivalence;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use flowpb::FlowMessage;
use netflow_parser::{NetflowParser, NetflowParserBuilder};

use crate::event::{LifecycleEvent, Protocol};
use crate::report::{CacheStats, DatagramReport, DecodeError, FidelityStats, SessionStats};
use crate::{Datagram, ExporterSession, FlowBuffer, SessionMap, address_bytes};

pub use crate::sampling::{SamplingOverride, SamplingPolicy, SamplingPolicyError};

use crate::sampling::PolicyCache;
pub use pending::PendingMemory;
use pending::{Held, PendingCache, PendingEntry};
use scope::{Arrival, Buffers, Emit, Scope, SetFailure, Unresolved};
use sequence::{HeaderClock, Stream, Unit, Verdict};
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
    /// Default and per-exporter sampling rates (`sampling`).
    pub sampling: SamplingPolicy,
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
    /// Bytes this exporter's held data sets may take (`pending_flows.max_bytes`).
    pub max_bytes: usize,
    /// The bytes every exporter's held data sets take together, and their bound
    /// (`pending_flows_max_bytes`): one [`PendingMemory`] shared by all sessions.
    pub memory: Arc<PendingMemory>,
}

/// A template scope of one exporter (RFC 3954 §5.1, RFC 7011 §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ScopeKey {
    pub protocol: Protocol,
    pub port: u16,
    pub domain: u32,
}

/// A NetFlow v5 flow sequence: source port and engine (type << 8 | id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct V5Key {
    port: u16,
    engine: u32,
}

/// A v5 flow sequence's state and when it was last used.
#[derive(Debug)]
struct V5Stream {
    stream: Stream,
    last_used: u64,
}

/// Counters of one protocol, for [`SessionStats`].
#[derive(Debug, Default, Clone, Copy)]
struct ProtocolCounters {
    seen: bool,
    hits: u64,
    misses: u64,
    evictions: u64,
    collisions: u64,
    /// Pending data sets decoded once their template came ("Data Hits").
    pending_replayed: u64,
    /// Pending data sets given up ("Data Misses").
    pending_dropped: u64,
}

/// One exporter's NetFlow/IPFIX decoder state.
pub struct NetflowSession {
    settings: NetflowSettings,
    parser_builder: NetflowParserBuilder,
    v5_parser: NetflowParser,
    scopes: SessionMap<ScopeKey, Scope>,
    pending: Option<PendingCache>,
    /// Counters of V5, V9 and IPFIX, in that order.
    counters: [ProtocolCounters; 3],
    buffers: Buffers,
    /// Datagrams decoded, as a clock for least-recently-used scopes and to date
    /// templates, announced rates and pending data (a restart drops older ones).
    tick: u64,
    v5_streams: SessionMap<V5Key, V5Stream>,
    /// Flows of the current datagram still without a sampling rate or times.
    unresolved: Vec<Unresolved>,
    /// The policy as it applies to this exporter, worked out on its first datagram.
    exporter_policy: PolicyCache,
    fidelity: FidelityStats,
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
            scopes: SessionMap::default(),
            pending: settings.pending.clone().map(PendingCache::new),
            counters: Default::default(),
            buffers: Buffers::default(),
            tick: 0,
            v5_streams: SessionMap::default(),
            unresolved: Vec::new(),
            exporter_policy: PolicyCache::default(),
            fidelity: FidelityStats::default(),
        }
    }

    /// Gives the flows of the datagram their final sampling rate, times and time checks:
    /// first what options data announced later in the datagram (rates, IPFIX
    /// systemInitTimeMilliseconds), then the policy.
    fn finish_datagram(
        &mut self,
        exporter: IpAddr,
        first: usize,
        out: &mut [FlowMessage],
        report: &mut DatagramReport,
    ) {
        for pending in self.unresolved.drain(..) {
            if let (Some(scope), Some(flow)) =
                (self.scopes.get(&pending.scope), out.get_mut(pending.index))
            {
                pending.resolve(scope, flow);
            }
        }
        let policy = self.exporter_policy.get(&self.settings.sampling, exporter);
        fidelity::finish_flows(out.get_mut(first..).unwrap_or_default(), policy, report);
    }

    /// A NetFlow v5 datagram: restart check, decode, then loss accounting.
    fn decode_v5(
        &mut self,
        datagram: Datagram<'_>,
        out: &mut FlowBuffer,
        report: &mut DatagramReport,
    ) {
        self.counters(Protocol::V5).seen = true;
        let sampler_address = address_bytes(datagram.source.ip());
        let Some(peek) = v5::peek(datagram.payload) else {
            v5::decode(&mut self.v5_parser, datagram, &sampler_address, out, report);
            return;
        };
        let key = V5Key { port: datagram.source.port(), engine: peek.engine };
        let stream = self.v5_stream(key);
        match stream.check(peek.sequence, Some(peek.clock)) {
            Verdict::Stale => {
                let error =
                    DecodeError::PreviousIncarnation { protocol: Protocol::V5, domain: key.engine };
                report.errors.push(error);
                return;
            }
            Verdict::Restarted => report.events.push(LifecycleEvent::ExporterRestarted {
                protocol: Protocol::V5,
                domain: key.engine,
            }),
            Verdict::Continue => {}
        }
        let (flows_before, errors_before) = (out.len(), report.errors.len());
        v5::decode(&mut self.v5_parser, datagram, &sampler_address, out, report);
        let decoded = out.len() - flows_before;
        let count = (report.errors.len() == errors_before && decoded == usize::from(peek.count))
            .then_some(u32::from(peek.count));
        let lost = self.v5_stream(key).advance(peek.sequence, count);
        report.lost_records = report.lost_records.saturating_add(lost);
    }

    /// The v5 stream of `key`, created on first use; the least recently used gives
    /// way at [`MAX_SCOPES`].
    fn v5_stream(&mut self, key: V5Key) -> &mut Stream {
        let tick = self.tick;
        if !self.v5_streams.contains_key(&key) && self.v5_streams.len() >= MAX_SCOPES {
            let oldest = self.v5_streams.iter().min_by_key(|(_, s)| s.last_used).map(|(k, _)| *k);
            if let Some(oldest) = oldest {
                self.v5_streams.remove(&oldest);
            }
        }
        let entry = self
            .v5_streams
            .entry(key)
            .or_insert_with(|| V5Stream { stream: Stream::new(Unit::Records), last_used: tick });
        entry.last_used = tick;
        &mut entry.stream
    }

    /// Drops what the exporter's previous incarnation left in a scope (templates,
    /// announced rates, pending data from before this datagram) and reports the
    /// restart once. `at_header`: seen before any set of the datagram was decoded.
    fn restart_scope(&mut self, key: ScopeKey, at_header: bool, report: &mut DatagramReport) {
        let tick = self.tick;
        if let Some(scope) = self.scopes.get_mut(&key) {
            scope.restart(tick, at_header);
        }
        let (protocol, domain) = (key.protocol, key.domain);
        report.events.push(LifecycleEvent::ExporterRestarted { protocol, domain });
        let dropped = self.pending.as_mut().map(|p| p.drop_scope_before(key, tick));
        for template_id in dropped.unwrap_or_default() {
            report.events.push(LifecycleEvent::PendingDropped {
                protocol,
                domain,
                template_id,
                reason: "exporter_restarted",
            });
        }
    }

    fn counters(&mut self, protocol: Protocol) -> &mut ProtocolCounters {
        &mut self.counters[counter_index(protocol)]
    }

    fn decode_templated(&mut self, version: u16, datagram: Datagram<'_>, emit: &mut Emit<'_>) {
        let (header, sets) = match ExportHeader::parse(datagram.payload, version) {
            Ok(parsed) => parsed,
            Err(error) => {
                self.counters(if version == 9 { Protocol::V9 } else { Protocol::Ipfix }).seen =
                    true;
                emit.report.errors.push(error);
                return;
            }
        };
        self.counters(header.protocol).seen = true;
        let key = ScopeKey {
            protocol: header.protocol,
            port: datagram.source.port(),
            domain: header.domain,
        };
        self.touch_scope(key, emit.report);
        if !self.check_restart(key, &header, emit.report) {
            return;
        }
        let sampler_address = address_bytes(datagram.source.ip());
        let arrival = Arrival {
            source: datagram.source,
            received_ns: datagram.received_ns,
            sampler_address: &sampler_address,
        };
        let header_bytes = &datagram.payload[..header.header_len()];
        // Data records of this message, for IPFIX loss accounting (None: unknown).
        let mut records = Some(0u32);
        let mut walk = SetWalk::new(header.protocol, sets).peekable();
        while let Some(set) = walk.next() {
            emit.later_sets = walk.peek().is_some();
            match set {
                Ok(set) if is_template_set(header.protocol, set.id) => {
                    self.template_set(key, header_bytes, set, datagram.received_ns, emit)
                }
                Ok(set) if set.id >= FIRST_DATA_SET => {
                    let decoded = self.data_set(key, &header, header_bytes, set, &arrival, emit);
                    records = records.zip(decoded).map(|(a, b)| a.saturating_add(b));
                }
                // Reserved set ids (v9 2..=255; IPFIX 0, 1, 4..=255) are skipped.
                Ok(_) => {}
                Err(error) => {
                    emit.report.errors.push(error);
                    records = None;
                }
            }
            if self.scopes.get_mut(&key).is_some_and(Scope::take_restart_request) {
                self.restart_scope(key, false, emit.report);
            }
        }
        let count = if header.protocol == Protocol::V9 { Some(1) } else { records };
        if let Some(scope) = self.scopes.get_mut(&key) {
            let lost = scope.stream.advance(header.sequence, count);
            match header.protocol {
                Protocol::V9 => {
                    emit.report.sequence_gap = emit.report.sequence_gap.saturating_add(lost)
                }
                _ => emit.report.lost_records = emit.report.lost_records.saturating_add(lost),
            }
        }
    }

    /// The header check of a v9/IPFIX datagram: a restart resets the scope first; a
    /// datagram from before the last restart is skipped (`false`).
    fn check_restart(
        &mut self,
        key: ScopeKey,
        header: &ExportHeader,
        report: &mut DatagramReport,
    ) -> bool {
        let clock = header
            .sys_uptime_ms
            .map(|sys_uptime_ms| HeaderClock { export_ms: header.export_ms, sys_uptime_ms });
        let Some(scope) = self.scopes.get_mut(&key) else {
            return false;
        };
        match scope.stream.check(header.sequence, clock) {
            Verdict::Continue => true,
            Verdict::Restarted => {
                self.restart_scope(key, true, report);
                true
            }
            Verdict::Stale => {
                let (protocol, domain) = (key.protocol, key.domain);
                report.errors.push(DecodeError::PreviousIncarnation { protocol, domain });
                false
            }
        }
    }

    /// Finds or creates the scope, evicting the least recently used one at the cap.
    fn touch_scope(&mut self, key: ScopeKey, report: &mut DatagramReport) {
        if !self.scopes.contains_key(&key) {
            if self.scopes.len() >= MAX_SCOPES {
                self.evict_oldest_scope(report);
            }
            let parser = build_parser(self.parser_builder.clone());
            self.scopes.insert(key, Scope::new(key, parser));
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
        emit: &mut Emit<'_>,
    ) {
        let max_fields = self.settings.max_template_fields;
        let Some(scope) = self.scopes.get_mut(&key) else {
            return;
        };
        let buffers = &mut self.buffers;
        let changes =
            scope.template_set(header_bytes, set, max_fields, buffers, emit.tick, emit.report);
        let counters = self.counters(key.protocol);
        counters.collisions += changes.collisions;
        counters.evictions += changes.evictions;
        for template_id in changes.installed {
            self.replay_pending(key, template_id, now_ns, emit);
        }
    }

    /// Decodes one data set; returns how many records it held (`None`: unknown, as
    /// for a set held for its template or one that failed).
    fn data_set(
        &mut self,
        key: ScopeKey,
        header: &ExportHeader,
        header_bytes: &[u8],
        set: SetRef<'_>,
        arrival: &Arrival<'_>,
        emit: &mut Emit<'_>,
    ) -> Option<u32> {
        let scope = self.scopes.get_mut(&key)?;
        let outcome = if scope.layouts.get(set.id).is_some() {
            scope.decode_data_set(header_bytes, set.whole, header, arrival, &mut self.buffers, emit)
        } else {
            Err(SetFailure::MissingTemplate)
        };
        match outcome {
            Ok(outcome) => {
                self.counters(key.protocol).hits += 1;
                u32::try_from(outcome.flows + outcome.options).ok()
            }
            Err(SetFailure::Error(error)) => {
                self.counters(key.protocol).hits += 1;
                emit.report.errors.push(error);
                None
            }
            Err(SetFailure::MissingTemplate) => {
                self.counters(key.protocol).misses += 1;
                self.missing_template(key, header_bytes, set, arrival, emit.report);
                None
            }
        }
    }

    /// Data for a template the scope does not hold: one MissingTemplate event per
    /// template until it is learned, and the set is held for it or counted as dropped.
    fn missing_template(
        &mut self,
        key: ScopeKey,
        header_bytes: &[u8],
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
            let mut datagram = Vec::with_capacity(header_bytes.len() + set.whole.len());
            single_set_datagram(header_bytes, set.whole, &mut datagram);
            let entry = PendingEntry {
                datagram,
                received_ns: arrival.received_ns,
                source: arrival.source,
                tick: self.tick,
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
            Some(Held::Refused(Some(cap))) => {
                report.errors.push(DecodeError::PendingMemoryFull { protocol, template_id, cap })
            }
            Some(Held::Refused(None)) | None => {
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
        emit: &mut Emit<'_>,
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
                    let (header_bytes, set) =
                        entry.datagram.split_at_checked(header.header_len())?;
                    let buffers = &mut self.buffers;
                    scope.decode_data_set(header_bytes, set, &header, &arrival, buffers, emit).ok()
                });
            match decoded {
                Some(outcome) => records += outcome.flows + outcome.options,
                None => failed += 1,
            }
        }
        let (protocol, domain) = (key.protocol, key.domain);
        let report = &mut *emit.report;
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

impl NetflowSession {
    /// One `PendingDropped` event per queue that lost entries, counted.
    fn pending_dropped(
        &mut self,
        queues: Vec<(ScopeKey, u16)>,
        reason: &'static str,
    ) -> Vec<LifecycleEvent> {
        let events: Vec<LifecycleEvent> = queues
            .into_iter()
            .map(|(scope, template_id)| LifecycleEvent::PendingDropped {
                protocol: scope.protocol,
                domain: scope.domain,
                template_id,
                reason,
            })
            .collect();
        self.count_pending_outcomes(&events);
        events
    }

    /// Tallies what became of pending data sets, for the stats line's "Data Hits/Misses".
    fn count_pending_outcomes(&mut self, events: &[LifecycleEvent]) {
        for event in events {
            match event {
                LifecycleEvent::PendingReplayed { protocol, .. } => {
                    self.counters[counter_index(*protocol)].pending_replayed += 1;
                }
                LifecycleEvent::PendingDropped { protocol, .. } => {
                    self.counters[counter_index(*protocol)].pending_dropped += 1;
                }
                _ => {}
            }
        }
    }
}

impl ExporterSession for NetflowSession {
    fn decode(&mut self, datagram: Datagram<'_>, out: &mut FlowBuffer) -> DatagramReport {
        let mut report = DatagramReport::default();
        self.tick += 1;
        let first = out.len();
        let payload = datagram.payload;
        match payload.get(..2).map(|v| u16::from_be_bytes([v[0], v[1]])) {
            Some(5) => self.decode_v5(datagram, out, &mut report),
            Some(version @ (9 | 10)) => {
                let mut unresolved = std::mem::take(&mut self.unresolved);
                let tick = self.tick;
                let mut emit = Emit {
                    out,
                    report: &mut report,
                    unresolved: &mut unresolved,
                    tick,
                    later_sets: false,
                };
                self.decode_templated(version, datagram, &mut emit);
                self.unresolved = unresolved;
            }
            Some(version) => report.errors.push(DecodeError::UnsupportedVersion { version }),
            None => report
                .errors
                .push(DecodeError::TruncatedHeader { protocol: Protocol::V9, len: payload.len() }),
        }
        self.finish_datagram(datagram.source.ip(), first, out, &mut report);
        self.fidelity.add(&report);
        self.count_pending_outcomes(&report.events);
        report
    }

    fn expire(&mut self, now_ns: u64) -> Vec<LifecycleEvent> {
        let dropped = self.pending.as_mut().map(|p| p.expire(now_ns)).unwrap_or_default();
        self.pending_dropped(dropped, "ttl")
    }

    fn close(&mut self) -> Vec<LifecycleEvent> {
        let dropped = self.pending.as_mut().map(PendingCache::drop_all).unwrap_or_default();
        self.pending_dropped(dropped, "exporter_stopped")
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
                    pending_bytes: self
                        .pending
                        .as_ref()
                        .map_or(0, |p| p.bytes_where(|scope| scope.protocol == *protocol)),
                    template_hits: counters.hits,
                    template_misses: counters.misses,
                    evictions: counters.evictions,
                    collisions: counters.collisions,
                    pending_replayed: counters.pending_replayed,
                    pending_dropped: counters.pending_dropped,
                }
            })
            .collect();
        SessionStats { caches, fidelity: self.fidelity.clone() }
    }
}
