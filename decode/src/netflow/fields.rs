//! Information Element → `FlowMessage` mapping for NetFlow v9 and IPFIX data records.
//!
//! A record is fed field by field into a [`FlowFields`] accumulator: as (`FieldSpec`,
//! wire bytes), or, from a compiled template ([`super::plan`]), with the field's
//! [`Target`] already known (integers go to their [`Slot`]); [`FlowFields::finish_into`]
//! then resolves the choices that need the whole record (address family, byte counters,
//! times) and writes the `FlowMessage`. [`target`] is the one mapping table.
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

use crate::packet::{ETHERTYPE_IPV4, ETHERTYPE_IPV6, protocol_name};
use crate::{set_bytes, set_text};

use super::options::{SamplerRef, SamplingFields};
use super::slots::{Ints, Slot, slot_set};
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

/// Integer slots of field groups most templates lack. A record with none of a group's
/// slots leaves the group's message fields at their defaults, so writing them is
/// skipped (the message is at its defaults when written).
const L2_SLOTS: u64 = slot_set(&[
    Slot::SrcMac,
    Slot::PostSrcMac,
    Slot::DstMac,
    Slot::PostDstMac,
    Slot::Vlan,
    Slot::PostVlan,
    Slot::Dot1qVlan,
]);
const NAT_FIREWALL_SLOTS: u64 =
    slot_set(&[Slot::PostNatSrcPort, Slot::PostNatDstPort, Slot::FirewallEvent, Slot::FlowId]);
/// The counters of a bi-directional record (initiator/responder, RFC 5103 reverse).
const BIDIRECTIONAL_SLOTS: u64 = slot_set(&[
    Slot::InitiatorOctets,
    Slot::InitiatorPackets,
    Slot::ResponderOctets,
    Slot::ResponderPackets,
    Slot::ReverseOctets,
    Slot::ReversePackets,
]);
const IP_DETAIL_SLOTS: u64 = slot_set(&[
    Slot::IpTtl,
    Slot::MinTtl,
    Slot::MaxTtl,
    Slot::FragmentFlags,
    Slot::FragmentId,
    Slot::FragmentOffset,
    Slot::FlowLabel,
    Slot::ForwardingStatus,
    Slot::IcmpTypeCode,
    Slot::IcmpType,
    Slot::IcmpCode,
]);

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
pub(crate) enum Target {
    /// An integer field (counters, ports, interfaces, MACs, ...).
    Int(Slot),
    SrcAddr4,
    DstAddr4,
    SrcAddr6,
    DstAddr6,
    NextHop4,
    NextHop6,
    BgpNextHop4,
    BgpNextHop6,
    MplsSection(u8),
    MplsTopAddr4,
    MplsTopAddr6,
    Sampling,
    PostNatSrc4,
    PostNatDst4,
    PostNatSrc6,
    PostNatDst6,
    DstCommunityList,
    Time(time::TimeField),
    SrhSegment,
    SrhSegmentList,
    SrhSegmentBasicList,
}

/// The parts of [`FlowFields`] a non-integer [`Target`] writes, a bit each: what
/// [`FlowFields::reset`] clears for the next record of a fixed-length template.
pub(crate) mod part {
    pub const SRC_ADDR: u16 = 1 << 0;
    pub const DST_ADDR: u16 = 1 << 1;
    pub const NEXT_HOP: u16 = 1 << 2;
    pub const BGP_NEXT_HOP: u16 = 1 << 3;
    pub const MPLS: u16 = 1 << 4;
    pub const MPLS_TOP_ADDR: u16 = 1 << 5;
    pub const SAMPLING: u16 = 1 << 6;
    pub const POST_NAT_SRC: u16 = 1 << 7;
    pub const POST_NAT_DST: u16 = 1 << 8;
    pub const COMMUNITIES: u16 = 1 << 9;
    pub const TIMES: u16 = 1 << 10;
    pub const SRH: u16 = 1 << 11;
}

