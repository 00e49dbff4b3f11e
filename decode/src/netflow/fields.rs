//! Information Element → `FlowMessage` mapping for NetFlow v9 and IPFIX data records.
//!
//! A record is fed field by field as (`FieldSpec`, wire bytes) into a [`FlowFields`]
//! accumulator; [`FlowFields::finish`] then resolves the choices that need the whole
//! record (address family, byte counters, times) and writes the `FlowMessage`.
//!
//! Rules that are ours, not the wire's:
//! - The first occurrence of an Information Element wins. Cisco SRv6 templates repeat
//!   the address/port/protocol IEs for the inner packet after the outer ones; the flow
//!   is the outer packet the router forwarded (its prefix lengths, AS numbers and next
//!   hops describe that packet), so the inner copies are ignored.
//! - Address family: `ipVersion` (60) when present; otherwise the family of the first
//!   address IE whose value is not all zeros (Cisco v9 templates carry both families,
//!   the unused one zeroed); otherwise whichever family is present (IPv6 first).
//!   Next hops, BGP next hops, prefix lengths and the MPLS top-label address follow the
//!   same family when both are present.
//! - TTL: `ipTTL` (192), else `minimumTTL` (52), else `maximumTTL` (53).
//! - Bytes/packets: delta counts (1/2), else total counts (85/86), else the v9
//!   OUT_BYTES/OUT_PKTS post counts (23/24). Bi-directional records (initiator /
//!   responder 231/232/298/299, or RFC 5103 reverse IEs under PEN 29305) fill
//!   `bytes_out`/`packets_out` (forward) and `bytes_in`/`packets_in` (reverse), and
//!   `bytes`/`packets` become the sum of both directions.
//!   Cisco ASA NSEL has no delta counts: its 231/232 (NF_F_FWD/REV_FLOW_DELTA_BYTES)
//!   and 298/299 are the counters, so such records never come out with zero bytes.
//! - MPLS: sections 70..79 are positions in the label stack; all-zero sections are the
//!   exporter's padding for a shorter stack and are skipped. The label is the top 20
//!   bits of the 3-byte section (then 3 EXP bits and the bottom-of-stack bit); a
//!   4-byte section carries the TTL in its last byte.
//! - NAT: postNATSource/DestinationIPv4Address (225/226), IPv6 (281/282) and
//!   postNAPTSource/DestinationTransportPort (227/228) fill the `post_nat_*` fields;
//!   NetFlow v9 from older Cisco ASA uses 40001..40004 (NF_F_XLATE_*) for the same.
//!   The post-NAT address family is the one with a non-zero address (NAT64 changes it).
//! - Firewall: firewallEvent (233, NSEL 40005 on older ASA) and flowId (148, the NSEL
//!   connection id) have fields of their own.
//! - BGP communities: bgpDestinationCommunityList (485), an RFC 6313 basicList of
//!   bgpCommunity (483), fills `bgp_communities` (the destination route's communities,
//!   as sFlow's gateway record gives them). The source list (484), extended and large
//!   communities have no field and are ignored; IPFIX has no AS path element.
//! - Sampling IEs in a data record (34/50, 305/306, 309/310, 311, 48, 302): see
//!   [`super::options`].
//! - Times: see [`super::time`].

use flowpb::{FlowMessage, FlowType};

use crate::packet::{ETHERTYPE_IPV4, ETHERTYPE_IPV6, mac_to_u64, protocol_name};

use super::options::{SamplerRef, SamplingFields};
use super::time;

/// One field of a template: Information Element id, enterprise number (0 = IANA) and
/// the declared length (65535 = IPFIX variable length).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FieldSpec {
    pub id: u16,
    pub enterprise: u32,
    pub length: u16,
}

/// IPFIX variable-length marker in a template field length.
pub(crate) const VARIABLE_LENGTH: u16 = u16::MAX;

/// Private enterprise number of the RFC 5103 reverse Information Elements.
const REVERSE_PEN: u32 = 29305;

/// Positions in an MPLS label stack the IPFIX registry names (70..=79).
const MPLS_STACK_DEPTH: usize = 10;

/// Cisco ASA NSEL NetFlow v9 field types of releases before 8.4(5).
const NSEL_XLATE_SRC_ADDR_IPV4: u16 = 40001;
const NSEL_XLATE_DST_ADDR_IPV4: u16 = 40002;
const NSEL_XLATE_SRC_PORT: u16 = 40003;
const NSEL_XLATE_DST_PORT: u16 = 40004;
const NSEL_FW_EVENT: u16 = 40005;

/// bgpCommunity, the element of the community lists 484/485.
const BGP_COMMUNITY: u16 = 483;

/// The export packet a record came in, as the mapping needs it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RecordContext<'a> {
    pub flow_type: FlowType,
    pub sequence: u32,
    pub domain: u32,
    /// Export time of the packet, Unix milliseconds (v9: header seconds × 1000).
    pub export_ms: u64,
    /// v9 header sysUpTime; `None` for IPFIX.
    pub sys_uptime_ms: Option<u32>,
    /// The exporter's boot time from options data (IE 160), Unix milliseconds.
    pub system_init_ms: Option<u64>,
    pub received_ns: u64,
    pub sampler_address: &'a [u8],
}

/// The address family a record describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

