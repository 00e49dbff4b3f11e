//! NetFlow v5, NetFlow v9 (RFC 3954) and IPFIX (RFC 7011) datagrams.
//!
//! Sequence numbers follow each protocol's rule: v5 numbers flows (the header carries
//! the flows sent before this packet), v9 numbers export packets, IPFIX numbers data
//! records (options data records included, template records not). v5/v9 flow times
//! are sysUpTime milliseconds a little before the header's uptime; IPFIX times are
//! absolute (flowStartMilliseconds / flowEndMilliseconds).

use super::flow::Flow;
use super::{Exporter, MAX_DATAGRAM, Put};

/// The most records a v5 packet holds (the format's limit).
pub const V5_MAX_RECORDS: u16 = 30;
const V5_HEADER: usize = 24;
const V5_RECORD: usize = 48;

/// Template id of the flow records; the sampling options template is one more.
pub const FLOW_TEMPLATE_ID: u16 = 256;
pub const OPTIONS_TEMPLATE_ID: u16 = 257;

/// The v9 flow template: bytes, packets, protocol, ToS, TCP flags, source port and
/// address and mask, input interface, destination port and address and mask, output
/// interface, next hop, source and destination AS, last and first switched (uptime).
pub const V9_TEMPLATE: &[(u16, u16)] = &[
    (1, 4),
    (2, 4),
    (4, 1),
    (5, 1),
    (6, 1),
    (7, 2),
    (8, 4),
    (9, 1),
    (10, 2),
    (11, 2),
    (12, 4),
    (13, 1),
    (14, 2),
    (15, 4),
    (16, 4),
    (17, 4),
    (21, 4),
    (22, 4),
];

/// The IPFIX flow template: the same elements with 8-byte counters, 2-byte TCP flags,
/// 4-byte interfaces, and absolute flowStartMilliseconds / flowEndMilliseconds.
pub const IPFIX_TEMPLATE: &[(u16, u16)] = &[
    (1, 8),
    (2, 8),
    (4, 1),
    (5, 1),
    (6, 2),
    (7, 2),
    (8, 4),
    (9, 1),
    (10, 4),
    (11, 2),
    (12, 4),
    (13, 1),
    (14, 4),
    (15, 4),
    (16, 4),
    (17, 4),
    (152, 8),
    (153, 8),
];

/// Sampling options: scope System (v9 scope type 1) or observationDomainId (IPFIX 149),
/// then samplingInterval (34) and samplingAlgorithm (35).
const V9_OPTIONS_SCOPE: (u16, u16) = (1, 4);
const IPFIX_OPTIONS_SCOPE: (u16, u16) = (149, 4);
const OPTIONS_FIELDS: &[(u16, u16)] = &[(34, 4), (35, 1)];
/// samplingAlgorithm 2: random.
const RANDOM_SAMPLING: u8 = 2;

const V9_HEADER: usize = 20;
const IPFIX_HEADER: usize = 16;
/// Bytes the templates, the options template and the options record take at most
/// (sets padded), beyond the header.
const TEMPLATE_OVERHEAD: usize = 4 + 4 + 4 * 18 + 24 + 16;

fn record_length(template: &[(u16, u16)]) -> usize {
    template.iter().map(|(_, len)| usize::from(*len)).sum()
}

/// The most records a v9 datagram holds with its templates.
pub fn v9_max_records() -> u16 {
    let room = MAX_DATAGRAM - V9_HEADER - TEMPLATE_OVERHEAD - 4 - 3;
    (room / record_length(V9_TEMPLATE)) as u16
}

/// The most records an IPFIX message holds with its templates.
pub fn ipfix_max_records() -> u16 {
    let room = MAX_DATAGRAM - IPFIX_HEADER - TEMPLATE_OVERHEAD - 4 - 3;
    (room / record_length(IPFIX_TEMPLATE)) as u16
}

/// A flow's times: v5/v9 sysUpTime ms, or IPFIX Unix ms.
#[derive(Debug, Clone, Copy)]
struct Times {
    start: u64,
    end: u64,
}