impl Target {
    /// The part of [`FlowFields`] this target writes (see [`part`]); 0 for integers,
    /// which have their own reset.
    pub fn part(self) -> u16 {
        match self {
            Target::Int(_) => 0,
            Target::SrcAddr4 | Target::SrcAddr6 => part::SRC_ADDR,
            Target::DstAddr4 | Target::DstAddr6 => part::DST_ADDR,
            Target::NextHop4 | Target::NextHop6 => part::NEXT_HOP,
            Target::BgpNextHop4 | Target::BgpNextHop6 => part::BGP_NEXT_HOP,
            Target::MplsSection(_) => part::MPLS,
            Target::MplsTopAddr4 | Target::MplsTopAddr6 => part::MPLS_TOP_ADDR,
            Target::Sampling => part::SAMPLING,
            Target::PostNatSrc4 | Target::PostNatSrc6 => part::POST_NAT_SRC,
            Target::PostNatDst4 | Target::PostNatDst6 => part::POST_NAT_DST,
            Target::DstCommunityList => part::COMMUNITIES,
            Target::Time(_) => part::TIMES,
            Target::SrhSegment | Target::SrhSegmentList | Target::SrhSegmentBasicList => part::SRH,
        }
    }
}

/// The mapping table: IANA Information Element ids (v9 field types share the numbers)
/// and the RFC 5103 reverse counters.
pub(crate) fn target(spec: FieldSpec) -> Option<Target> {
    use time::TimeField;
    if spec.enterprise == REVERSE_PEN {
        return match spec.id {
            1 | 85 => Some(Target::Int(Slot::ReverseOctets)),
            2 | 86 => Some(Target::Int(Slot::ReversePackets)),
            _ => None,
        };
    }
    if spec.enterprise != 0 {
        return None;
    }
    Some(match spec.id {
        1 => Target::Int(Slot::OctetDelta),
        2 => Target::Int(Slot::PacketDelta),
        4 => Target::Int(Slot::Protocol),
        5 => Target::Int(Slot::Tos),
        6 => Target::Int(Slot::TcpFlags),
        7 => Target::Int(Slot::SrcPort),
        8 => Target::SrcAddr4,
        9 => Target::Int(Slot::SrcMask4),
        10 => Target::Int(Slot::InIf),
        11 => Target::Int(Slot::DstPort),
        12 => Target::DstAddr4,
        13 => Target::Int(Slot::DstMask4),
        14 => Target::Int(Slot::OutIf),
        15 => Target::NextHop4,
        16 => Target::Int(Slot::SrcAs),
        17 => Target::Int(Slot::DstAs),
        18 => Target::BgpNextHop4,
        21 => Target::Int(Slot::FlowEndUptime),
        22 => Target::Int(Slot::FlowStartUptime),
        23 => Target::Int(Slot::PostOctetDelta),
        24 => Target::Int(Slot::PostPacketDelta),
        27 => Target::SrcAddr6,
        28 => Target::DstAddr6,
        29 => Target::Int(Slot::SrcMask6),
        30 => Target::Int(Slot::DstMask6),
        31 => Target::Int(Slot::FlowLabel),
        32 | 139 => Target::Int(Slot::IcmpTypeCode),
        34 | 48 | 50 | 302 | 304 | 305 | 306 | 309 | 310 | 311 => Target::Sampling,
        47 => Target::MplsTopAddr4,
        52 => Target::Int(Slot::MinTtl),
        53 => Target::Int(Slot::MaxTtl),
        54 => Target::Int(Slot::FragmentId),
        56 => Target::Int(Slot::SrcMac),
        57 => Target::Int(Slot::PostDstMac),
        58 => Target::Int(Slot::Vlan),
        59 => Target::Int(Slot::PostVlan),
        60 => Target::Int(Slot::IpVersion),
        62 => Target::NextHop6,
        63 => Target::BgpNextHop6,
        // 70..=79: the id range fits the stack depth, so the cast is exact.
        70..=79 => Target::MplsSection((spec.id - 70) as u8),
        80 => Target::Int(Slot::DstMac),
        81 => Target::Int(Slot::PostSrcMac),
        85 => Target::Int(Slot::OctetTotal),
        86 => Target::Int(Slot::PacketTotal),
        88 => Target::Int(Slot::FragmentOffset),
        89 => Target::Int(Slot::ForwardingStatus),
        128 => Target::Int(Slot::NextHopAs),
        138 => Target::Int(Slot::ObservationPointId),
        140 => Target::MplsTopAddr6,
        148 => Target::Int(Slot::FlowId),
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
        160 => Target::Int(Slot::SystemInit),
        161 => Target::Time(TimeField::DurationMilliseconds),
        162 => Target::Time(TimeField::DurationMicroseconds),
        176 | 178 => Target::Int(Slot::IcmpType),
        177 | 179 => Target::Int(Slot::IcmpCode),
        192 => Target::Int(Slot::IpTtl),
        197 => Target::Int(Slot::FragmentFlags),
        225 => Target::PostNatSrc4,
        226 => Target::PostNatDst4,
        227 => Target::Int(Slot::PostNatSrcPort),
        228 => Target::Int(Slot::PostNatDstPort),
        231 => Target::Int(Slot::InitiatorOctets),
        232 => Target::Int(Slot::ResponderOctets),
        233 => Target::Int(Slot::FirewallEvent),
        243 => Target::Int(Slot::Dot1qVlan),
        256 => Target::Int(Slot::EthernetType),
        281 => Target::PostNatSrc6,
        282 => Target::PostNatDst6,
        298 => Target::Int(Slot::InitiatorPackets),
        299 => Target::Int(Slot::ResponderPackets),
        322 => Target::Time(TimeField::ObservationSeconds),
        323 => Target::Time(TimeField::ObservationMilliseconds),
        324 => Target::Time(TimeField::ObservationMicroseconds),
        325 => Target::Time(TimeField::ObservationNanoseconds),
        485 => Target::DstCommunityList,
        494 => Target::SrhSegment,
        496 => Target::SrhSegmentBasicList,
        497 => Target::SrhSegmentList,
        498 => Target::Int(Slot::SrhSegmentsLeft),
        // Cisco ASA NSEL (NetFlow v9 only: in IPFIX these ids carry the enterprise bit).
        NSEL_XLATE_SRC_ADDR_IPV4 => Target::PostNatSrc4,
        NSEL_XLATE_DST_ADDR_IPV4 => Target::PostNatDst4,
        NSEL_XLATE_SRC_PORT => Target::Int(Slot::PostNatSrcPort),
        NSEL_XLATE_DST_PORT => Target::Int(Slot::PostNatDstPort),
        NSEL_FW_EVENT => Target::Int(Slot::FirewallEvent),
        _ => return None,
    })
}