/// Where one Information Element goes. The match in [`target`] is the mapping table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Target {
    OctetDelta,
    PacketDelta,
    OctetTotal,
    PacketTotal,
    PostOctetDelta,
    PostPacketDelta,
    InitiatorOctets,
    ResponderOctets,
    InitiatorPackets,
    ResponderPackets,
    ReverseOctets,
    ReversePackets,
    Protocol,
    Tos,
    TcpFlags,
    SrcPort,
    DstPort,
    SrcAddr4,
    DstAddr4,
    SrcAddr6,
    DstAddr6,
    SrcMask4,
    DstMask4,
    SrcMask6,
    DstMask6,
    InIf,
    OutIf,
    NextHop4,
    NextHop6,
    BgpNextHop4,
    BgpNextHop6,
    SrcAs,
    DstAs,
    NextHopAs,
    FlowEndUptime,
    FlowStartUptime,
    FlowLabel,
    IcmpTypeCode,
    IcmpType,
    IcmpCode,
    MinTtl,
    MaxTtl,
    IpTtl,
    FragmentId,
    FragmentOffset,
    FragmentFlags,
    SrcMac,
    PostSrcMac,
    DstMac,
    PostDstMac,
    Vlan,
    PostVlan,
    Dot1qVlan,
    IpVersion,
    EthernetType,
    MplsSection(u8),
    MplsTopAddr4,
    MplsTopAddr6,
    ForwardingStatus,
    ObservationPointId,
    Sampling,
    PostNatSrc4,
    PostNatDst4,
    PostNatSrc6,
    PostNatDst6,
    PostNatSrcPort,
    PostNatDstPort,
    FirewallEvent,
    FlowId,
    DstCommunityList,
    Time(time::TimeField),
    SystemInit,
    SrhSegment,
    SrhSegmentList,
    SrhSegmentBasicList,
    SrhSegmentsLeft,
}

/// The mapping table: IANA Information Element ids (v9 field types share the numbers)
/// and the RFC 5103 reverse counters.
fn target(spec: FieldSpec) -> Option<Target> {
    use time::TimeField;
    if spec.enterprise == REVERSE_PEN {
        return match spec.id {
            1 | 85 => Some(Target::ReverseOctets),
            2 | 86 => Some(Target::ReversePackets),
            _ => None,
        };
    }
    if spec.enterprise != 0 {
        return None;
    }
    Some(match spec.id {
        1 => Target::OctetDelta,
        2 => Target::PacketDelta,
        4 => Target::Protocol,
        5 => Target::Tos,
        6 => Target::TcpFlags,
        7 => Target::SrcPort,
        8 => Target::SrcAddr4,
        9 => Target::SrcMask4,
        10 => Target::InIf,
        11 => Target::DstPort,
        12 => Target::DstAddr4,
        13 => Target::DstMask4,
        14 => Target::OutIf,
        15 => Target::NextHop4,
        16 => Target::SrcAs,
        17 => Target::DstAs,
        18 => Target::BgpNextHop4,
        21 => Target::FlowEndUptime,
        22 => Target::FlowStartUptime,
        23 => Target::PostOctetDelta,
        24 => Target::PostPacketDelta,
        27 => Target::SrcAddr6,
        28 => Target::DstAddr6,
        29 => Target::SrcMask6,
        30 => Target::DstMask6,
        31 => Target::FlowLabel,
        32 | 139 => Target::IcmpTypeCode,
        34 | 48 | 50 | 302 | 304 | 305 | 306 | 309 | 310 | 311 => Target::Sampling,
        47 => Target::MplsTopAddr4,
        52 => Target::MinTtl,
        53 => Target::MaxTtl,
        54 => Target::FragmentId,
        56 => Target::SrcMac,
        57 => Target::PostDstMac,
        58 => Target::Vlan,
        59 => Target::PostVlan,
        60 => Target::IpVersion,
        62 => Target::NextHop6,
        63 => Target::BgpNextHop6,
        // 70..=79: the id range fits the stack depth, so the cast is exact.
        70..=79 => Target::MplsSection((spec.id - 70) as u8),
        80 => Target::DstMac,
        81 => Target::PostSrcMac,
        85 => Target::OctetTotal,
        86 => Target::PacketTotal,
        88 => Target::FragmentOffset,
        89 => Target::ForwardingStatus,
        128 => Target::NextHopAs,
        138 => Target::ObservationPointId,
        140 => Target::MplsTopAddr6,
        148 => Target::FlowId,
        150 => Target::Time(TimeField::StartSeconds),
        151 => Target::Time(TimeField::EndSeconds),
        152 => Target::Time(TimeField::StartMilliseconds),
        153 => Target::Time(TimeField::EndMilliseconds),
        154 => Target::Time(TimeField::StartMicroseconds),
        155 => Target::Time(TimeField::EndMicroseconds),
        156 => Target::Time(TimeField::StartNanoseconds),
        157 => Target::Time(TimeField::EndNanoseconds),
        158 => Target::Time(TimeField::StartDeltaMicroseconds),
        159 => Target::Time(TimeField::EndDeltaMicroseconds),
        160 => Target::SystemInit,
        161 => Target::Time(TimeField::DurationMilliseconds),
        162 => Target::Time(TimeField::DurationMicroseconds),
        176 | 178 => Target::IcmpType,
        177 | 179 => Target::IcmpCode,
        192 => Target::IpTtl,
        197 => Target::FragmentFlags,
        225 => Target::PostNatSrc4,
        226 => Target::PostNatDst4,
        227 => Target::PostNatSrcPort,
        228 => Target::PostNatDstPort,
        231 => Target::InitiatorOctets,
        232 => Target::ResponderOctets,
        233 => Target::FirewallEvent,
        243 => Target::Dot1qVlan,
        256 => Target::EthernetType,
        281 => Target::PostNatSrc6,
        282 => Target::PostNatDst6,
        298 => Target::InitiatorPackets,
        299 => Target::ResponderPackets,
        322 => Target::Time(TimeField::ObservationSeconds),
        323 => Target::Time(TimeField::ObservationMilliseconds),
        324 => Target::Time(TimeField::ObservationMicroseconds),
        325 => Target::Time(TimeField::ObservationNanoseconds),
        485 => Target::DstCommunityList,
        494 => Target::SrhSegment,
        496 => Target::SrhSegmentBasicList,
        497 => Target::SrhSegmentList,
        498 => Target::SrhSegmentsLeft,
        // Cisco ASA NSEL (NetFlow v9 only: in IPFIX these ids carry the enterprise bit).
        NSEL_XLATE_SRC_ADDR_IPV4 => Target::PostNatSrc4,
        NSEL_XLATE_DST_ADDR_IPV4 => Target::PostNatDst4,
        NSEL_XLATE_SRC_PORT => Target::PostNatSrcPort,
        NSEL_XLATE_DST_PORT => Target::PostNatDstPort,
        NSEL_FW_EVENT => Target::FirewallEvent,
        _ => return None,
    })
}

