//! One template scope: (protocol, UDP source port, observation domain / source id) of
//! one exporter (RFC 3954 §5.1, RFC 7011 §8). It owns a netflow_parser instance, the
//! layouts of the templates that parser holds, what options data announced for the
//! domain (sampling rates, boot time), and the sequence/restart state of its stream.
//!
//! A restart (see [`super::sequence`]) drops what the previous incarnation of the
//! exporter defined: layouts (data that follows waits in the pending cache for the new
//! templates instead of being decoded with a stale layout), sampling rates and the boot
//! time. State defined earlier in the datagram that revealed the restart is kept.
//! IPFIX restarts also show as systemInitTimeMilliseconds (IE 160, options data or
//! data records) moving forward by more than [`INIT_RESTART_TOLERANCE_MS`].

use std::net::SocketAddr;

use flowpb::{FlowMessage, FlowType};
use netflow_parser::variable_versions::{ipfix, v9};
use netflow_parser::{FieldValue, NetflowPacket, NetflowParser};

use crate::buffer::FlowBuffer;
use crate::event::{LifecycleEvent, Protocol};
use crate::report::{DatagramReport, DecodeError};

use super::ScopeKey;
use super::fields::{FlowFields, RecordContext};
use super::options::{OptionsFields, SamplerRef, SamplingTable};
use super::sequence::{Stream, Unit};
use super::templates::{Installed, Layout, Layouts, TemplateKind};
use super::time::{RecordTimes, UptimeBase};
use super::wire::V9_HEADER_LEN;
use super::wire::{ExportHeader, IPFIX_OPTIONS_TEMPLATE_SET, IPFIX_TEMPLATE_SET, SetRef};
use super::wire::{scan_template_set, single_set_datagram};

/// Where a datagram came from, as its flows carry it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Arrival<'a> {
    pub source: SocketAddr,
    pub received_ns: u64,
    pub sampler_address: &'a [u8],
}

/// Reusable buffers, so decoding does not allocate per set or per field.
#[derive(Debug, Default)]
pub(crate) struct Buffers {
    /// The synthetic single-set datagram handed to netflow_parser.
    pub datagram: Vec<u8>,
    /// One field value as wire bytes.
    pub value: Vec<u8>,
}

/// How far systemInitTimeMilliseconds may move forward before it means the exporter
/// rebooted: exporters that compute it as clock − uptime move it with clock steps.
pub(crate) const INIT_RESTART_TOLERANCE_MS: u64 = 60_000;

/// A flow emitted before its sampling rate or (IPFIX) its boot time was known, to
/// resolve once the datagram is decoded: options data later in the same datagram may
/// announce either.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Unresolved {
    /// Position in the session's output.
    pub index: usize,
    pub scope: ScopeKey,
    /// The record's sampler, when its rate was unknown.
    pub sampler: Option<SamplerRef>,
    /// The record's times, when its sysUpTime values waited for IE 160.
    pub times: Option<RecordTimes>,
}

impl Unresolved {
    /// Fills in what `scope` learned by the end of the datagram; what it still does not
    /// know stays unknown (rate 0, times 0).
    pub fn resolve(&self, scope: &Scope, flow: &mut FlowMessage) {
        if let Some(rate) = self.sampler.and_then(|sampler| scope.sampling.lookup(&sampler)) {
            flow.sampling_rate = rate;
        }
        if let (Some(times), Some(init_ms)) = (self.times, scope.system_init_ms) {
            let (start, end) = times.resolve(Some(UptimeBase::SystemInit { init_ms }));
            flow.time_flow_start_ns = start.unwrap_or(0);
            flow.time_flow_end_ns = end.unwrap_or(0);
        }
    }
}

/// Where decoding one datagram writes: flows, the report, flows awaiting a rate or
/// times, and the session's datagram tick (which dates templates and announced rates).
pub(crate) struct Emit<'e> {
    pub out: &'e mut FlowBuffer,
    pub report: &'e mut DatagramReport,
    pub unresolved: &'e mut Vec<Unresolved>,
    pub tick: u64,
    /// Whether more sets follow the one being decoded. Only a later set can announce
    /// what a record's rate or times wait for (a set's records share one template),
    /// so records of the datagram's last set are not kept in `unresolved`.
    pub later_sets: bool,
}

