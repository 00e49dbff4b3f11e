//! Builders of NetFlow v5, v9 and IPFIX datagrams for the decoder's tests (headers,
//! template and options template sets, data sets, records), and the helpers that feed
//! them to a `NetflowSession`.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use flow_decode::{
    Datagram, DatagramReport, ExporterSession, FlowBuffer, LifecycleEvent, NetflowSession,
    NetflowSettings, PendingFlowSettings, SamplingPolicy,
};
use flowpb::FlowMessage;

/// Export time of most test datagrams (2023-11-14T22:13:20Z), Unix seconds.
pub const EXPORT_SECS: u32 = 1_700_000_000;
pub const MS: u64 = 1_000_000;
pub const SECOND_NS: u64 = 1_000_000_000;
/// `EXPORT_SECS` in Unix nanoseconds: a receive time matching the export time.
pub const EXPORT_NS: u64 = EXPORT_SECS as u64 * SECOND_NS;

/// Session settings of the tests: 100 templates, and a 1 s pending cache if asked.
pub fn settings(pending: bool) -> NetflowSettings {
    NetflowSettings {
        max_templates: 100,
        max_template_fields: 10_000,
        pending: pending.then(|| PendingFlowSettings {
            max_pending_flows: 16,
            max_entries_per_template: 4,
            max_entry_size_bytes: 65_535,
            ttl: Duration::from_secs(1),
            max_bytes: usize::MAX,
            memory: std::sync::Arc::new(flow_decode::netflow::PendingMemory::unbounded()),
        }),
        sampling: SamplingPolicy::default(),
    }
}

/// The exporter 192.0.2.10 sending from `port`.
pub fn source(port: u16) -> SocketAddr {
    SocketAddr::from(([192, 0, 2, 10], port))
}

/// Decodes one datagram into a fresh output.
pub fn decode(
    session: &mut NetflowSession,
    from: SocketAddr,
    received_ns: u64,
    payload: &[u8],
) -> (Vec<FlowMessage>, DatagramReport) {
    let mut out = FlowBuffer::new();
    let report = session.decode(Datagram { source: from, received_ns, payload }, &mut out);
    (out.take(), report)
}

/// A set: id, length, body, padded to 4 bytes.
pub fn set(id: u16, body: &[u8]) -> Vec<u8> {
    let mut body = body.to_vec();
    while !body.len().is_multiple_of(4) {
        body.push(0);
    }
    let mut out = id.to_be_bytes().to_vec();
    let length = u16::try_from(body.len() + 4).expect("set fits 64 KiB");
    out.extend_from_slice(&length.to_be_bytes());
    out.extend(body);
    out
}

/// A NetFlow v9 export packet.
pub fn v9_packet(
    uptime_ms: u32,
    unix_secs: u32,
    sequence: u32,
    source_id: u32,
    sets: &[Vec<u8>],
) -> Vec<u8> {
    let mut out = vec![0, 9, 0, sets.len() as u8];
    for field in [uptime_ms, unix_secs, sequence, source_id] {
        out.extend_from_slice(&field.to_be_bytes());
    }
    sets.iter().for_each(|s| out.extend_from_slice(s));
    out
}

/// An IPFIX message.
pub fn ipfix_packet(export_secs: u32, sequence: u32, domain: u32, sets: &[Vec<u8>]) -> Vec<u8> {
    let length: usize = 16 + sets.iter().map(Vec::len).sum::<usize>();
    let mut out = vec![0, 10];
    out.extend_from_slice(&(length as u16).to_be_bytes());
    for field in [export_secs, sequence, domain] {
        out.extend_from_slice(&field.to_be_bytes());
    }
    sets.iter().for_each(|s| out.extend_from_slice(s));
    out
}

fn field_specifiers(body: &mut Vec<u8>, fields: &[(u16, u16)]) {
    for (ie, len) in fields {
        body.extend_from_slice(&ie.to_be_bytes());
        body.extend_from_slice(&len.to_be_bytes());
    }
}

/// Template records: (template id, [(IE, length)]); set id 0 (v9) or 2 (IPFIX).
pub fn template_set(set_id: u16, templates: &[(u16, &[(u16, u16)])]) -> Vec<u8> {
    let mut body = Vec::new();
    for (id, fields) in templates {
        body.extend_from_slice(&id.to_be_bytes());
        body.extend_from_slice(&(fields.len() as u16).to_be_bytes());
        field_specifiers(&mut body, fields);
    }
    set(set_id, &body)
}

/// One IPFIX template whose fields may carry an enterprise number: (IE, length, PEN),
/// PEN 0 for IANA elements.
pub fn ipfix_template_with_pens(template_id: u16, fields: &[(u16, u16, u32)]) -> Vec<u8> {
    let mut body = template_id.to_be_bytes().to_vec();
    body.extend_from_slice(&(fields.len() as u16).to_be_bytes());
    for (ie, len, pen) in fields {
        let id = if *pen == 0 { *ie } else { *ie | 0x8000 };
        body.extend_from_slice(&id.to_be_bytes());
        body.extend_from_slice(&len.to_be_bytes());
        if *pen != 0 {
            body.extend_from_slice(&pen.to_be_bytes());
        }
    }
    set(2, &body)
}