/// An unsigned big-endian integer of 1 to 8 bytes (reduced-size encoding of any
/// width, including the 5–7 byte widths netflow_parser leaves raw).
pub(crate) fn be_uint(bytes: &[u8]) -> Option<u64> {
    if bytes.is_empty() || bytes.len() > 8 {
        return None;
    }
    Some(bytes.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)))
}

/// `be_uint` narrowed to 32 bits (values wider than 32 bits keep their low bits,
/// as a reduced-size field never carries more than its abstract type).
fn be_u32(bytes: &[u8]) -> Option<u32> {
    be_uint(bytes).map(|v| v as u32)
}

fn be_u16(bytes: &[u8]) -> Option<u16> {
    be_uint(bytes).map(|v| v as u16)
}

fn be_u8(bytes: &[u8]) -> Option<u8> {
    be_uint(bytes).map(|v| v as u8)
}

fn addr4(bytes: &[u8]) -> Option<[u8; 4]> {
    bytes.try_into().ok()
}

fn addr6(bytes: &[u8]) -> Option<[u8; 16]> {
    bytes.try_into().ok()
}

fn mac(bytes: &[u8]) -> Option<u64> {
    bytes.try_into().ok().map(mac_to_u64)
}

/// The elements of an RFC 6313 basicList (semantic (1), element id (2, enterprise bit),
/// element length (2), enterprise number (4) when the bit is set, then the elements)
/// when it lists IANA element `element_id` of fixed length `element_length`.
fn basic_list(value: &[u8], element_id: u16, element_length: u16) -> Option<&[u8]> {
    let id = u16::from_be_bytes([*value.get(1)?, *value.get(2)?]);
    let length = u16::from_be_bytes([*value.get(3)?, *value.get(4)?]);
    if id != element_id || length != element_length {
        return None;
    }
    value.get(5..)
}

/// Sets `slot` from `value` unless an earlier occurrence already did.
fn first<T>(slot: &mut Option<T>, value: Option<T>) {
    if slot.is_none() {
        *slot = value;
    }
}

/// An IPv4/IPv6 pair of one address-like field (addresses, next hops, masks).
#[derive(Debug, Default, Clone, Copy)]
struct ByFamily<A, B> {
    v4: Option<A>,
    v6: Option<B>,
}

impl<A: Copy, B: Copy> ByFamily<A, B> {
    /// The value of `family` when present, else the other one.
    fn pick(&self, family: Option<Family>) -> Option<Result<A, B>> {
        match (family, self.v4, self.v6) {
            (Some(Family::V6), _, Some(v6)) => Some(Err(v6)),
            (_, Some(v4), _) => Some(Ok(v4)),
            (_, None, Some(v6)) => Some(Err(v6)),
            (_, None, None) => None,
        }
    }
}

/// The address of a pair that is not all zeros (IPv4 first), else whichever is present.
fn non_zero_first(pair: ByFamily<[u8; 4], [u8; 16]>) -> Option<Result<[u8; 4], [u8; 16]>> {
    match pair {
        ByFamily { v4: Some(v4), .. } if v4 != [0; 4] => Some(Ok(v4)),
        ByFamily { v6: Some(v6), .. } if v6 != [0; 16] => Some(Err(v6)),
        pair => pair.pick(None),
    }
}

fn address_vec(value: Option<Result<[u8; 4], [u8; 16]>>) -> Vec<u8> {
    let mut bytes = Vec::new();
    write_address(&mut bytes, value);
    bytes
}