/// What decoding one data set gave.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SetOutcome {
    pub flows: usize,
    pub options: usize,
}

/// Why a data set could not be decoded.
#[derive(Debug)]
pub(crate) enum SetFailure {
    /// netflow_parser does not hold the template (any more).
    MissingTemplate,
    Error(DecodeError),
}

/// What a template set changed.
#[derive(Debug, Default)]
pub(crate) struct TemplateChanges {
    /// Templates (re)defined, to replay pending data for.
    pub installed: Vec<u16>,
    pub collisions: u64,
    pub evictions: u64,
}

pub(crate) struct Scope {
    pub key: ScopeKey,
    pub protocol: Protocol,
    pub domain: u32,
    parser: NetflowParser,
    pub layouts: Layouts,
    /// Template ids a MissingTemplate event was emitted for since they were last known:
    /// one event per template, not one per data set.
    missing_reported: std::collections::HashSet<u16>,
    pub sampling: SamplingTable,
    system_init_ms: Option<u64>,
    /// Sequence numbers and restarts of the scope's stream.
    pub stream: Stream,
    /// systemInitTimeMilliseconds moved forward while decoding: a restart to apply.
    restart_requested: bool,
    /// Session clock tick of the last use, for evicting the least recently used scope.
    pub last_used: u64,
    /// Data sets decoded with a compiled layout: the clock of the order templates were
    /// last used in (see [`Scope::tell_parser_uses`]).
    uses: u64,
    /// `uses` when netflow_parser was last told the order of use.
    uses_told: u64,
}

impl Scope {
    pub fn new(key: ScopeKey, parser: NetflowParser) -> Self {
        let unit = if key.protocol == Protocol::V9 { Unit::Packets } else { Unit::Records };
        Self {
            key,
            protocol: key.protocol,
            domain: key.domain,
            parser,
            layouts: Layouts::default(),
            missing_reported: Default::default(),
            sampling: SamplingTable::default(),
            system_init_ms: None,
            stream: Stream::new(unit),
            restart_requested: false,
            last_used: 0,
            uses: 0,
            uses_told: 0,
        }
    }

    /// Drops what the exporter's previous incarnation defined before datagram `tick`.
    /// `at_header`: the restart was seen before any set of the datagram, so the
    /// parser's template cache and the boot time go too.
    pub fn restart(&mut self, tick: u64, at_header: bool) {
        self.layouts.forget_before(tick);
        if at_header {
            match self.protocol {
                Protocol::Ipfix => self.parser.clear_ipfix_templates(),
                _ => self.parser.clear_v9_templates(),
            }
            self.system_init_ms = None;
        }
        self.sampling.forget_before(tick);
        self.missing_reported.clear();
        self.stream.reset();
        self.restart_requested = false;
    }

    /// Whether decoding revealed a restart (IE 160 moved forward) since last asked.
    pub fn take_restart_request(&mut self) -> bool {
        std::mem::take(&mut self.restart_requested)
    }

    fn flow_type(&self) -> FlowType {
        match self.protocol {
            Protocol::Ipfix => FlowType::Ipfix,
            _ => FlowType::NetflowV9,
        }
    }

    fn evictions(&self) -> u64 {
        match self.protocol {
            Protocol::Ipfix => self.parser.ipfix_cache_info().metrics.evictions,
            _ => self.parser.v9_cache_info().metrics.evictions,
        }
    }

    /// Whether a MissingTemplate event should be emitted for `id` now.
    pub fn first_miss(&mut self, id: u16) -> bool {
        self.missing_reported.insert(id)
    }