/// The value of information element `ie` for `flow`.
fn value(ie: u16, flow: &Flow, t: Times) -> u64 {
    match ie {
        1 => flow.bytes,
        2 => u64::from(flow.packets),
        4 => u64::from(flow.protocol),
        5 => u64::from(flow.tos),
        6 => u64::from(flow.tcp_flags),
        7 => u64::from(flow.src_port),
        8 => u64::from(u32::from_be_bytes(flow.src_addr)),
        9 => u64::from(flow.src_mask),
        10 => u64::from(flow.input_if),
        11 => u64::from(flow.dst_port),
        12 => u64::from(u32::from_be_bytes(flow.dst_addr)),
        13 => u64::from(flow.dst_mask),
        14 => u64::from(flow.output_if),
        15 => u64::from(u32::from_be_bytes(flow.next_hop)),
        16 => u64::from(flow.src_as),
        17 => u64::from(flow.dst_as),
        21 | 153 => t.end,
        22 | 152 => t.start,
        _ => 0,
    }
}

/// Writes the low `len` bytes of `v`, big-endian (saturating when it does not fit).
fn put_uint(out: &mut Vec<u8>, v: u64, len: u16) {
    let len = usize::from(len.min(8));
    let max = if len == 8 { u64::MAX } else { (1u64 << (8 * len)) - 1 };
    out.extend_from_slice(&v.min(max).to_be_bytes()[8 - len..]);
}

/// One record of `template` for `flow`, its times left 0 (the pool writes them).
pub(super) fn encode_record(template: &[(u16, u16)], flow: &Flow, out: &mut Vec<u8>) {
    let no_times = Times { start: 0, end: 0 };
    for &(ie, len) in template {
        put_uint(out, value(ie, flow, no_times), len);
    }
}

/// Where element `ie` starts in a record of `template` (its length if absent).
pub(super) fn offset_of(template: &[(u16, u16)], ie: u16) -> usize {
    template.iter().take_while(|(id, _)| *id != ie).map(|(_, len)| usize::from(*len)).sum()
}

/// A template set: v9 id 0, IPFIX id 2.
fn put_template_set(out: &mut Vec<u8>, set_id: u16, template: &[(u16, u16)]) {
    let mark = out.mark();
    out.put_u16(set_id);
    out.put_u16(0);
    out.put_u16(FLOW_TEMPLATE_ID);
    out.put_u16(template.len() as u16);
    for &(ie, len) in template {
        out.put_u16(ie);
        out.put_u16(len);
    }
    out.end_set(mark);
}

/// The sampling options template set and its one data record.
fn put_options(out: &mut Vec<u8>, ipfix: bool, domain: u32, rate: u32) {
    let mark = out.mark();
    if ipfix {
        out.put_u16(3);
        out.put_u16(0);
        out.put_u16(OPTIONS_TEMPLATE_ID);
        out.put_u16(1 + OPTIONS_FIELDS.len() as u16);
        out.put_u16(1);
        out.put_u16(IPFIX_OPTIONS_SCOPE.0);
        out.put_u16(IPFIX_OPTIONS_SCOPE.1);
    } else {
        out.put_u16(1);
        out.put_u16(0);
        out.put_u16(OPTIONS_TEMPLATE_ID);
        out.put_u16(4);
        out.put_u16(4 * OPTIONS_FIELDS.len() as u16);
        out.put_u16(V9_OPTIONS_SCOPE.0);
        out.put_u16(V9_OPTIONS_SCOPE.1);
    }
    for &(ie, len) in OPTIONS_FIELDS {
        out.put_u16(ie);
        out.put_u16(len);
    }
    out.end_set(mark);
    let mark = out.mark();
    out.put_u16(OPTIONS_TEMPLATE_ID);
    out.put_u16(0);
    out.put_u32(if ipfix { domain } else { 0 });
    out.put_u32(rate);
    out.put_u8(RANDOM_SAMPLING);
    out.end_set(mark);
}

/// The data set of the exporter's next `records` pool records, times against `now`.
fn put_data_set(exporter: &mut Exporter, now: u64, out: &mut Vec<u8>) {
    let mark = out.mark();
    out.put_u16(FLOW_TEMPLATE_ID);
    out.put_u16(0);
    exporter.append_records(now, out);
    out.end_set(mark);
}

/// The observation domain / source id every exporter uses.
pub const DOMAIN: u32 = 1;