/// Writes an address into a field's buffer, which is empty (a reset message's).
fn write_address(field: &mut Vec<u8>, value: Option<Result<[u8; 4], [u8; 16]>>) {
    match value {
        Some(Ok(v4)) => field.extend_from_slice(&v4),
        Some(Err(v6)) => field.extend_from_slice(&v6),
        None => {}
    }
}

/// The fields of one data record, collected before the `FlowMessage` is written.
#[derive(Debug, Default)]
pub(crate) struct FlowFields {
    octet_delta: Option<u64>,
    packet_delta: Option<u64>,
    octet_total: Option<u64>,
    packet_total: Option<u64>,
    post_octet_delta: Option<u64>,
    post_packet_delta: Option<u64>,
    initiator_octets: Option<u64>,
    responder_octets: Option<u64>,
    initiator_packets: Option<u64>,
    responder_packets: Option<u64>,
    reverse_octets: Option<u64>,
    reverse_packets: Option<u64>,
    proto: Option<u8>,
    tos: Option<u8>,
    tcp_flags: Option<u16>,
    src_port: Option<u16>,
    dst_port: Option<u16>,
    src_addr: ByFamily<[u8; 4], [u8; 16]>,
    dst_addr: ByFamily<[u8; 4], [u8; 16]>,
    /// Family of the first address IE that was not all zeros.
    first_family: Option<Family>,
    ip_version: Option<u8>,
    ethernet_type: Option<u16>,
    src_mask: ByFamily<u8, u8>,
    dst_mask: ByFamily<u8, u8>,
    in_if: Option<u32>,
    out_if: Option<u32>,
    next_hop: ByFamily<[u8; 4], [u8; 16]>,
    bgp_next_hop: ByFamily<[u8; 4], [u8; 16]>,
    mpls_top_addr: ByFamily<[u8; 4], [u8; 16]>,
    src_as: Option<u32>,
    dst_as: Option<u32>,
    next_hop_as: Option<u32>,
    flow_label: Option<u32>,
    icmp_type_code: Option<u16>,
    icmp_type: Option<u8>,
    icmp_code: Option<u8>,
    ip_ttl: Option<u8>,
    min_ttl: Option<u8>,
    max_ttl: Option<u8>,
    fragment_id: Option<u32>,
    fragment_offset: Option<u16>,
    fragment_flags: Option<u8>,
    src_mac: Option<u64>,
    post_src_mac: Option<u64>,
    dst_mac: Option<u64>,
    post_dst_mac: Option<u64>,
    vlan: Option<u16>,
    post_vlan: Option<u16>,
    dot1q_vlan: Option<u16>,
    /// MPLS label stack entries by position: (label stack section value, TTL).
    mpls: [Option<(u32, Option<u8>)>; MPLS_STACK_DEPTH],
    forwarding_status: Option<u32>,
    observation_point_id: Option<u32>,
    sampling: SamplingFields,
    post_nat_src: ByFamily<[u8; 4], [u8; 16]>,
    post_nat_dst: ByFamily<[u8; 4], [u8; 16]>,
    post_nat_src_port: Option<u16>,
    post_nat_dst_port: Option<u16>,
    firewall_event: Option<u8>,
    flow_id: Option<u64>,
    communities: Vec<u32>,
    times: time::FlowTimes,
    system_init_ms: Option<u64>,
    uptime_start: Option<u32>,
    uptime_end: Option<u32>,
    srh_segments: Vec<Vec<u8>>,
    srh_segments_left: Option<u8>,
}