/// A NetFlow v9 options template set (id 1): scope fields are (scope type, length)
/// (1 System, 2 Interface, …), option fields (field type, length).
pub fn v9_options_template_set(
    template_id: u16,
    scope: &[(u16, u16)],
    fields: &[(u16, u16)],
) -> Vec<u8> {
    let mut body = template_id.to_be_bytes().to_vec();
    body.extend_from_slice(&((scope.len() * 4) as u16).to_be_bytes());
    body.extend_from_slice(&((fields.len() * 4) as u16).to_be_bytes());
    field_specifiers(&mut body, scope);
    field_specifiers(&mut body, fields);
    set(1, &body)
}

/// An IPFIX options template set (id 3): scope fields first, all (IE, length).
pub fn ipfix_options_template_set(
    template_id: u16,
    scope: &[(u16, u16)],
    fields: &[(u16, u16)],
) -> Vec<u8> {
    let mut body = template_id.to_be_bytes().to_vec();
    body.extend_from_slice(&((scope.len() + fields.len()) as u16).to_be_bytes());
    body.extend_from_slice(&(scope.len() as u16).to_be_bytes());
    field_specifiers(&mut body, scope);
    field_specifiers(&mut body, fields);
    set(3, &body)
}

/// A NetFlow v5 header's variable fields.
#[derive(Debug, Clone, Copy)]
pub struct V5Header {
    pub uptime_ms: u32,
    pub unix_secs: u32,
    pub unix_nsecs: u32,
    pub flow_sequence: u32,
    pub engine_type: u8,
    pub engine_id: u8,
    /// Mode (top 2 bits) and interval (low 14 bits).
    pub sampling: u16,
}

impl Default for V5Header {
    fn default() -> Self {
        Self {
            uptime_ms: 10_000,
            unix_secs: EXPORT_SECS,
            unix_nsecs: 0,
            flow_sequence: 1,
            engine_type: 0,
            engine_id: 0,
            sampling: 0,
        }
    }
}

/// A NetFlow v5 packet of `records` (each from [`v5_record`]).
pub fn v5_packet(header: V5Header, records: &[Vec<u8>]) -> Vec<u8> {
    let mut p = vec![0, 5];
    p.extend_from_slice(&(records.len() as u16).to_be_bytes());
    for field in [header.uptime_ms, header.unix_secs, header.unix_nsecs, header.flow_sequence] {
        p.extend_from_slice(&field.to_be_bytes());
    }
    p.extend_from_slice(&[header.engine_type, header.engine_id]);
    p.extend_from_slice(&header.sampling.to_be_bytes());
    records.iter().for_each(|r| p.extend_from_slice(r));
    p
}

/// A 48-byte v5 record: UDP 53 → 5353 with the given counters and uptimes.
pub fn v5_record(src: [u8; 4], packets: u32, octets: u32, first: u32, last: u32) -> Vec<u8> {
    let mut r = src.to_vec();
    r.extend_from_slice(&[10, 0, 0, 2, 10, 0, 0, 254]);
    r.extend_from_slice(&3u16.to_be_bytes());
    r.extend_from_slice(&4u16.to_be_bytes());
    r.extend_from_slice(&packets.to_be_bytes());
    r.extend_from_slice(&octets.to_be_bytes());
    r.extend_from_slice(&first.to_be_bytes());
    r.extend_from_slice(&last.to_be_bytes());
    r.extend_from_slice(&53u16.to_be_bytes());
    r.extend_from_slice(&5353u16.to_be_bytes());
    r.extend_from_slice(&[0, 0x12, 17, 0x20]);
    r.extend_from_slice(&65001u16.to_be_bytes());
    r.extend_from_slice(&65002u16.to_be_bytes());
    r.extend_from_slice(&[24, 16, 0, 0]);
    r
}

/// v9 flow template 256: src, dst, sport, dport, proto, bytes, packets, first, last.
pub const V9_FIELDS: &[(u16, u16)] =
    &[(8, 4), (12, 4), (7, 2), (11, 2), (4, 1), (1, 4), (2, 4), (22, 4), (21, 4)];

/// A record of [`V9_FIELDS`]: `src` → 198.51.100.7, TCP 1234 → 443, 3 packets.
pub fn v9_record(src: [u8; 4], bytes: u32, first: u32, last: u32) -> Vec<u8> {
    Rec::new()
        .bytes(&src)
        .bytes(&[198, 51, 100, 7])
        .u16(1234)
        .u16(443)
        .u8(6)
        .u32(bytes)
        .u32(3)
        .u32(first)
        .u32(last)
        .done()
}

/// A data record built field by field, big-endian.
#[derive(Debug, Default, Clone)]
pub struct Rec(Vec<u8>);

impl Rec {
    pub fn new() -> Self {
        Self(Vec::new())
    }

    pub fn u8(mut self, v: u8) -> Self {
        self.0.push(v);
        self
    }

    pub fn u16(mut self, v: u16) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn u32(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn u64(mut self, v: u64) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn f64(mut self, v: f64) -> Self {
        self.0.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub fn bytes(mut self, v: &[u8]) -> Self {
        self.0.extend_from_slice(v);
        self
    }

    pub fn done(self) -> Vec<u8> {
        self.0
    }
}

/// Template ids a report says were learned, in order.
pub fn learned(report: &DatagramReport) -> Vec<u16> {
    report
        .events
        .iter()
        .filter_map(|e| match e {
            LifecycleEvent::TemplateLearned { template_id, .. } => Some(*template_id),
            _ => None,
        })
        .collect()
}

/// The `ExporterRestarted` events of a report.
pub fn restarts(report: &DatagramReport) -> Vec<LifecycleEvent> {
    report
        .events
        .iter()
        .filter(|e| matches!(e, LifecycleEvent::ExporterRestarted { .. }))
        .cloned()
        .collect()
}