/// A 48-byte v5 record for `flow`, first and last switched left 0.
pub(super) fn encode_v5_record(f: &Flow, out: &mut Vec<u8>) {
    out.extend_from_slice(&f.src_addr);
    out.extend_from_slice(&f.dst_addr);
    out.extend_from_slice(&f.next_hop);
    out.put_u16(f.input_if);
    out.put_u16(f.output_if);
    out.put_u32(f.packets);
    out.put_u32(f.bytes.min(u64::from(u32::MAX)) as u32);
    out.put_u32(0); // first switched
    out.put_u32(0); // last switched
    out.put_u16(f.src_port);
    out.put_u16(f.dst_port);
    out.put_u8(0);
    out.put_u8(f.tcp_flags);
    out.put_u8(f.protocol);
    out.put_u8(f.tos);
    out.put_u16(f.src_as.min(u32::from(u16::MAX)) as u16);
    out.put_u16(f.dst_as.min(u32::from(u16::MAX)) as u16);
    out.put_u8(f.src_mask);
    out.put_u8(f.dst_mask);
    out.put_u16(0);
}

/// A NetFlow v5 packet; `flow_sequence` is the flows sent before it.
pub(super) fn write_v5(exporter: &mut Exporter, now_ms: u64, out: &mut Vec<u8>) {
    let records = exporter.settings.records;
    let uptime = exporter.uptime_ms(now_ms);
    out.reserve(V5_HEADER + V5_RECORD * usize::from(records));
    out.put_u16(5);
    out.put_u16(records);
    out.put_u32(uptime);
    out.put_u32((now_ms / 1000) as u32);
    out.put_u32((now_ms % 1000) as u32 * 1_000_000);
    out.put_u32(exporter.sequence);
    out.put_u8(0); // engine type
    out.put_u8(0); // engine id
    let rate = exporter.settings.sampling_rate;
    out.put_u16(if rate > 1 { (1 << 14) | rate.min(0x3FFF) as u16 } else { 0 });
    exporter.append_records(u64::from(uptime), out);
    exporter.sequence = exporter.sequence.wrapping_add(u32::from(records));
}

/// A NetFlow v9 export packet: templates (and sampling options) first when due, then
/// one data set. `count` is every record of the packet (RFC 3954 §5.1).
pub(super) fn write_v9(exporter: &mut Exporter, now_ms: u64, templates: bool, out: &mut Vec<u8>) {
    let records = exporter.settings.records;
    let sampled = exporter.settings.sampling_rate > 1;
    let uptime = exporter.uptime_ms(now_ms);
    let extra = match (templates, sampled) {
        (false, _) => 0,
        (true, false) => 1,
        (true, true) => 3,
    };
    out.reserve(V9_HEADER + TEMPLATE_OVERHEAD + 7 + 49 * usize::from(records));
    out.put_u16(9);
    out.put_u16(records.saturating_add(extra));
    out.put_u32(uptime);
    out.put_u32((now_ms / 1000) as u32);
    out.put_u32(exporter.sequence);
    out.put_u32(DOMAIN);
    if templates {
        put_template_set(out, 0, V9_TEMPLATE);
        if sampled {
            put_options(out, false, DOMAIN, exporter.settings.sampling_rate);
        }
    }
    put_data_set(exporter, u64::from(uptime), out);
    exporter.sequence = exporter.sequence.wrapping_add(1);
}

/// An IPFIX message: templates (and sampling options) first when due, then one data
/// set. The sequence number counts the data records sent before this message.
pub(super) fn write_ipfix(
    exporter: &mut Exporter,
    now_ms: u64,
    templates: bool,
    out: &mut Vec<u8>,
) {
    let records = u32::from(exporter.settings.records);
    let sampled = exporter.settings.sampling_rate > 1;
    out.reserve(IPFIX_HEADER + TEMPLATE_OVERHEAD + 7 + 70 * records as usize);
    out.put_u16(10);
    out.put_u16(0); // length, patched below
    out.put_u32((now_ms / 1000) as u32);
    out.put_u32(exporter.sequence);
    out.put_u32(DOMAIN);
    let mut data_records = records;
    if templates {
        put_template_set(out, 2, IPFIX_TEMPLATE);
        if sampled {
            put_options(out, true, DOMAIN, exporter.settings.sampling_rate);
            data_records += 1;
        }
    }
    put_data_set(exporter, now_ms, out);
    let length = out.len() as u16;
    out[2..4].copy_from_slice(&length.to_be_bytes());
    exporter.sequence = exporter.sequence.wrapping_add(data_records);
}