impl FlowFields {
    /// Takes one field of the record.
    pub fn apply(&mut self, spec: FieldSpec, value: &[u8]) {
        let Some(target) = target(spec) else {
            return;
        };
        match target {
            Target::OctetDelta => first(&mut self.octet_delta, be_uint(value)),
            Target::PacketDelta => first(&mut self.packet_delta, be_uint(value)),
            Target::OctetTotal => first(&mut self.octet_total, be_uint(value)),
            Target::PacketTotal => first(&mut self.packet_total, be_uint(value)),
            Target::PostOctetDelta => first(&mut self.post_octet_delta, be_uint(value)),
            Target::PostPacketDelta => first(&mut self.post_packet_delta, be_uint(value)),
            Target::InitiatorOctets => first(&mut self.initiator_octets, be_uint(value)),
            Target::ResponderOctets => first(&mut self.responder_octets, be_uint(value)),
            Target::InitiatorPackets => first(&mut self.initiator_packets, be_uint(value)),
            Target::ResponderPackets => first(&mut self.responder_packets, be_uint(value)),
            Target::ReverseOctets => first(&mut self.reverse_octets, be_uint(value)),
            Target::ReversePackets => first(&mut self.reverse_packets, be_uint(value)),
            Target::Protocol => first(&mut self.proto, be_u8(value)),
            Target::Tos => first(&mut self.tos, be_u8(value)),
            Target::TcpFlags => first(&mut self.tcp_flags, be_u16(value)),
            Target::SrcPort => first(&mut self.src_port, be_u16(value)),
            Target::DstPort => first(&mut self.dst_port, be_u16(value)),
            Target::SrcAddr4 => self.address4(true, value),
            Target::DstAddr4 => self.address4(false, value),
            Target::SrcAddr6 => self.address6(true, value),
            Target::DstAddr6 => self.address6(false, value),
            Target::SrcMask4 => first(&mut self.src_mask.v4, be_u8(value)),
            Target::DstMask4 => first(&mut self.dst_mask.v4, be_u8(value)),
            Target::SrcMask6 => first(&mut self.src_mask.v6, be_u8(value)),
            Target::DstMask6 => first(&mut self.dst_mask.v6, be_u8(value)),
            Target::InIf => first(&mut self.in_if, be_u32(value)),
            Target::OutIf => first(&mut self.out_if, be_u32(value)),
            Target::NextHop4 => first(&mut self.next_hop.v4, addr4(value)),
            Target::NextHop6 => first(&mut self.next_hop.v6, addr6(value)),
            Target::BgpNextHop4 => first(&mut self.bgp_next_hop.v4, addr4(value)),
            Target::BgpNextHop6 => first(&mut self.bgp_next_hop.v6, addr6(value)),
            Target::MplsTopAddr4 => first(&mut self.mpls_top_addr.v4, addr4(value)),
            Target::MplsTopAddr6 => first(&mut self.mpls_top_addr.v6, addr6(value)),
            Target::SrcAs => first(&mut self.src_as, be_u32(value)),
            Target::DstAs => first(&mut self.dst_as, be_u32(value)),
            Target::NextHopAs => first(&mut self.next_hop_as, be_u32(value)),
            Target::FlowEndUptime => first(&mut self.uptime_end, be_u32(value)),
            Target::FlowStartUptime => first(&mut self.uptime_start, be_u32(value)),
            Target::FlowLabel => first(&mut self.flow_label, be_u32(value)),
            Target::IcmpTypeCode => first(&mut self.icmp_type_code, be_u16(value)),
            Target::IcmpType => first(&mut self.icmp_type, be_u8(value)),
            Target::IcmpCode => first(&mut self.icmp_code, be_u8(value)),
            Target::MinTtl => first(&mut self.min_ttl, be_u8(value)),
            Target::MaxTtl => first(&mut self.max_ttl, be_u8(value)),
            Target::IpTtl => first(&mut self.ip_ttl, be_u8(value)),
            Target::FragmentId => first(&mut self.fragment_id, be_u32(value)),
            Target::FragmentOffset => first(&mut self.fragment_offset, be_u16(value)),
            Target::FragmentFlags => first(&mut self.fragment_flags, be_u8(value)),
            Target::SrcMac => first(&mut self.src_mac, mac(value)),
            Target::PostSrcMac => first(&mut self.post_src_mac, mac(value)),
            Target::DstMac => first(&mut self.dst_mac, mac(value)),
            Target::PostDstMac => first(&mut self.post_dst_mac, mac(value)),
            Target::Vlan => first(&mut self.vlan, be_u16(value)),
            Target::PostVlan => first(&mut self.post_vlan, be_u16(value)),
            Target::Dot1qVlan => first(&mut self.dot1q_vlan, be_u16(value)),
            Target::IpVersion => first(&mut self.ip_version, be_u8(value)),
            Target::EthernetType => first(&mut self.ethernet_type, be_u16(value)),
            Target::MplsSection(position) => self.mpls_section(usize::from(position), value),
            Target::ForwardingStatus => first(&mut self.forwarding_status, be_u32(value)),
            Target::ObservationPointId => first(&mut self.observation_point_id, be_u32(value)),
            Target::Sampling => {
                self.sampling.apply(spec.id, value);
            }
            Target::PostNatSrc4 => first(&mut self.post_nat_src.v4, addr4(value)),
            Target::PostNatDst4 => first(&mut self.post_nat_dst.v4, addr4(value)),
            Target::PostNatSrc6 => first(&mut self.post_nat_src.v6, addr6(value)),
            Target::PostNatDst6 => first(&mut self.post_nat_dst.v6, addr6(value)),
            Target::PostNatSrcPort => first(&mut self.post_nat_src_port, be_u16(value)),
            Target::PostNatDstPort => first(&mut self.post_nat_dst_port, be_u16(value)),
            Target::FirewallEvent => first(&mut self.firewall_event, be_u8(value)),
            Target::FlowId => first(&mut self.flow_id, be_uint(value)),
            Target::DstCommunityList => self.community_list(value),
            Target::Time(field) => self.times.set(field, value),
            Target::SystemInit => first(&mut self.system_init_ms, be_uint(value)),
            Target::SrhSegment => {
                if let Some(segment) = addr6(value) {
                    self.srh_segments.push(segment.to_vec());
                }
            }
            Target::SrhSegmentList => self.srh_segment_list(value),
            Target::SrhSegmentBasicList => self.srh_basic_list(value),
            Target::SrhSegmentsLeft => first(&mut self.srh_segments_left, be_u8(value)),
        }
    }

    fn address4(&mut self, source: bool, value: &[u8]) {
        let Some(addr) = addr4(value) else {
            return;
        };
        let slot = if source { &mut self.src_addr.v4 } else { &mut self.dst_addr.v4 };
        if slot.is_none() {
            *slot = Some(addr);
            if self.first_family.is_none() && addr != [0; 4] {
                self.first_family = Some(Family::V4);
            }
        }
    }

