//! Turning one decoded flow sample into a `FlowMessage`.

use flowpb::{FlowMessage, FlowType};

use super::datagram::{FlowSampleHeader, Interface};
use super::records::{
    ExtendedGateway, ExtendedRouter, ExtendedSwitch, FlowRecords, SampledEthernet, SampledIp,
};
use crate::packet::{self, mac_to_u64, protocol_name};
use crate::{set_address, set_bytes, set_text};

/// `forwarding_status` values (IPFIX IE 89, RFC 7270): the top two bits are the status.
const FORWARDED: u32 = 0x40;
const DROPPED: u32 = 0x80;
const CONSUMED: u32 = 0xC0;

/// What every flow of one datagram shares.
#[derive(Debug, Clone)]
pub(crate) struct DatagramContext {
    pub received_ns: u64,
    pub sequence: u32,
    /// The agent address in the contract's byte form.
    pub sampler_address: Vec<u8>,
}

/// Writes the flow of one sample into `msg`, a message at its defaults (a kept one
/// keeps its buffers). Records are applied from the least to the most
/// precise source, each overwriting what it knows: sampled IPv4/IPv6, then Ethernet
/// frame data, then the raw header; `bytes` likewise ends as the header's frame length
/// when there is one. The extended records fill fields no other record has.
pub(crate) fn write_flow(
    ctx: &DatagramContext,
    sample: &FlowSampleHeader,
    records: FlowRecords<'_>,
    msg: &mut FlowMessage,
) {
    msg.r#type = FlowType::Sflow5 as i32;
    msg.time_received_ns = ctx.received_ns;
    msg.time_flow_start_ns = ctx.received_ns;
    msg.time_flow_end_ns = ctx.received_ns;
    msg.sequence_num = ctx.sequence;
    msg.sampling_rate = u64::from(sample.sampling_rate);
    set_bytes(&mut msg.sampler_address, &ctx.sampler_address);
    msg.packets = 1;
    apply_interfaces(msg, sample.input, sample.output);
    if let Some(ip) = &records.ip {
        apply_sampled_ip(msg, ip);
    }
    if let Some(ethernet) = &records.ethernet {
        apply_sampled_ethernet(msg, ethernet);
    }
    if let Some(header) = &records.header {
        msg.bytes = u64::from(header.frame_length);
        packet::decode_sampled_header(header.protocol, header.header, msg);
    }
    if let Some(switch) = &records.switch {
        apply_extended_switch(msg, switch);
    }
    if let Some(router) = &records.router {
        apply_extended_router(msg, router);
    }
    if let Some(gateway) = records.gateway {
        apply_extended_gateway(msg, gateway);
    }
}

/// `in_if`/`out_if` carry real ifIndexes only (0 otherwise); the output's format sets
/// `forwarding_status`: discarded → Dropped (0x80), the device itself → Consumed
/// (0xC0), an interface or several → Forwarded (0x40), unknown (ifIndex 0) → 0.
pub(crate) fn apply_interfaces(msg: &mut FlowMessage, input: Interface, output: Interface) {
    msg.in_if = input.if_index();
    msg.out_if = output.if_index();
    msg.forwarding_status = match output {
        Interface::Discarded(_) => DROPPED,
        Interface::Internal => CONSUMED,
        Interface::Index(0) | Interface::Unknown(_) => 0,
        Interface::Index(_) | Interface::Multiple(_) => FORWARDED,
    };
}

fn apply_sampled_ip(msg: &mut FlowMessage, ip: &SampledIp) {
    msg.bytes = u64::from(ip.length);
    msg.etype =
        u32::from(if ip.src.is_ipv4() { packet::ETHERTYPE_IPV4 } else { packet::ETHERTYPE_IPV6 });
    set_address(&mut msg.src_addr, ip.src);
    set_address(&mut msg.dst_addr, ip.dst);
    msg.proto = ip.protocol;
    set_text(&mut msg.protocol_name, u8::try_from(ip.protocol).map(protocol_name).unwrap_or(""));
    msg.src_port = ip.src_port;
    msg.dst_port = ip.dst_port;
    msg.tcp_flags = ip.tcp_flags;
    msg.ip_tos = ip.tos;
}

fn apply_sampled_ethernet(msg: &mut FlowMessage, ethernet: &SampledEthernet) {
    msg.bytes = u64::from(ethernet.length);
    msg.src_mac = mac_to_u64(ethernet.src_mac);
    msg.dst_mac = mac_to_u64(ethernet.dst_mac);
    msg.etype = ethernet.ethertype;
}

fn apply_extended_switch(msg: &mut FlowMessage, switch: &ExtendedSwitch) {
    msg.src_vlan = switch.src_vlan;
    msg.dst_vlan = switch.dst_vlan;
}

fn apply_extended_router(msg: &mut FlowMessage, router: &ExtendedRouter) {
    if let Some(next_hop) = router.next_hop {
        set_address(&mut msg.next_hop, next_hop);
    }
    msg.src_net = router.src_mask_len;
    msg.dst_net = router.dst_mask_len;
}

/// As goflow2 maps it: the gateway's next hop is the BGP next hop; `dst_as` is the
/// last ASN of the destination path (the router's own AS when the path is empty: the
/// destination is local); `next_hop_as` the first ASN of the path; `src_as` the
/// reported source AS, or the router's AS when that is 0 (a local source).
fn apply_extended_gateway(msg: &mut FlowMessage, gateway: ExtendedGateway) {
    if let Some(next_hop) = gateway.next_hop {
        set_address(&mut msg.bgp_next_hop, next_hop);
    }
    msg.src_as = if gateway.src_as != 0 { gateway.src_as } else { gateway.router_as };
    msg.dst_as = gateway.as_path.last().copied().unwrap_or(gateway.router_as);
    msg.next_hop_as = gateway.as_path.first().copied().unwrap_or(0);
    msg.as_path = gateway.as_path;
    msg.bgp_communities = gateway.communities;
}