fn addr4(bytes: &[u8]) -> Option<[u8; 4]> {
    bytes.try_into().ok()
}

fn addr6(bytes: &[u8]) -> Option<[u8; 16]> {
    bytes.try_into().ok()
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
    fn is_empty(&self) -> bool {
        self.v4.is_none() && self.v6.is_none()
    }

    /// The value of `family` when present, else the other one.
    fn pick(&self, family: Option<Family>) -> Option<Result<&A, &B>> {
        match (family, &self.v4, &self.v6) {
            (Some(Family::V6), _, Some(v6)) => Some(Err(v6)),
            (_, Some(v4), _) => Some(Ok(v4)),
            (_, None, Some(v6)) => Some(Err(v6)),
            (_, None, None) => None,
        }
    }
}

/// An IPv4 or IPv6 address of a record, by reference (picking one copies no bytes).
type Address<'a> = Result<&'a [u8; 4], &'a [u8; 16]>;

/// The address of a pair that is not all zeros (IPv4 first), else whichever is present.
fn non_zero_first(pair: &ByFamily<[u8; 4], [u8; 16]>) -> Option<Address<'_>> {
    match pair {
        ByFamily { v4: Some(v4), .. } if *v4 != [0; 4] => Some(Ok(v4)),
        ByFamily { v6: Some(v6), .. } if *v6 != [0; 16] => Some(Err(v6)),
        pair => pair.pick(None),
    }
}

fn address_vec(value: Option<Address<'_>>) -> Vec<u8> {
    let mut bytes = Vec::new();
    write_address(&mut bytes, value);
    bytes
}

/// Sets an address field to `value`, if any (see [`set_bytes`]).
fn write_address(field: &mut Vec<u8>, value: Option<Address<'_>>) {
    match value {
        Some(Ok(v4)) => set_bytes(field, v4),
        Some(Err(v6)) => set_bytes(field, v6),
        None => {}
    }
}