    fn address6(&mut self, source: bool, value: &[u8]) {
        let Some(addr) = addr6(value) else {
            return;
        };
        let slot = if source { &mut self.src_addr.v6 } else { &mut self.dst_addr.v6 };
        if slot.is_none() {
            *slot = Some(addr);
            if self.first_family.is_none() && addr != [0; 16] {
                self.first_family = Some(Family::V6);
            }
        }
    }

    fn mpls_section(&mut self, position: usize, value: &[u8]) {
        let Some(slot) = self.mpls.get_mut(position) else {
            return;
        };
        if slot.is_some() || value.iter().all(|b| *b == 0) {
            return;
        }
        let (entry, ttl) = match value.len() {
            3 => (be_u32(value), None),
            4 => (be_u32(&value[..3]), value.get(3).copied()),
            _ => (None, None),
        };
        if let Some(entry) = entry {
            *slot = Some((entry, ttl));
        }
    }

    /// srhSegmentIPv6ListSection: the SRH segment list as on the wire, 16 bytes each.
    fn srh_segment_list(&mut self, value: &[u8]) {
        if !self.srh_segments.is_empty() {
            return;
        }
        self.srh_segments = value.chunks_exact(16).map(<[u8]>::to_vec).collect();
    }

    /// srhSegmentIPv6BasicList: an RFC 6313 basicList of srhSegmentIPv6 (IE 494).
    fn srh_basic_list(&mut self, value: &[u8]) {
        if !self.srh_segments.is_empty() {
            return;
        }
        if let Some(elements) = basic_list(value, 494, 16) {
            self.srh_segments = elements.chunks_exact(16).map(<[u8]>::to_vec).collect();
        }
    }

    /// bgpDestinationCommunityList: a basicList of bgpCommunity (IE 483, 4 bytes).
    fn community_list(&mut self, value: &[u8]) {
        if !self.communities.is_empty() {
            return;
        }
        if let Some(elements) = basic_list(value, BGP_COMMUNITY, 4) {
            self.communities = elements
                .chunks_exact(4)
                .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
        }
    }

    /// systemInitTimeMilliseconds (IE 160) carried by the record itself.
    pub fn system_init_ms(&self) -> Option<u64> {
        self.system_init_ms
    }

    /// The sampler reference the record carries (for the rate lookup).
    pub fn sampler(&self) -> SamplerRef {
        SamplerRef::new(&self.sampling, self.in_if)
    }

    fn family(&self) -> Option<Family> {
        match self.ip_version {
            Some(4) => Some(Family::V4),
            Some(6) => Some(Family::V6),
            _ => self.first_family,
        }
    }

    /// Writes the record into `msg`, a message at its defaults (a fresh one, or one
    /// reset keeping its buffers); `sampling_rate` is the rate resolved for the record
    /// (0 when unknown).
    pub fn finish_into(
        &mut self,
        ctx: &RecordContext<'_>,
        sampling_rate: u64,
        msg: &mut FlowMessage,
    ) {
        let family = self.family();
        let src = self.src_addr.pick(family);
        let dst = self.dst_addr.pick(family);
        let address_family = match (src.or(dst), family) {
            (Some(Ok(_)), _) => Some(Family::V4),
            (Some(Err(_)), _) => Some(Family::V6),
            (None, family) => family,
        };
        msg.etype = match address_family {
            Some(Family::V4) => u32::from(ETHERTYPE_IPV4),
            Some(Family::V6) => u32::from(ETHERTYPE_IPV6),
            None => self.ethernet_type.map_or(0, u32::from),
        };
        msg.r#type = ctx.flow_type as i32;
        msg.time_received_ns = ctx.received_ns;
        msg.sequence_num = ctx.sequence;
        msg.sampling_rate = sampling_rate;
        msg.sampler_address.extend_from_slice(ctx.sampler_address);
        write_address(&mut msg.src_addr, src);
        write_address(&mut msg.dst_addr, dst);
        write_address(&mut msg.next_hop, self.next_hop.pick(address_family));
        write_address(&mut msg.bgp_next_hop, self.bgp_next_hop.pick(address_family));
        msg.observation_domain_id = ctx.domain;
        self.write_counters(msg);
        self.write_times(ctx, msg);
        self.write_l3_l4(address_family, msg);
        self.write_l2(msg);
        self.write_nat_and_firewall(msg);
        self.write_routing(address_family, msg);
    }

    fn write_nat_and_firewall(&self, msg: &mut FlowMessage) {
        write_address(&mut msg.post_nat_src_addr, non_zero_first(self.post_nat_src));
        write_address(&mut msg.post_nat_dst_addr, non_zero_first(self.post_nat_dst));
        msg.post_nat_src_port = self.post_nat_src_port.map_or(0, u32::from);
        msg.post_nat_dst_port = self.post_nat_dst_port.map_or(0, u32::from);
        msg.firewall_event = self.firewall_event.map_or(0, u32::from);
        msg.flow_id = self.flow_id.unwrap_or(0);
    }