    /// Handles a template or options template set: netflow_parser installs what it
    /// accepts; our layouts follow, with the lifecycle events that implies.
    pub fn template_set(
        &mut self,
        header_bytes: &[u8],
        set: SetRef<'_>,
        max_fields: usize,
        buffers: &mut Buffers,
        tick: u64,
        report: &mut DatagramReport,
    ) -> TemplateChanges {
        let (protocol, domain) = (self.protocol, self.domain);
        let scan = scan_template_set(protocol, set.id, set.body, max_fields);
        self.tell_parser_uses(header_bytes);
        let evictions_before = self.evictions();
        single_set_datagram(header_bytes, set.whole, &mut buffers.datagram);
        let result = self.parser.parse_bytes(&buffers.datagram);
        let mut changes = TemplateChanges::default();

        for id in &scan.withdrawn {
            self.withdraw(*id, &scan.defined, report);
        }
        let accepted = accepted_layouts(&result.packets);
        let accepted_ids: Vec<u16> = accepted.iter().map(|(id, _)| *id).collect();
        for (id, layout) in accepted {
            let new_field_count = layout.fields.len();
            match self.layouts.install(id, layout, tick) {
                Installed::New => report.events.push(LifecycleEvent::TemplateLearned {
                    protocol,
                    domain,
                    template_id: id,
                    field_count: new_field_count,
                }),
                Installed::Refreshed => {}
                Installed::Replaced { old_field_count } => {
                    changes.collisions += 1;
                    report.events.push(LifecycleEvent::TemplateCollision {
                        protocol,
                        domain,
                        template_id: id,
                        old_field_count,
                        new_field_count,
                    });
                }
            }
            self.missing_reported.remove(&id);
            changes.installed.push(id);
        }
        let rejection = result.error.map(|e| e.to_string());
        let reported = |id: u16| scan.errors.iter().any(|e| rejected_id(e) == Some(id));
        for id in scan.defined.iter().copied() {
            if !accepted_ids.contains(&id) && !reported(id) {
                report.errors.push(DecodeError::BadTemplate {
                    protocol,
                    template_id: id,
                    detail: rejection.clone().unwrap_or_else(|| {
                        "rejected by netflow_parser (empty, zero-length or oversized fields)"
                            .to_owned()
                    }),
                });
            }
        }
        report.errors.extend(scan.errors);
        if self.evictions() > evictions_before {
            changes.evictions = self.reconcile_evictions(report);
        }
        changes
    }

    /// IPFIX withdrawal (RFC 7011 §8.1), mirroring netflow_parser: template id 2/3
    /// withdraws all data/options templates; a withdrawal of an id the same set
    /// redefines is skipped.
    fn withdraw(&mut self, id: u16, redefined: &[u16], report: &mut DatagramReport) {
        let ids = match id {
            IPFIX_TEMPLATE_SET => self.layouts.ids_of(TemplateKind::Data),
            IPFIX_OPTIONS_TEMPLATE_SET => self.layouts.ids_of(TemplateKind::Options),
            _ if redefined.contains(&id) => Vec::new(),
            _ => vec![id],
        };
        for id in ids {
            if self.layouts.remove(id).is_some() {
                report.events.push(LifecycleEvent::TemplateWithdrawn {
                    protocol: self.protocol,
                    domain: self.domain,
                    template_id: id,
                });
            }
        }
    }

    /// netflow_parser evicted templates (LRU at `max_templates`) without naming them:
    /// drop the layouts of every id it no longer holds.
    fn reconcile_evictions(&mut self, report: &mut DatagramReport) -> u64 {
        let (parser, protocol) = (&self.parser, self.protocol);
        let gone = self.layouts.retain(|id| match protocol {
            Protocol::Ipfix => parser.has_ipfix_template(id),
            _ => parser.has_v9_template(id),
        });
        for id in &gone {
            report.events.push(LifecycleEvent::TemplateEvicted {
                protocol: self.protocol,
                domain: self.domain,
                template_id: *id,
            });
        }
        gone.len() as u64
    }