/// The fields of one data record, collected before the `FlowMessage` is written.
#[derive(Debug, Default)]
pub(crate) struct FlowFields {
    ints: Ints,
    src_addr: ByFamily<[u8; 4], [u8; 16]>,
    dst_addr: ByFamily<[u8; 4], [u8; 16]>,
    /// Family of the first address IE that was not all zeros.
    first_family: Option<Family>,
    next_hop: ByFamily<[u8; 4], [u8; 16]>,
    bgp_next_hop: ByFamily<[u8; 4], [u8; 16]>,
    mpls_top_addr: ByFamily<[u8; 4], [u8; 16]>,
    /// MPLS label stack entries by position: (label stack section value, TTL).
    mpls: [Option<(u32, Option<u8>)>; MPLS_STACK_DEPTH],
    /// Whether any entry of `mpls` is set.
    has_mpls_entries: bool,
    sampling: SamplingFields,
    post_nat_src: ByFamily<[u8; 4], [u8; 16]>,
    post_nat_dst: ByFamily<[u8; 4], [u8; 16]>,
    communities: Vec<u32>,
    times: time::FlowTimes,
    srh_segments: Vec<Vec<u8>>,
}

impl FlowFields {
    /// Takes one field of the record, looking its mapping up (records are read through
    /// their template's compiled plan; this is the one-by-one reading the tests hold
    /// the plan to).
    #[cfg(test)]
    pub fn apply(&mut self, spec: FieldSpec, value: &[u8]) {
        if let Some(target) = target(spec) {
            self.apply_target(spec.id, target, value);
        }
    }

    /// Readies fields that held a record of a fixed-length template for the next
    /// record of the same template, as if new: `parts` are the parts its non-integer
    /// fields write (see [`part`]). The integer values stay: the template writes every
    /// one of its slots again and leaves the others at 0 (see [`Ints::forget`]).
    pub fn reset(&mut self, parts: u16) {
        self.ints.forget();
        self.first_family = None;
        if parts == 0 {
            return;
        }
        let reset = |bit: u16| parts & bit != 0;
        if reset(part::SRC_ADDR) {
            self.src_addr = ByFamily::default();
        }
        if reset(part::DST_ADDR) {
            self.dst_addr = ByFamily::default();
        }
        if reset(part::NEXT_HOP) {
            self.next_hop = ByFamily::default();
        }
        if reset(part::BGP_NEXT_HOP) {
            self.bgp_next_hop = ByFamily::default();
        }
        if reset(part::MPLS) {
            self.mpls = Default::default();
            self.has_mpls_entries = false;
        }
        if reset(part::MPLS_TOP_ADDR) {
            self.mpls_top_addr = ByFamily::default();
        }
        if reset(part::SAMPLING) {
            self.sampling = SamplingFields::default();
        }
        if reset(part::POST_NAT_SRC) {
            self.post_nat_src = ByFamily::default();
        }
        if reset(part::POST_NAT_DST) {
            self.post_nat_dst = ByFamily::default();
        }
        if reset(part::COMMUNITIES) {
            self.communities.clear();
        }
        if reset(part::TIMES) {
            self.times = time::FlowTimes::default();
        }
        if reset(part::SRH) {
            self.srh_segments.clear();
        }
    }

    /// Takes the value of an integer field whose length fits its slot (a compiled
    /// template checked it).
    pub fn apply_int(&mut self, slot: Slot, value: u64) {
        self.ints.first(slot, value);
    }

    /// Takes the integer values of distinct slots, `set` (see [`Ints::fill_unset`]);
    /// `false`, taking nothing, when one of them has a value already.
    pub fn fill_unset_ints(&mut self, set: u64, values: impl Iterator<Item = (Slot, u64)>) -> bool {
        self.ints.fill_unset(set, values)
    }