    fn write_counters(&self, msg: &mut FlowMessage) {
        let forward_bytes = self.octet_delta.or(self.octet_total).or(self.post_octet_delta);
        let forward_packets = self.packet_delta.or(self.packet_total).or(self.post_packet_delta);
        let out_bytes = self.initiator_octets.or(forward_bytes);
        let out_packets = self.initiator_packets.or(forward_packets);
        let in_bytes = self.responder_octets.or(self.reverse_octets);
        let in_packets = self.responder_packets.or(self.reverse_packets);
        let bidirectional = self.initiator_octets.is_some()
            || self.initiator_packets.is_some()
            || in_bytes.is_some()
            || in_packets.is_some();
        if bidirectional {
            msg.bytes_out = out_bytes.unwrap_or(0);
            msg.packets_out = out_packets.unwrap_or(0);
            msg.bytes_in = in_bytes.unwrap_or(0);
            msg.packets_in = in_packets.unwrap_or(0);
            msg.bytes = msg.bytes_out.saturating_add(msg.bytes_in);
            msg.packets = msg.packets_out.saturating_add(msg.packets_in);
        } else {
            msg.bytes = forward_bytes.unwrap_or(0);
            msg.packets = forward_packets.unwrap_or(0);
        }
    }

    /// The record's time elements, as resolving them needs.
    fn record_times(&self, ctx: &RecordContext<'_>) -> time::RecordTimes {
        time::RecordTimes {
            times: self.times,
            export_ms: ctx.export_ms,
            uptime_start: self.uptime_start,
            uptime_end: self.uptime_end,
        }
    }

    /// The record's times when its sysUpTime values wait for systemInitTimeMilliseconds
    /// (IPFIX without IE 160 in the record or announced yet); `None` otherwise.
    pub fn awaiting_system_init(&self, ctx: &RecordContext<'_>) -> Option<time::RecordTimes> {
        let times = self.record_times(ctx);
        let base = time::UptimeBase::for_record(ctx, self.system_init_ms);
        (times.has_uptimes() && base.is_none()).then_some(times)
    }

    fn write_times(&self, ctx: &RecordContext<'_>, msg: &mut FlowMessage) {
        let base = time::UptimeBase::for_record(ctx, self.system_init_ms);
        let (start, end) = self.record_times(ctx).resolve(base);
        msg.time_flow_start_ns = start.unwrap_or(0);
        msg.time_flow_end_ns = end.unwrap_or(0);
    }

    fn write_l3_l4(&self, family: Option<Family>, msg: &mut FlowMessage) {
        if let Some(proto) = self.proto {
            msg.proto = u32::from(proto);
            msg.protocol_name.push_str(protocol_name(proto));
        }
        msg.src_port = self.src_port.map_or(0, u32::from);
        msg.dst_port = self.dst_port.map_or(0, u32::from);
        msg.ip_tos = self.tos.map_or(0, u32::from);
        msg.tcp_flags = self.tcp_flags.map_or(0, u32::from);
        msg.ip_ttl = self.ip_ttl.or(self.min_ttl).or(self.max_ttl).map_or(0, u32::from);
        msg.ip_flags = self.fragment_flags.map_or(0, u32::from);
        msg.fragment_id = self.fragment_id.unwrap_or(0);
        msg.fragment_offset = self.fragment_offset.map_or(0, u32::from);
        msg.ipv6_flow_label = self.flow_label.map_or(0, |label| label & 0x000F_FFFF);
        msg.forwarding_status = self.forwarding_status.unwrap_or(0);
        if let Some(type_code) = self.icmp_type_code {
            msg.icmp_type = u32::from(type_code >> 8);
            msg.icmp_code = u32::from(type_code & 0xFF);
        }
        if let Some(icmp_type) = self.icmp_type {
            msg.icmp_type = u32::from(icmp_type);
        }
        if let Some(icmp_code) = self.icmp_code {
            msg.icmp_code = u32::from(icmp_code);
        }
        msg.src_net = self.src_mask.pick(family).map_or(0, |m| u32::from(m.unwrap_or_else(|m| m)));
        msg.dst_net = self.dst_mask.pick(family).map_or(0, |m| u32::from(m.unwrap_or_else(|m| m)));
    }

    fn write_l2(&self, msg: &mut FlowMessage) {
        msg.src_mac = self.src_mac.or(self.post_src_mac).unwrap_or(0);
        msg.dst_mac = self.dst_mac.or(self.post_dst_mac).unwrap_or(0);
        msg.src_vlan = self.vlan.map_or(0, u32::from);
        msg.dst_vlan = self.post_vlan.map_or(0, u32::from);
        msg.vlan_id = self.vlan.or(self.dot1q_vlan).map_or(0, u32::from);
    }

