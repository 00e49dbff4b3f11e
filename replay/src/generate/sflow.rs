//! sFlow v5 datagrams (sFlow.org, "sFlow Version 5", XDR encoding): one flow sample
//! (format 1) per record, each with a raw packet header (Ethernet, IPv4, TCP/UDP/ICMP),
//! an extended switch and an extended router record.
//!
//! Numbering: datagrams 1, 2, 3, … per agent (sub-agent 0); flow samples 1, 2, 3, … per
//! source id (one sampler, ifIndex 1, per exporter); the sample pool grows by the
//! sampling rate per sample.

use super::flow::Flow;
use super::{Exporter, MAX_DATAGRAM, Put};

const HEADER: usize = 28;
/// The largest flow sample written (TCP header).
const MAX_SAMPLE: usize = 8 + 32 + (8 + 16 + 56) + (8 + 16) + (8 + 16);
/// Source id of every sample: type 0 (ifIndex), index 1.
const SOURCE_ID: u32 = 1;
/// Bytes the agent stripped from each sampled frame (the Ethernet FCS).
const STRIPPED: u32 = 4;

/// The most flow samples a datagram holds.
pub fn max_samples() -> u16 {
    ((MAX_DATAGRAM - HEADER) / MAX_SAMPLE) as u16
}

/// Offsets, from a flow sample's format word, of its sequence number and sample pool.
const SAMPLE_SEQUENCE_AT: usize = 8;
const SAMPLE_POOL_AT: usize = 20;

/// One sFlow v5 datagram of `records` flow samples from the exporter's pool, each
/// given the next sample sequence number and the grown sample pool.
pub(super) fn write(exporter: &mut Exporter, now_ms: u64, out: &mut Vec<u8>) {
    let samples = exporter.settings.records;
    let rate = exporter.settings.sampling_rate;
    exporter.sequence = exporter.sequence.wrapping_add(1);
    out.reserve(HEADER + MAX_SAMPLE * usize::from(samples));
    out.put_u32(5);
    out.put_u32(1); // address type IPv4
    out.extend_from_slice(&exporter.agent.octets());
    out.put_u32(0); // sub-agent id
    out.put_u32(exporter.sequence);
    out.put_u32(exporter.uptime_ms(now_ms));
    out.put_u32(u32::from(samples));
    for _ in 0..samples {
        let at = exporter.append_record(now_ms, out);
        exporter.samples = exporter.samples.wrapping_add(1);
        exporter.sample_pool = exporter.sample_pool.wrapping_add(rate);
        let sequence = at + SAMPLE_SEQUENCE_AT;
        out[sequence..sequence + 4].copy_from_slice(&exporter.samples.to_be_bytes());
        let pool = at + SAMPLE_POOL_AT;
        out[pool..pool + 4].copy_from_slice(&exporter.sample_pool.to_be_bytes());
    }
}

/// A flow sample (format 1) of `flow` sampled 1 in `rate`; its sequence number and
/// sample pool left 0 (written per datagram).
pub(super) fn encode_flow_sample(flow: &Flow, rate: u32, out: &mut Vec<u8>) {
    let start = out.len();
    out.put_u32(1); // enterprise 0, format 1: flow sample
    let sample = out.mark();
    out.put_u32(0);
    out.put_u32(0); // sequence number
    out.put_u32(SOURCE_ID);
    out.put_u32(rate);
    out.put_u32(0); // sample pool
    out.put_u32(0); // drops
    out.put_u32(u32::from(flow.input_if));
    out.put_u32(u32::from(flow.output_if));
    out.put_u32(3); // records
    put_header_record(flow, out);
    // Extended switch (1001): source and destination VLAN and priority.
    out.put_u32(1001);
    out.put_u32(16);
    out.put_u32(u32::from(flow.vlan));
    out.put_u32(0);
    out.put_u32(u32::from(flow.vlan));
    out.put_u32(0);
    // Extended router (1002): next hop, source and destination prefix lengths.
    out.put_u32(1002);
    out.put_u32(16);
    out.put_u32(1);
    out.extend_from_slice(&flow.next_hop);
    out.put_u32(u32::from(flow.src_mask));
    out.put_u32(u32::from(flow.dst_mask));
    out.end_u32(sample);
    debug_assert!(out.len() - start <= MAX_SAMPLE);
}

/// Raw packet header record (1): Ethernet + IPv4 + the transport header of `flow`.
fn put_header_record(flow: &Flow, out: &mut Vec<u8>) {
    out.put_u32(1);
    let record = out.mark();
    out.put_u32(0);
    out.put_u32(1); // header protocol: Ethernet
    out.put_u32(flow.frame_length);
    out.put_u32(STRIPPED);
    let header_len = out.mark();
    out.put_u32(0);
    // Ethernet: destination, source, IPv4.
    out.extend_from_slice(&[0x00, 0x1b, 0x21, 0x3c, 0x4d, 0x5e]);
    out.extend_from_slice(&[
        0x00,
        0x25,
        0x90,
        flow.src_addr[1],
        flow.src_addr[2],
        flow.src_addr[3],
    ]);
    out.put_u16(0x0800);
    // IPv4 without options.
    let ip_length = (flow.frame_length - STRIPPED).saturating_sub(14).max(28) as u16;
    out.put_u8(0x45);
    out.put_u8(flow.tos);
    out.put_u16(ip_length);
    out.put_u16(flow.src_port ^ flow.dst_port); // identification
    out.put_u16(0x4000); // don't fragment
    out.put_u8(64);
    out.put_u8(flow.protocol);
    out.put_u16(0); // checksum
    out.extend_from_slice(&flow.src_addr);
    out.extend_from_slice(&flow.dst_addr);
    match flow.protocol {
        6 => {
            out.put_u16(flow.src_port);
            out.put_u16(flow.dst_port);
            out.put_u32(flow.bytes as u32); // sequence
            out.put_u32(0); // acknowledgement
            out.put_u8(0x50);
            out.put_u8(flow.tcp_flags);
            out.put_u16(65_535);
            out.put_u32(0); // checksum, urgent
        }
        17 => {
            out.put_u16(flow.src_port);
            out.put_u16(flow.dst_port);
            out.put_u16(ip_length.saturating_sub(20));
            out.put_u16(0);
        }
        _ => {
            out.extend_from_slice(&[8, 0, 0, 0, 0, 1, 0, 1]); // echo request
        }
    }
    out.end_u32(header_len);
    while !(out.len() - header_len).is_multiple_of(4) {
        out.push(0);
    }
    out.end_u32(record);
}