    /// Takes one field of the record whose mapping is known: `target(spec)` of its
    /// `FieldSpec`, whose Information Element id is `id`.
    #[inline]
    pub fn apply_target(&mut self, id: u16, target: Target, value: &[u8]) {
        match target {
            Target::Int(slot) => {
                if let Some(value) = slot.value(value) {
                    self.apply_int(slot, value);
                }
            }
            Target::SrcAddr4 => self.address4(true, value),
            Target::DstAddr4 => self.address4(false, value),
            Target::SrcAddr6 => self.address6(true, value),
            Target::DstAddr6 => self.address6(false, value),
            Target::NextHop4 => first(&mut self.next_hop.v4, addr4(value)),
            Target::NextHop6 => first(&mut self.next_hop.v6, addr6(value)),
            Target::BgpNextHop4 => first(&mut self.bgp_next_hop.v4, addr4(value)),
            Target::BgpNextHop6 => first(&mut self.bgp_next_hop.v6, addr6(value)),
            Target::MplsTopAddr4 => first(&mut self.mpls_top_addr.v4, addr4(value)),
            Target::MplsTopAddr6 => first(&mut self.mpls_top_addr.v6, addr6(value)),
            Target::MplsSection(position) => self.mpls_section(usize::from(position), value),
            Target::Sampling => {
                self.sampling.apply(id, value);
            }
            Target::PostNatSrc4 => first(&mut self.post_nat_src.v4, addr4(value)),
            Target::PostNatDst4 => first(&mut self.post_nat_dst.v4, addr4(value)),
            Target::PostNatSrc6 => first(&mut self.post_nat_src.v6, addr6(value)),
            Target::PostNatDst6 => first(&mut self.post_nat_dst.v6, addr6(value)),
            Target::DstCommunityList => self.community_list(value),
            Target::Time(field) => self.times.set(field, value),
            Target::SrhSegment => {
                if let Some(segment) = addr6(value) {
                    self.srh_segments.push(segment.to_vec());
                }
            }
            Target::SrhSegmentList => self.srh_segment_list(value),
            Target::SrhSegmentBasicList => self.srh_basic_list(value),
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
        *slot = match *value {
            [a, b, c] => Some((u32::from_be_bytes([0, a, b, c]), None)),
            [a, b, c, ttl] => Some((u32::from_be_bytes([0, a, b, c]), Some(ttl))),
            _ => return,
        };
        self.has_mpls_entries = true;
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
        self.ints.get(Slot::SystemInit)
    }

    /// The sampler reference the record carries (for the rate lookup).
    pub fn sampler(&self) -> SamplerRef {
        SamplerRef::new(&self.sampling, self.ints.u32(Slot::InIf))
    }

    /// A prefix length pair (IPv4 and IPv6 slots).
    fn masks(&self, v4: Slot, v6: Slot) -> ByFamily<u8, u8> {
        ByFamily { v4: self.ints.u8(v4), v6: self.ints.u8(v6) }
    }

    fn family(&self) -> Option<Family> {
        match self.ints.u8(Slot::IpVersion) {
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
            None => self.ints.u16_or_zero(Slot::EthernetType),
        };
        msg.r#type = ctx.flow_type as i32;
        msg.time_received_ns = ctx.received_ns;
        msg.sequence_num = ctx.sequence;
        msg.sampling_rate = sampling_rate;
        set_bytes(&mut msg.sampler_address, ctx.sampler_address);
        write_address(&mut msg.src_addr, src);
        write_address(&mut msg.dst_addr, dst);
        write_address(&mut msg.next_hop, self.next_hop.pick(address_family));
        write_address(&mut msg.bgp_next_hop, self.bgp_next_hop.pick(address_family));
        msg.observation_domain_id = ctx.domain;
        self.write_counters(msg);
        self.write_times(ctx, msg);
        self.write_l3_l4(address_family, msg);
        self.write_ip_details(msg);
        self.write_l2(msg);
        self.write_nat_and_firewall(msg);
        self.write_routing(address_family, msg);
    }

    fn write_nat_and_firewall(&self, msg: &mut FlowMessage) {
        let nat_addresses = !self.post_nat_src.is_empty() || !self.post_nat_dst.is_empty();
        if !nat_addresses && !self.ints.any(NAT_FIREWALL_SLOTS) {
            return;
        }
        write_address(&mut msg.post_nat_src_addr, non_zero_first(&self.post_nat_src));
        write_address(&mut msg.post_nat_dst_addr, non_zero_first(&self.post_nat_dst));
        msg.post_nat_src_port = self.ints.u16_or_zero(Slot::PostNatSrcPort);
        msg.post_nat_dst_port = self.ints.u16_or_zero(Slot::PostNatDstPort);
        msg.firewall_event = self.ints.u8_or_zero(Slot::FirewallEvent);
        msg.flow_id = self.ints.or_zero(Slot::FlowId);
    }

    fn write_counters(&self, msg: &mut FlowMessage) {
        let forward_bytes = self
            .ints
            .get(Slot::OctetDelta)
            .or(self.ints.get(Slot::OctetTotal))
            .or(self.ints.get(Slot::PostOctetDelta));
        let forward_packets = self
            .ints
            .get(Slot::PacketDelta)
            .or(self.ints.get(Slot::PacketTotal))
            .or(self.ints.get(Slot::PostPacketDelta));
        if !self.ints.any(BIDIRECTIONAL_SLOTS) {
            msg.bytes = forward_bytes.unwrap_or(0);
            msg.packets = forward_packets.unwrap_or(0);
            return;
        }
        let out_bytes = self.ints.get(Slot::InitiatorOctets).or(forward_bytes);
        let out_packets = self.ints.get(Slot::InitiatorPackets).or(forward_packets);
        let in_bytes = self.ints.get(Slot::ResponderOctets).or(self.ints.get(Slot::ReverseOctets));
        let in_packets =
            self.ints.get(Slot::ResponderPackets).or(self.ints.get(Slot::ReversePackets));
        msg.bytes_out = out_bytes.unwrap_or(0);
        msg.packets_out = out_packets.unwrap_or(0);
        msg.bytes_in = in_bytes.unwrap_or(0);
        msg.packets_in = in_packets.unwrap_or(0);
        msg.bytes = msg.bytes_out.saturating_add(msg.bytes_in);
        msg.packets = msg.packets_out.saturating_add(msg.packets_in);
    }

    /// The record's time elements, as resolving them needs.
    fn record_times(&self, ctx: &RecordContext<'_>) -> time::RecordTimes<&time::FlowTimes> {
        time::RecordTimes {
            times: &self.times,
            export_ms: ctx.export_ms,
            uptime_start: self.ints.u32(Slot::FlowStartUptime),
            uptime_end: self.ints.u32(Slot::FlowEndUptime),
        }
    }

    /// The record's times when its sysUpTime values wait for systemInitTimeMilliseconds
    /// (IPFIX without IE 160 in the record or announced yet); `None` otherwise.
    pub fn awaiting_system_init(&self, ctx: &RecordContext<'_>) -> Option<time::RecordTimes> {
        if time::UptimeBase::for_record(ctx, self.ints.get(Slot::SystemInit)).is_some() {
            return None;
        }
        let times = self.record_times(ctx);
        times.has_uptimes().then(|| times.held())
    }

    fn write_times(&self, ctx: &RecordContext<'_>, msg: &mut FlowMessage) {
        let base = time::UptimeBase::for_record(ctx, self.ints.get(Slot::SystemInit));
        let (start, end) = self.record_times(ctx).resolve(base);
        msg.time_flow_start_ns = start.unwrap_or(0);
        msg.time_flow_end_ns = end.unwrap_or(0);
    }

    fn write_l3_l4(&self, family: Option<Family>, msg: &mut FlowMessage) {
        if let Some(proto) = self.ints.u8(Slot::Protocol) {
            msg.proto = u32::from(proto);
            set_text(&mut msg.protocol_name, protocol_name(proto));
        }
        msg.src_port = self.ints.u16_or_zero(Slot::SrcPort);
        msg.dst_port = self.ints.u16_or_zero(Slot::DstPort);
        msg.ip_tos = self.ints.u8_or_zero(Slot::Tos);
        msg.tcp_flags = self.ints.u16_or_zero(Slot::TcpFlags);
        msg.src_net = self
            .masks(Slot::SrcMask4, Slot::SrcMask6)
            .pick(family)
            .map_or(0, |m| u32::from(*m.unwrap_or_else(|m| m)));
        msg.dst_net = self
            .masks(Slot::DstMask4, Slot::DstMask6)
            .pick(family)
            .map_or(0, |m| u32::from(*m.unwrap_or_else(|m| m)));
    }

    /// TTL, fragmentation, flow label, forwarding status and ICMP type/code.
    fn write_ip_details(&self, msg: &mut FlowMessage) {
        if !self.ints.any(IP_DETAIL_SLOTS) {
            return;
        }
        msg.ip_ttl = self
            .ints
            .u8(Slot::IpTtl)
            .or(self.ints.u8(Slot::MinTtl))
            .or(self.ints.u8(Slot::MaxTtl))
            .map_or(0, u32::from);
        msg.ip_flags = self.ints.u8_or_zero(Slot::FragmentFlags);
        msg.fragment_id = self.ints.u32_or_zero(Slot::FragmentId);
        msg.fragment_offset = self.ints.u16_or_zero(Slot::FragmentOffset);
        msg.ipv6_flow_label = self.ints.u32_or_zero(Slot::FlowLabel) & 0x000F_FFFF;
        msg.forwarding_status = self.ints.u32_or_zero(Slot::ForwardingStatus);
        if let Some(type_code) = self.ints.u16(Slot::IcmpTypeCode) {
            msg.icmp_type = u32::from(type_code >> 8);
            msg.icmp_code = u32::from(type_code & 0xFF);
        }
        if let Some(icmp_type) = self.ints.u8(Slot::IcmpType) {
            msg.icmp_type = u32::from(icmp_type);
        }
        if let Some(icmp_code) = self.ints.u8(Slot::IcmpCode) {
            msg.icmp_code = u32::from(icmp_code);
        }
    }

    fn write_l2(&self, msg: &mut FlowMessage) {
        if !self.ints.any(L2_SLOTS) {
            return;
        }
        msg.src_mac = self.ints.get(Slot::SrcMac).or(self.ints.get(Slot::PostSrcMac)).unwrap_or(0);
        msg.dst_mac = self.ints.get(Slot::DstMac).or(self.ints.get(Slot::PostDstMac)).unwrap_or(0);
        msg.src_vlan = self.ints.u16_or_zero(Slot::Vlan);
        msg.dst_vlan = self.ints.u16_or_zero(Slot::PostVlan);
        msg.vlan_id =
            self.ints.u16(Slot::Vlan).or(self.ints.u16(Slot::Dot1qVlan)).map_or(0, u32::from);
    }

    fn write_routing(&mut self, family: Option<Family>, msg: &mut FlowMessage) {
        msg.in_if = self.ints.u32_or_zero(Slot::InIf);
        msg.out_if = self.ints.u32_or_zero(Slot::OutIf);
        msg.src_as = self.ints.u32_or_zero(Slot::SrcAs);
        msg.dst_as = self.ints.u32_or_zero(Slot::DstAs);
        msg.next_hop_as = self.ints.u32_or_zero(Slot::NextHopAs);
        msg.observation_point_id = self.ints.u32_or_zero(Slot::ObservationPointId);
        if self.has_mpls_entries {
            for (entry, ttl) in self.mpls.iter().flatten() {
                msg.mpls_label.push(entry >> 4);
                if let Some(ttl) = ttl {
                    msg.mpls_ttl.push(u32::from(*ttl));
                }
            }
        }
        let top_addr = match &self.mpls_top_addr {
            ByFamily { v4: Some(v4), v6: Some(v6) } if *v4 == [0; 4] && *v6 != [0; 16] => {
                Some(Err(v6))
            }
            pair => pair.pick(family),
        };
        if top_addr.is_some() {
            msg.mpls_ip.push(address_vec(top_addr));
        }
        msg.bgp_communities = std::mem::take(&mut self.communities);
        msg.ipv6_routing_header_addresses = std::mem::take(&mut self.srh_segments);
        msg.ipv6_routing_header_seg_left = self.ints.u8_or_zero(Slot::SrhSegmentsLeft);
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

    /// Each integer element the mapping takes changes the message on its own, so the
    /// groups of fields written only when one of their slots has a value
    /// ([`L2_SLOTS`], [`NAT_FIREWALL_SLOTS`], [`IP_DETAIL_SLOTS`]) miss no slot.
    #[test]
    fn every_integer_element_shows_in_the_message_on_its_own() {
        let v9 = RecordContext { sys_uptime_ms: Some(1_000_000), ..ctx() };
        let message = |mut fields: FlowFields| {
            let mut msg = FlowMessage::default();
            fields.finish_into(&v9, 0, &mut msg);
            msg
        };
        let empty = message(FlowFields::default());
        let mut slots = Vec::new();
        for enterprise in [0, REVERSE_PEN] {
            for id in 0..=u16::MAX {
                match target(FieldSpec { id, enterprise, length: 6 }) {
                    // IE 160 only dates sysUpTime values; alone it has nothing to date.
                    Some(Target::Int(Slot::SystemInit)) | None => {}
                    Some(Target::Int(slot)) => slots.push((id, slot)),
                    Some(_) => {}
                }
            }
        }
        for (id, slot) in &slots {
            let mut fields = FlowFields::default();
            fields.apply_int(*slot, 0x0102_0304_0506);
            assert_ne!(message(fields), empty, "element {id} ({slot:?}) left no trace");
        }
        assert!(slots.len() > 60, "{} integer elements", slots.len());
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