    fn write_routing(&mut self, family: Option<Family>, msg: &mut FlowMessage) {
        msg.in_if = self.in_if.unwrap_or(0);
        msg.out_if = self.out_if.unwrap_or(0);
        msg.src_as = self.src_as.unwrap_or(0);
        msg.dst_as = self.dst_as.unwrap_or(0);
        msg.next_hop_as = self.next_hop_as.unwrap_or(0);
        msg.observation_point_id = self.observation_point_id.unwrap_or(0);
        for (entry, ttl) in self.mpls.iter().flatten() {
            msg.mpls_label.push(entry >> 4);
            if let Some(ttl) = ttl {
                msg.mpls_ttl.push(u32::from(*ttl));
            }
        }
        let top_addr = match self.mpls_top_addr {
            ByFamily { v4: Some(v4), v6: Some(v6) } if v4 == [0; 4] && v6 != [0; 16] => {
                Some(Err(v6))
            }
            pair => pair.pick(family),
        };
        if top_addr.is_some() {
            msg.mpls_ip.push(address_vec(top_addr));
        }
        msg.bgp_communities = std::mem::take(&mut self.communities);
        msg.ipv6_routing_header_addresses = std::mem::take(&mut self.srh_segments);
        msg.ipv6_routing_header_seg_left = self.srh_segments_left.map_or(0, u32::from);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(id: u16, length: u16) -> FieldSpec {
        FieldSpec { id, enterprise: 0, length }
    }

    fn finish(mut fields: FlowFields) -> FlowMessage {
        let mut msg = FlowMessage::default();
        fields.finish_into(&ctx(), 0, &mut msg);
        msg
    }

    fn ctx() -> RecordContext<'static> {
        RecordContext {
            flow_type: FlowType::Ipfix,
            sequence: 7,
            domain: 3,
            export_ms: 1_700_000_000_000,
            sys_uptime_ms: None,
            system_init_ms: None,
            received_ns: 5,
            sampler_address: &[192, 0, 2, 1],
        }
    }

    #[test]
    fn five_to_seven_byte_integers_decode_big_endian() {
        assert_eq!(be_uint(&[1, 2, 3, 4, 5]), Some(0x01_0203_0405));
        assert_eq!(be_uint(&[1, 2, 3, 4, 5, 6]), Some(0x0102_0304_0506));
        assert_eq!(be_uint(&[1, 2, 3, 4, 5, 6, 7]), Some(0x01_0203_0405_0607));
        assert_eq!(be_uint(&[]), None);
        assert_eq!(be_uint(&[0; 9]), None);
    }

    #[test]
    fn zeroed_ipv6_addresses_yield_to_ipv4() {
        let mut f = FlowFields::default();
        f.apply(spec(27, 16), &[0; 16]);
        f.apply(spec(28, 16), &[0; 16]);
        f.apply(spec(8, 4), &[10, 0, 0, 1]);
        f.apply(spec(12, 4), &[10, 0, 0, 2]);
        let msg = finish(f);
        assert_eq!(msg.src_addr, vec![10, 0, 0, 1]);
        assert_eq!(msg.dst_addr, vec![10, 0, 0, 2]);
        assert_eq!(msg.etype, 0x0800);
    }

    #[test]
    fn first_occurrence_wins_for_repeated_elements() {
        let outer: [u8; 16] = [0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let mut f = FlowFields::default();
        f.apply(spec(27, 16), &outer);
        f.apply(spec(4, 1), &[41]);
        f.apply(spec(8, 4), &[10, 0, 0, 1]);
        f.apply(spec(4, 1), &[1]);
        let msg = finish(f);
        assert_eq!(msg.src_addr, outer.to_vec());
        assert_eq!(msg.proto, 41);
        assert_eq!(msg.protocol_name, "IPv6");
        assert_eq!(msg.etype, 0x86DD);
    }

    #[test]
    fn mpls_sections_skip_zero_padding_and_keep_stack_order() {
        let mut f = FlowFields::default();
        f.apply(spec(71, 3), &[3, 234, 17]);
        f.apply(spec(70, 3), &[3, 236, 16]);
        f.apply(spec(72, 3), &[0, 0, 0]);
        let msg = finish(f);
        assert_eq!(msg.mpls_label, vec![0x03EC1, 0x03EA1]);
        assert!(msg.mpls_ttl.is_empty());
    }

    #[test]
    fn initiator_and_responder_counters_fill_both_directions() {
        let mut f = FlowFields::default();
        f.apply(spec(231, 8), &100u64.to_be_bytes());
        f.apply(spec(232, 8), &40u64.to_be_bytes());
        f.apply(spec(298, 4), &3u32.to_be_bytes());
        f.apply(spec(299, 4), &2u32.to_be_bytes());
        let msg = finish(f);
        assert_eq!((msg.bytes_out, msg.bytes_in, msg.bytes), (100, 40, 140));
        assert_eq!((msg.packets_out, msg.packets_in, msg.packets), (3, 2, 5));
    }

    #[test]
    fn icmp_type_code_splits_high_and_low_byte() {
        let mut f = FlowFields::default();
        f.apply(spec(139, 2), &[128, 3]);
        let msg = finish(f);
        assert_eq!((msg.icmp_type, msg.icmp_code), (128, 3));
    }

    #[test]
    fn srh_segment_list_section_splits_into_addresses() {
        let mut f = FlowFields::default();
        let mut list = vec![0u8; 32];
        list[15] = 1;
        list[31] = 2;
        f.apply(spec(497, VARIABLE_LENGTH), &list);
        f.apply(spec(498, 1), &[1]);
        let msg = finish(f);
        assert_eq!(msg.ipv6_routing_header_addresses.len(), 2);
        assert_eq!(msg.ipv6_routing_header_addresses[1][15], 2);
        assert_eq!(msg.ipv6_routing_header_seg_left, 1);
    }

    #[test]
    fn unknown_and_enterprise_elements_are_ignored() {
        let mut f = FlowFields::default();
        f.apply(FieldSpec { id: 1, enterprise: 9, length: 4 }, &[0, 0, 0, 9]);
        f.apply(spec(60000, 2), &[1, 2]);
        let msg = finish(f);
        assert_eq!(msg.bytes, 0);
    }
}