    /// Decodes one data set (`set`: its bytes with the set header) sent under the
    /// export header `header_bytes`. Flows go to `emit`; options records update the
    /// scope.
    ///
    /// Records are split by our compiled [`Layout`] straight from the wire; the use
    /// is noted for netflow_parser's LRU order (see [`Scope::tell_parser_uses`]). v9
    /// options records go through netflow_parser, which knows the v9 scope types
    /// (system, interface, ...; IPFIX scopes are Information Elements like any field).
    pub fn decode_data_set(
        &mut self,
        header_bytes: &[u8],
        set: &[u8],
        header: &ExportHeader,
        arrival: &Arrival<'_>,
        buffers: &mut Buffers,
        emit: &mut Emit<'_>,
    ) -> Result<SetOutcome, SetFailure> {
        let body = set.get(4..).unwrap_or_default();
        let set_id = set.get(..2).map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
        let kind = self.layouts.get(set_id).map(|layout| layout.kind);
        let compiled = match kind {
            Some(TemplateKind::Data) => true,
            Some(TemplateKind::Options) => self.protocol == Protocol::Ipfix,
            None => false,
        };
        let parsed = if compiled {
            self.uses += 1;
            self.layouts.use_at(set_id, self.uses);
            None
        } else {
            single_set_datagram(header_bytes, set, &mut buffers.datagram);
            Some(self.parse_set(&buffers.datagram, set_id)?)
        };
        let flow_type = self.flow_type();
        let key = self.key;
        let Self { protocol, layouts, sampling, system_init_ms, restart_requested, .. } = self;
        let Some(layout) = layouts.get(set_id) else {
            return Err(SetFailure::MissingTemplate);
        };
        let ctx = RecordContext {
            flow_type,
            sequence: header.sequence,
            domain: header.domain,
            export_ms: header.export_ms,
            sys_uptime_ms: header.sys_uptime_ms,
            system_init_ms: *system_init_ms,
            received_ns: arrival.received_ns,
            sampler_address: arrival.sampler_address,
        };
        let mut sink = RecordSink {
            protocol: *protocol,
            key,
            sampling,
            system_init_ms,
            restart_requested,
            layout,
            ctx,
            value: &mut buffers.value,
            emit,
            outcome: SetOutcome::default(),
        };
        match parsed {
            None => sink.wire_records(body),
            Some(packets) => sink.parsed_packets(&packets)?,
        }
        Ok(sink.outcome)
    }

    /// netflow_parser evicts its least recently used template when a template set
    /// brings one more than `max_templates` (and only then). Data sets are decoded by
    /// our layouts, so before it reads a template set it is told which templates were
    /// used since it was last told, each touched in the order of its last use: its LRU
    /// order is then what touching it on every data set gave, for a lookup per
    /// template instead of one per data set. A template it no longer holds (which the
    /// layouts' reconciling should make impossible) loses its layout.
    fn tell_parser_uses(&mut self, header_bytes: &[u8]) {
        if self.uses == self.uses_told {
            return;
        }
        for id in self.layouts.used_since(self.uses_told) {
            if !self.parser_touches(header_bytes, id) {
                self.layouts.remove(id);
            }
        }
        self.uses_told = self.uses;
    }

    /// Whether netflow_parser holds template `id`, asked with an empty data set of it
    /// under `header_bytes` (which makes it the template's most recent use): an empty
    /// data set costs the parser a lookup, not a decode.
    fn parser_touches(&mut self, header_bytes: &[u8], id: u16) -> bool {
        let header_len = header_bytes.len();
        let len = header_len + 4;
        // The v9 header is the longer of the two.
        let mut probe = [0u8; V9_HEADER_LEN + 4];
        let Some(out) = probe.get_mut(..len) else {
            return false;
        };
        out[..header_len].copy_from_slice(header_bytes);
        out[header_len..header_len + 2].copy_from_slice(&id.to_be_bytes());
        out[len - 2..].copy_from_slice(&4u16.to_be_bytes());
        if self.protocol == Protocol::Ipfix {
            out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        }
        let result = self.parser.parse_bytes(out);
        result.error.is_none()
            && result.packets.iter().any(|packet| match packet {
                NetflowPacket::V9(packet) => {
                    packet.flowsets.iter().any(|set| matches!(set.body, v9::FlowSetBody::Data(_)))
                }
                NetflowPacket::IPFix(packet) => packet.flowsets.iter().any(|set| {
                    matches!(
                        set.body,
                        ipfix::FlowSetBody::Data(_) | ipfix::FlowSetBody::OptionsData(_)
                    )
                }),
                _ => false,
            })
    }

