//! One template scope: (protocol, UDP source port, observation domain / source id) of
//! one exporter (RFC 3954 §5.1, RFC 7011 §8). It owns a netflow_parser instance, the
//! layouts of the templates that parser holds, and what options data announced for the
//! domain (sampling rates, boot time).

use std::net::SocketAddr;

use flowpb::{FlowMessage, FlowType};
use netflow_parser::variable_versions::{ipfix, v9};
use netflow_parser::{FieldValue, NetflowPacket, NetflowParser};

use crate::event::{LifecycleEvent, Protocol};
use crate::report::{DatagramReport, DecodeError};

use super::fields::{FieldSpec, FlowFields, RecordContext};
use super::options::{OptionsFields, SamplingTable};
use super::templates::{Installed, Layout, Layouts, TemplateKind};
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
    pub protocol: Protocol,
    pub domain: u32,
    parser: NetflowParser,
    pub layouts: Layouts,
    /// Template ids a MissingTemplate event was emitted for since they were last known:
    /// one event per template, not one per data set.
    missing_reported: std::collections::HashSet<u16>,
    sampling: SamplingTable,
    system_init_ms: Option<u64>,
    /// Session clock tick of the last use, for evicting the least recently used scope.
    pub last_used: u64,
}

impl Scope {
    pub fn new(protocol: Protocol, domain: u32, parser: NetflowParser) -> Self {
        Self {
            protocol,
            domain,
            parser,
            layouts: Layouts::default(),
            missing_reported: Default::default(),
            sampling: SamplingTable::default(),
            system_init_ms: None,
            last_used: 0,
        }
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
        report: &mut DatagramReport,
    ) -> TemplateChanges {
        let (protocol, domain) = (self.protocol, self.domain);
        let scan = scan_template_set(protocol, set.id, set.body, max_fields);
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
            match self.layouts.install(id, layout) {
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

    /// Decodes one data set, given as a synthetic single-set datagram, with the header
    /// it came with. Flows go to `out`; options records update the scope.
    pub fn decode_data_set(
        &mut self,
        datagram: &[u8],
        header: &ExportHeader,
        arrival: &Arrival<'_>,
        value: &mut Vec<u8>,
        out: &mut Vec<FlowMessage>,
        report: &mut DatagramReport,
    ) -> Result<SetOutcome, SetFailure> {
        let body = datagram.get(header.header_len() + 4..).unwrap_or_default();
        let set_id = datagram
            .get(header.header_len()..header.header_len() + 2)
            .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
        let result = self.parser.parse_bytes(datagram);
        if let Some(error) = result.error {
            return Err(SetFailure::Error(DecodeError::Malformed {
                protocol: self.protocol,
                detail: format!("data set {set_id}: {error}"),
            }));
        }
        let flow_type = self.flow_type();
        let Self { protocol, layouts, sampling, system_init_ms, .. } = self;
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
            sampling,
            system_init_ms,
            layout,
            ctx,
            value,
            out,
            report,
            outcome: SetOutcome::default(),
        };
        for packet in &result.packets {
            match packet {
                NetflowPacket::V9(packet) => {
                    for flowset in &packet.flowsets {
                        sink.v9_body(&flowset.body)?;
                    }
                }
                NetflowPacket::IPFix(packet) => {
                    for flowset in &packet.flowsets {
                        sink.ipfix_body(&flowset.body, body)?;
                    }
                }
                _ => {}
            }
        }
        Ok(sink.outcome)
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
fn accepted_layouts(packets: &[NetflowPacket]) -> Vec<(u16, Layout)> {
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
struct RecordSink<'s, 'a> {
    protocol: Protocol,
    sampling: &'s mut SamplingTable,
    system_init_ms: &'s mut Option<u64>,
    layout: &'s Layout,
    ctx: RecordContext<'a>,
    value: &'s mut Vec<u8>,
    out: &'s mut Vec<FlowMessage>,
    report: &'s mut DatagramReport,
    outcome: SetOutcome,
}

impl RecordSink<'_, '_> {
    fn v9_body(&mut self, body: &v9::FlowSetBody) -> Result<(), SetFailure> {
        match body {
            v9::FlowSetBody::Data(data) => {
                for record in &data.fields {
                    self.parsed_record(record.iter().map(|(_, v)| v), record.len(), 0)?;
                }
            }
            v9::FlowSetBody::OptionsData(data) => {
                // v9 scope fields are scope types (system, interface, ...), not IEs.
                let scope_len = self.layout.scope_fields;
                for record in &data.fields {
                    let values = record.options_fields.iter().map(|(_, v)| v);
                    self.parsed_record(values, record.options_fields.len(), scope_len)?;
                }
            }
            v9::FlowSetBody::NoTemplate(_) => return Err(SetFailure::MissingTemplate),
            _ => {}
        }
        Ok(())
    }

    fn ipfix_body(&mut self, body: &ipfix::FlowSetBody, wire: &[u8]) -> Result<(), SetFailure> {
        let records = match body {
            ipfix::FlowSetBody::Data(data) => &data.fields,
            ipfix::FlowSetBody::OptionsData(data) => &data.fields,
            ipfix::FlowSetBody::NoTemplate(_) => return Err(SetFailure::MissingTemplate),
            _ => return Ok(()),
        };
        for record in records {
            self.parsed_record(record.iter().map(|(_, v)| v), record.len(), 0)?;
        }
        if self.layout.variable {
            self.variable_length_tail(wire, records.len());
        }
        Ok(())
    }

    /// One record as netflow_parser decoded it: its values, in template order from
    /// field `skip` on, get their Information Element from our layout.
    fn parsed_record<'v>(
        &mut self,
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
        let mut record = Record::new(self.layout.kind);
        for (spec, value) in specs.iter().zip(values) {
            self.value.clear();
            if value.write_be_bytes(self.value).is_ok() {
                record.apply(*spec, self.value);
            }
        }
        self.finish(record);
        Ok(())
    }

    /// netflow_parser stops a set at a variable-length value of length 0 (which
    /// RFC 7011 §7 allows): decode the records after the ones it returned ourselves.
    fn variable_length_tail(&mut self, wire: &[u8], parsed: usize) {
        let mut rest = wire;
        for _ in 0..parsed {
            match self.layout.record_len(rest) {
                Some(len) => rest = &rest[len..],
                None => return,
            }
        }
        while let Some(len) = self.layout.record_len(rest).filter(|len| *len > 0) {
            let mut record = Record::new(self.layout.kind);
            self.layout.for_each_field(&rest[..len], |spec, value| record.apply(spec, value));
            self.finish(record);
            rest = &rest[len..];
        }
    }

    fn finish(&mut self, record: Record) {
        match record {
            Record::Flow(fields) => {
                let rate = self.sampling.rate_for(fields.sampler());
                self.out.push(fields.finish(&self.ctx, rate));
                self.outcome.flows += 1;
                self.report.flows += 1;
            }
            Record::Options(options) => {
                self.sampling.learn(&options);
                if let Some(init) = options.system_init_ms {
                    *self.system_init_ms = Some(init);
                    self.ctx.system_init_ms = Some(init);
                }
                self.outcome.options += 1;
                self.report.non_flow_records += 1;
            }
        }
    }
}

/// A record being collected: a flow, or options data the collector consumes. It lives
/// on the stack for one record, so the size difference of the variants costs nothing.
#[allow(clippy::large_enum_variant)]
enum Record {
    Flow(FlowFields),
    Options(OptionsFields),
}

impl Record {
    fn new(kind: TemplateKind) -> Self {
        match kind {
            TemplateKind::Data => Record::Flow(FlowFields::default()),
            TemplateKind::Options => Record::Options(OptionsFields::default()),
        }
    }

    fn apply(&mut self, spec: FieldSpec, value: &[u8]) {
        match self {
            Record::Flow(fields) => fields.apply(spec, value),
            Record::Options(options) => options.apply(spec, value),
        }
    }
}
