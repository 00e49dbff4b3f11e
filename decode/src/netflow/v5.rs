//! NetFlow v5: a fixed 24-byte header and 1–30 fixed 48-byte records.
//!
//! The sampling rate is the header's `sampling_interval` with its top two (mode) bits
//! masked off; 0 means the exporter announced none ("unknown"). Sequence numbers
//! count flows and are tracked per (source port, engine type, engine id).

use flowpb::{FlowMessage, FlowType};
use netflow_parser::static_versions::v5::{FlowSet, Header};
use netflow_parser::{NetflowPacket, NetflowParser};

use crate::event::Protocol;
use crate::packet::{ETHERTYPE_IPV4, protocol_name};
use crate::report::{DatagramReport, DecodeError};
use crate::{Datagram, FlowBuffer, set_bytes, set_text};

use super::sequence::HeaderClock;
use super::time::v5_time_ns;

const HEADER_LEN: usize = 24;
const RECORD_LEN: usize = 48;
const MAX_RECORDS: usize = 30;
/// The sampling interval is the low 14 bits; the top 2 bits are the sampling mode.
const SAMPLING_INTERVAL_MASK: u16 = 0x3FFF;

/// The header fields read before decoding, for sequence and restart tracking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Peek {
    pub sequence: u32,
    pub count: u16,
    /// engine_type << 8 | engine_id: the flow sequence's scope (reported as "domain").
    pub engine: u32,
    pub clock: HeaderClock,
}

fn be32(payload: &[u8], at: usize) -> Option<u32> {
    payload.get(at..at + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
}

/// Reads the header of a v5 datagram, if it has one.
pub(crate) fn peek(payload: &[u8]) -> Option<Peek> {
    let header = payload.get(..HEADER_LEN)?;
    let count = u16::from_be_bytes([header[2], header[3]]);
    let unix_ms = u64::from(be32(header, 8)?) * 1000 + u64::from(be32(header, 12)?) / 1_000_000;
    Some(Peek {
        sequence: be32(header, 16)?,
        count,
        engine: u32::from(u16::from_be_bytes([header[20], header[21]])),
        clock: HeaderClock { export_ms: unix_ms, sys_uptime_ms: be32(header, 4)? },
    })
}

/// Decodes a v5 datagram. Bytes after the `count` records are ignored.
pub(crate) fn decode(
    parser: &mut NetflowParser,
    datagram: Datagram<'_>,
    sampler_address: &[u8],
    out: &mut FlowBuffer,
    report: &mut DatagramReport,
) {
    let payload = datagram.payload;
    let Some(count) = payload.get(2..4).map(|c| usize::from(u16::from_be_bytes([c[0], c[1]])))
    else {
        report
            .errors
            .push(DecodeError::TruncatedHeader { protocol: Protocol::V5, len: payload.len() });
        return;
    };
    if payload.len() < HEADER_LEN {
        report
            .errors
            .push(DecodeError::TruncatedHeader { protocol: Protocol::V5, len: payload.len() });
        return;
    }
    if count == 0 || count > MAX_RECORDS {
        report.errors.push(DecodeError::Malformed {
            protocol: Protocol::V5,
            detail: format!("record count {count} is outside 1..=30"),
        });
        return;
    }
    let length = HEADER_LEN + count * RECORD_LEN;
    let Some(packet) = payload.get(..length) else {
        report.errors.push(DecodeError::LengthPastEnd { protocol: Protocol::V5, length });
        return;
    };
    let result = parser.parse_bytes(packet);
    if let Some(error) = result.error {
        report
            .errors
            .push(DecodeError::Malformed { protocol: Protocol::V5, detail: error.to_string() });
    }
    for packet in &result.packets {
        if let NetflowPacket::V5(v5) = packet {
            for record in &v5.flowsets {
                let msg = out.next_slot();
                write_flow(&v5.header, record, datagram.received_ns, sampler_address, msg);
                report.flows += 1;
            }
        }
    }
}

/// Writes one record into `msg`, a message at its defaults (a kept one keeps its
/// buffers: no allocation per record).
fn write_flow(
    header: &Header,
    record: &FlowSet,
    received_ns: u64,
    sampler_address: &[u8],
    msg: &mut FlowMessage,
) {
    let time = |at| v5_time_ns(header.unix_secs, header.unix_nsecs, header.sys_up_time, at);
    msg.r#type = FlowType::NetflowV5 as i32;
    msg.time_received_ns = received_ns;
    msg.sequence_num = header.flow_sequence;
    msg.sampling_rate = u64::from(header.sampling_interval & SAMPLING_INTERVAL_MASK);
    set_bytes(&mut msg.sampler_address, sampler_address);
    msg.time_flow_start_ns = time(record.first);
    msg.time_flow_end_ns = time(record.last);
    msg.bytes = u64::from(record.d_octets);
    msg.packets = u64::from(record.d_pkts);
    set_bytes(&mut msg.src_addr, &record.src_addr.octets());
    set_bytes(&mut msg.dst_addr, &record.dst_addr.octets());
    set_bytes(&mut msg.next_hop, &record.next_hop.octets());
    msg.etype = u32::from(ETHERTYPE_IPV4);
    msg.proto = u32::from(record.protocol_number);
    set_text(&mut msg.protocol_name, protocol_name(record.protocol_number));
    msg.src_port = u32::from(record.src_port);
    msg.dst_port = u32::from(record.dst_port);
    msg.in_if = u32::from(record.input);
    msg.out_if = u32::from(record.output);
    msg.tcp_flags = u32::from(record.tcp_flags);
    msg.ip_tos = u32::from(record.tos);
    msg.src_as = u32::from(record.src_as);
    msg.dst_as = u32::from(record.dst_as);
    msg.src_net = u32::from(record.src_mask);
    msg.dst_net = u32::from(record.dst_mask);
}