    /// netflow_parser's decode of the set in `datagram`.
    fn parse_set(
        &mut self,
        datagram: &[u8],
        set_id: u16,
    ) -> Result<Vec<NetflowPacket>, SetFailure> {
        let result = self.parser.parse_bytes(datagram);
        match result.error {
            Some(error) => Err(SetFailure::Error(DecodeError::Malformed {
                protocol: self.protocol,
                detail: format!("data set {set_id}: {error}"),
            })),
            None => Ok(result.packets),
        }
    }
}

/// The template id a scan error names, if any.
fn rejected_id(error: &DecodeError) -> Option<u16> {
    match error {
        DecodeError::TooManyFields { template_id, .. }
        | DecodeError::BadTemplate { template_id, .. } => Some(*template_id),
        _ => None,
    }
}

/// The templates netflow_parser accepted from a template set, with their layouts.
pub(super) fn accepted_layouts(packets: &[NetflowPacket]) -> Vec<(u16, Layout)> {
    let mut accepted = Vec::new();
    for packet in packets {
        match packet {
            NetflowPacket::V9(packet) => {
                for flowset in &packet.flowsets {
                    match &flowset.body {
                        v9::FlowSetBody::Template(t) => accepted.extend(
                            t.templates.iter().map(|t| (t.template_id, Layout::from_v9(t))),
                        ),
                        v9::FlowSetBody::OptionsTemplate(t) => accepted.extend(
                            t.templates.iter().map(|t| (t.template_id, Layout::from_v9_options(t))),
                        ),
                        _ => {}
                    }
                }
            }
            NetflowPacket::IPFix(packet) => {
                for flowset in &packet.flowsets {
                    match &flowset.body {
                        ipfix::FlowSetBody::Template(t) => {
                            accepted.push((t.template_id, Layout::from_ipfix(t)))
                        }
                        ipfix::FlowSetBody::Templates(ts) => accepted
                            .extend(ts.iter().map(|t| (t.template_id, Layout::from_ipfix(t)))),
                        ipfix::FlowSetBody::OptionsTemplate(t) => {
                            accepted.push((t.template_id, Layout::from_ipfix_options(t)))
                        }
                        ipfix::FlowSetBody::OptionsTemplates(ts) => accepted.extend(
                            ts.iter().map(|t| (t.template_id, Layout::from_ipfix_options(t))),
                        ),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    accepted
}

/// Turns the records of one data set into flows or options updates.
struct RecordSink<'s, 'a, 'e> {
    protocol: Protocol,
    key: ScopeKey,
    sampling: &'s mut SamplingTable,
    system_init_ms: &'s mut Option<u64>,
    restart_requested: &'s mut bool,
    layout: &'s Layout,
    ctx: RecordContext<'a>,
    value: &'s mut Vec<u8>,
    emit: &'s mut Emit<'e>,
    outcome: SetOutcome,
}

impl RecordSink<'_, '_, '_> {
    /// The records of a set, split by the template's layout: each field's wire bytes
    /// go to the record as they are (IPFIX options scope fields marked as scope). Bytes
    /// too few for one more record are padding (RFC 3954 §5.3, RFC 7011 §3.3.1).
    fn wire_records(&mut self, body: &[u8]) {
        let scope_fields = self.layout.scope_fields;
        if self.layout.kind == TemplateKind::Data
            && let Some(records) = self.layout.fixed_records_in(body)
        {
            // Room for the set's flows at once: a `FlowMessage` is 768 bytes, and
            // growing the vector record by record copied each several times.
            self.emit.out.reserve(records);
        }
        let mut rest = body;
        // The set's flows are read into one `FlowFields` (~0.9 KB), readied for each
        // next record, rather than into new ones.
        let mut flow = FlowFields::default();
        let mut fresh = true;
        while let Some(len) = self.layout.record_len(rest).filter(|len| *len > 0) {
            let (wire, tail) = rest.split_at(len);
            match self.layout.kind {
                TemplateKind::Data => {
                    if !fresh {
                        self.layout.reset_flow(&mut flow);
                    }
                    fresh = false;
                    // The record with the rest of the set after it (see `read_flow`).
                    self.layout.read_flow(rest, &mut flow);
                    self.finish_flow(&mut flow);
                }
                TemplateKind::Options => {
                    let mut options = OptionsFields::default();
                    let mut index = 0;
                    self.layout.for_each_field(wire, |spec, value| {
                        options.apply_field(spec, value, index < scope_fields);
                        index += 1;
                    });
                    self.finish_options(&options);
                }
            }
            rest = tail;
        }
    }

    /// The v9 options records netflow_parser decoded from one set.
    fn parsed_packets(&mut self, packets: &[NetflowPacket]) -> Result<(), SetFailure> {
        for packet in packets {
            if let NetflowPacket::V9(packet) = packet {
                for flowset in &packet.flowsets {
                    self.v9_options(&flowset.body)?;
                }
            }
        }
        Ok(())
    }

    fn v9_options(&mut self, body: &v9::FlowSetBody) -> Result<(), SetFailure> {
        match body {
            v9::FlowSetBody::OptionsData(data) => {
                // v9 scope fields are scope types (system, interface, ...), not IEs.
                let scope_len = self.layout.scope_fields;
                for record in &data.fields {
                    let mut options = OptionsFields::default();
                    record.scope_fields.iter().for_each(|scope| options.apply_v9_scope(scope));
                    let values = record.options_fields.iter().map(|(_, v)| v);
                    let count = record.options_fields.len();
                    self.parsed_record(options, values, count, scope_len)?;
                }
            }
            v9::FlowSetBody::NoTemplate(_) => return Err(SetFailure::MissingTemplate),
            _ => {}
        }
        Ok(())
    }

    /// One options record as netflow_parser decoded it: its values, in template order
    /// from field `skip` on, get their Information Element from our layout.
    fn parsed_record<'v>(
        &mut self,
        mut options: OptionsFields,
        values: impl Iterator<Item = &'v FieldValue>,
        count: usize,
        skip: usize,
    ) -> Result<(), SetFailure> {
        let specs = self.layout.fields.get(skip..).unwrap_or_default();
        if specs.len() != count {
            return Err(SetFailure::Error(DecodeError::Malformed {
                protocol: self.protocol,
                detail: format!("record has {count} values, its template {} fields", specs.len()),
            }));
        }
        let scope_fields = self.layout.scope_fields;
        for (index, (spec, value)) in specs.iter().zip(values).enumerate() {
            self.value.clear();
            if value.write_be_bytes(self.value).is_ok() {
                options.apply_field(*spec, self.value, skip + index < scope_fields);
            }
        }
        self.finish_options(&options);
        Ok(())
    }

    /// Writes a record's flow, taken where it lies: a record is hundreds of bytes,
    /// and moving it into each step copied it every time.
    fn finish_flow(&mut self, fields: &mut FlowFields) {
        self.observe_system_init(fields.system_init_ms());
        let sampler = fields.sampler();
        let rate = self.sampling.lookup(&sampler);
        let times = fields.awaiting_system_init(&self.ctx);
        let emit = &mut *self.emit;
        if emit.later_sets && (rate.is_none() || times.is_some()) {
            let (index, scope) = (emit.out.len(), self.key);
            let sampler = rate.is_none().then_some(sampler);
            emit.unresolved.push(Unresolved { index, scope, sampler, times });
        }
        fields.finish_into(&self.ctx, rate.unwrap_or(0), emit.out.next_slot());
        self.outcome.flows += 1;
        emit.report.flows += 1;
    }

    /// Takes an options record: the sampling rates and boot time it announces.
    fn finish_options(&mut self, options: &OptionsFields) {
        self.sampling.learn(options, self.emit.tick);
        self.observe_system_init(options.system_init_ms);
        self.outcome.options += 1;
        self.emit.report.non_flow_records += 1;
    }

    /// Takes the exporter's boot time from IE 160; one that moved forward past the
    /// tolerance means the exporter rebooted.
    fn observe_system_init(&mut self, init: Option<u64>) {
        let Some(init) = init else {
            return;
        };
        if self
            .system_init_ms
            .is_some_and(|known| init > known.saturating_add(INIT_RESTART_TOLERANCE_MS))
        {
            *self.restart_requested = true;
        }
        *self.system_init_ms = Some(init);
        self.ctx.system_init_ms = Some(init);
    }
}
