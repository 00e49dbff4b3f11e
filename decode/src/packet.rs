//! Decoding of sampled packet headers (the sFlow "raw packet header" record) into
//! `FlowMessage` fields.
//!
//! Agents copy the first bytes of each sampled frame (usually 128), so headers are cut
//! anywhere. The decoder walks the layers front to back and stops at the first layer
//! whose fixed part is not all there: every field it fills came from bytes that were
//! present, and it never reads past the end of the header. Each decoded layer appends
//! one entry to `layer_stack` and its header size in bytes to `layer_size` (IPv6
//! hop-by-hop, destination-options and authentication headers have no `LayerStack`
//! value: they are skipped by their length and not listed).
//!
//! Tunnels (IP-in-IP, GRE) are not entered: `proto` names the tunnel protocol and the
//! outer addresses are reported.

use flowpb::{FlowMessage, LayerStack};

use crate::{set_bytes, set_text};

/// Ethertype of IPv4.
pub const ETHERTYPE_IPV4: u16 = 0x0800;
/// Ethertype of IPv6.
pub const ETHERTYPE_IPV6: u16 = 0x86DD;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_QINQ: u16 = 0x88A8;
const ETHERTYPE_QINQ_LEGACY: u16 = 0x9100;
const ETHERTYPE_MPLS_UNICAST: u16 = 0x8847;
const ETHERTYPE_MPLS_MULTICAST: u16 = 0x8848;
/// Values below this in the Ethernet type field are 802.3 lengths, not ethertypes.
const ETHERTYPE_MIN: u16 = 0x0600;

const PROTO_HOP_BY_HOP: u8 = 0;
const PROTO_ICMP: u8 = 1;
const PROTO_TCP: u8 = 6;
const PROTO_UDP: u8 = 17;
const PROTO_IPV6_ROUTING: u8 = 43;
const PROTO_IPV6_FRAGMENT: u8 = 44;
const PROTO_AUTH_HEADER: u8 = 51;
const PROTO_ICMPV6: u8 = 58;
const PROTO_IPV6_DEST_OPTS: u8 = 60;

/// IPv6 routing header type of the Segment Routing Header (RFC 8754).
const ROUTING_TYPE_SRH: u8 = 4;

/// Layers walked at most: a hostile header of back-to-back VLAN tags or extension
/// headers cannot make the walk long.
const MAX_LAYERS: usize = 32;
/// MPLS label stack entries decoded at most.
const MAX_MPLS_LABELS: usize = 16;

/// What a sampled header starts with: the sFlow `header_protocol` of the record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeaderProtocol {
    /// 1: ETHERNET-ISO88023.
    Ethernet,
    /// 11: an IPv4 header with no link layer.
    Ipv4,
    /// 12: an IPv6 header with no link layer.
    Ipv6,
    /// Any other link type (token ring, FDDI, PPP, …): not decoded.
    Other(u32),
}

impl HeaderProtocol {
    /// Maps the sFlow `header_protocol` code.
    pub fn from_sflow(code: u32) -> Self {
        match code {
            1 => HeaderProtocol::Ethernet,
            11 => HeaderProtocol::Ipv4,
            12 => HeaderProtocol::Ipv6,
            other => HeaderProtocol::Other(other),
        }
    }
}

/// The IANA keyword of an IP protocol number, as `protocol_name` carries it ("TCP",
/// "UDP", "ICMP", "IPv6-ICMP", …); empty for numbers without a common keyword.
pub fn protocol_name(proto: u8) -> &'static str {
    match proto {
        0 => "HOPOPT",
        1 => "ICMP",
        2 => "IGMP",
        4 => "IPv4",
        6 => "TCP",
        8 => "EGP",
        9 => "IGP",
        17 => "UDP",
        27 => "RDP",
        33 => "DCCP",
        41 => "IPv6",
        43 => "IPv6-Route",
        44 => "IPv6-Frag",
        46 => "RSVP",
        47 => "GRE",
        50 => "ESP",
        51 => "AH",
        58 => "IPv6-ICMP",
        59 => "IPv6-NoNxt",
        60 => "IPv6-Opts",
        88 => "EIGRP",
        89 => "OSPFIGP",
        94 => "IPIP",
        97 => "ETHERIP",
        103 => "PIM",
        108 => "IPComp",
        112 => "VRRP",
        115 => "L2TP",
        132 => "SCTP",
        135 => "Mobility Header",
        136 => "UDPLite",
        137 => "MPLS-in-IP",
        143 => "Ethernet",
        _ => "",
    }
}

/// Decodes a sampled header into `msg`: MACs, VLAN, MPLS labels, addresses, ports,
/// protocol, TOS/TTL, fragmentation, flags, ICMP type/code, SRv6 segments, and the
/// layer stack. Fields of layers that are absent or cut off are left untouched.
pub fn decode_sampled_header(protocol: HeaderProtocol, header: &[u8], msg: &mut FlowMessage) {
    let first = match protocol {
        HeaderProtocol::Ethernet => Layer::Ethernet,
        HeaderProtocol::Ipv4 => Layer::Ipv4,
        HeaderProtocol::Ipv6 => Layer::Ipv6,
        HeaderProtocol::Other(_) => return,
    };
    let mut walk = Walk { msg, vlan_seen: false, proto: None };
    let mut next = Some(first);
    let mut offset = 0usize;
    for _ in 0..MAX_LAYERS {
        let Some(layer) = next else { break };
        let Some(rest) = header.get(offset..) else { break };
        let Some(step) = walk.decode(layer, rest) else { break };
        offset = offset.saturating_add(step.size);
        next = step.next;
    }
    if let Some(proto) = walk.proto {
        set_text(&mut walk.msg.protocol_name, protocol_name(proto));
    }
}

/// The layers the walk knows how to decode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layer {
    Ethernet,
    Vlan,
    Mpls,
    Ipv4,
    Ipv6,
    /// An IPv6 extension header, by its protocol number.
    Ipv6Extension(u8),
    Tcp,
    Udp,
    Icmp,
    Icmpv6,
}

/// One decoded layer: how many bytes it spans and what follows it.
struct Step {
    size: usize,
    next: Option<Layer>,
}

/// The state of one header walk.
struct Walk<'m> {
    msg: &'m mut FlowMessage,
    /// `vlan_id` reports the outermost tag (the one the switch forwarded on).
    vlan_seen: bool,
    /// The last IP protocol number met, named once the walk ends.
    proto: Option<u8>,
}

impl Walk<'_> {
    /// Decodes `layer` at the start of `data`; `None` when its fixed part is cut off
    /// or invalid, which ends the walk.
    fn decode(&mut self, layer: Layer, data: &[u8]) -> Option<Step> {
        match layer {
            Layer::Ethernet => self.ethernet(data),
            Layer::Vlan => self.vlan(data),
            Layer::Mpls => self.mpls(data),
            Layer::Ipv4 => self.ipv4(data),
            Layer::Ipv6 => self.ipv6(data),
            Layer::Ipv6Extension(kind) => self.ipv6_extension(kind, data),
            Layer::Tcp => self.tcp(data),
            Layer::Udp => self.udp(data),
            Layer::Icmp => self.icmp(data, LayerStack::Icmp),
            Layer::Icmpv6 => self.icmp(data, LayerStack::IcmPv6),
        }
    }

    fn push_layer(&mut self, layer: LayerStack, size: usize) {
        self.msg.layer_stack.push(layer as i32);
        self.msg.layer_size.push(u32::try_from(size).unwrap_or(u32::MAX));
    }

    fn ethernet(&mut self, data: &[u8]) -> Option<Step> {
        let h: [u8; 14] = array(data, 0)?;
        let [d0, d1, d2, d3, d4, d5, s0, s1, s2, s3, s4, s5, t0, t1] = h;
        self.msg.dst_mac = mac_to_u64([d0, d1, d2, d3, d4, d5]);
        self.msg.src_mac = mac_to_u64([s0, s1, s2, s3, s4, s5]);
        self.push_layer(LayerStack::Ethernet, 14);
        Some(Step { size: 14, next: self.after_ethertype(u16::from_be_bytes([t0, t1])) })
    }

    fn vlan(&mut self, data: &[u8]) -> Option<Step> {
        let [c0, c1, t0, t1]: [u8; 4] = array(data, 0)?;
        if !self.vlan_seen {
            self.vlan_seen = true;
            self.msg.vlan_id = u32::from(u16::from_be_bytes([c0, c1]) & 0x0FFF);
        }
        self.push_layer(LayerStack::Dot1Q, 4);
        Some(Step { size: 4, next: self.after_ethertype(u16::from_be_bytes([t0, t1])) })
    }

    /// Records the ethertype and picks the layer it announces.
    fn after_ethertype(&mut self, ethertype: u16) -> Option<Layer> {
        if ethertype < ETHERTYPE_MIN {
            return None;
        }
        self.msg.etype = u32::from(ethertype);
        match ethertype {
            ETHERTYPE_VLAN | ETHERTYPE_QINQ | ETHERTYPE_QINQ_LEGACY => Some(Layer::Vlan),
            ETHERTYPE_MPLS_UNICAST | ETHERTYPE_MPLS_MULTICAST => Some(Layer::Mpls),
            ETHERTYPE_IPV4 => Some(Layer::Ipv4),
            ETHERTYPE_IPV6 => Some(Layer::Ipv6),
            _ => None,
        }
    }

    /// The whole label stack is one MPLS layer. MPLS does not say what it carries, so
    /// the payload is guessed from the IP version nibble after the bottom of stack.
    fn mpls(&mut self, data: &[u8]) -> Option<Step> {
        let mut size = 0usize;
        let mut bottom = false;
        while !bottom && self.msg.mpls_label.len() < MAX_MPLS_LABELS {
            let Some(entry) = array::<4>(data, size) else { break };
            let word = u32::from_be_bytes(entry);
            self.msg.mpls_label.push(word >> 12);
            self.msg.mpls_ttl.push(word & 0xFF);
            bottom = word & 0x100 != 0;
            size += 4;
        }
        if size == 0 {
            return None;
        }
        self.push_layer(LayerStack::Mpls, size);
        let next = if bottom { self.guess_ip_after_mpls(data.get(size).copied()) } else { None };
        Some(Step { size, next })
    }

    fn guess_ip_after_mpls(&mut self, first_byte: Option<u8>) -> Option<Layer> {
        match first_byte? >> 4 {
            4 => Some(Layer::Ipv4),
            6 => Some(Layer::Ipv6),
            _ => None,
        }
    }

    fn ipv4(&mut self, data: &[u8]) -> Option<Step> {
        let h: [u8; 20] = array(data, 0)?;
        let [ver_ihl, tos, _, _, id0, id1, ff0, ff1, ttl, proto, _, _, rest @ ..] = h;
        let [s0, s1, s2, s3, d0, d1, d2, d3] = rest;
        let header_len = usize::from(ver_ihl & 0x0F) * 4;
        if ver_ihl >> 4 != 4 || header_len < 20 {
            return None;
        }
        let flags_fragment = u16::from_be_bytes([ff0, ff1]);
        let fragment_offset = flags_fragment & 0x1FFF;
        let msg = &mut *self.msg;
        msg.etype = u32::from(ETHERTYPE_IPV4);
        set_bytes(&mut msg.src_addr, &[s0, s1, s2, s3]);
        set_bytes(&mut msg.dst_addr, &[d0, d1, d2, d3]);
        msg.ip_tos = u32::from(tos);
        msg.ip_ttl = u32::from(ttl);
        msg.fragment_id = u32::from(u16::from_be_bytes([id0, id1]));
        msg.fragment_offset = u32::from(fragment_offset);
        msg.ip_flags = u32::from(flags_fragment >> 13);
        self.set_proto(proto);
        self.push_layer(LayerStack::IPv4, header_len);
        // Only the first fragment carries the transport header.
        let next = if fragment_offset == 0 { transport_layer(proto, false) } else { None };
        Some(Step { size: header_len, next })
    }

    fn ipv6(&mut self, data: &[u8]) -> Option<Step> {
        let h: [u8; 40] = array(data, 0)?;
        let [v0, v1, v2, v3, _, _, next_header, hop_limit, addrs @ ..] = h;
        if v0 >> 4 != 6 {
            return None;
        }
        let (src, dst) = addrs.split_at(16);
        let msg = &mut *self.msg;
        msg.etype = u32::from(ETHERTYPE_IPV6);
        set_bytes(&mut msg.src_addr, src);
        set_bytes(&mut msg.dst_addr, dst);
        msg.ip_tos = u32::from(((v0 & 0x0F) << 4) | (v1 >> 4));
        msg.ipv6_flow_label = u32::from_be_bytes([v0, v1, v2, v3]) & 0x000F_FFFF;
        msg.ip_ttl = u32::from(hop_limit);
        self.set_proto(next_header);
        self.push_layer(LayerStack::IPv6, 40);
        Some(Step { size: 40, next: transport_layer(next_header, true) })
    }

    /// Walks one IPv6 extension header. `proto` follows the chain, so it ends as the
    /// upper-layer protocol rather than the first extension header's number.
    fn ipv6_extension(&mut self, kind: u8, data: &[u8]) -> Option<Step> {
        let fixed: [u8; 8] = array(data, 0)?;
        let [next_header, length, ..] = fixed;
        let size = match kind {
            PROTO_IPV6_FRAGMENT => 8,
            PROTO_AUTH_HEADER => (usize::from(length) + 2) * 4,
            _ => (usize::from(length) + 1) * 8,
        };
        // Only the first fragment's payload starts with the next header.
        let payload_follows = match kind {
            PROTO_IPV6_ROUTING => {
                self.ipv6_routing(fixed, data, size);
                true
            }
            PROTO_IPV6_FRAGMENT => self.ipv6_fragment(fixed),
            _ => true,
        };
        let next = if payload_follows { transport_layer(next_header, true) } else { None };
        self.set_proto(next_header);
        Some(Step { size, next })
    }

    /// Routing header: segments left for every type; the segment list for SRv6 (type 4),
    /// as far as it lies inside both the header and the captured bytes.
    fn ipv6_routing(&mut self, fixed: [u8; 8], data: &[u8], size: usize) {
        let [_, _, routing_type, segments_left, last_entry, ..] = fixed;
        self.msg.ipv6_routing_header_seg_left = u32::from(segments_left);
        if routing_type == ROUTING_TYPE_SRH {
            let within = data.get(..size).unwrap_or(data);
            let segments = within.get(8..).unwrap_or_default();
            self.msg.ipv6_routing_header_addresses.extend(
                segments.chunks_exact(16).take(usize::from(last_entry) + 1).map(<[u8]>::to_vec),
            );
        }
        self.push_layer(LayerStack::IPv6HeaderRouting, size);
    }

    /// Fragment header; returns whether this is the first fragment (the only one whose
    /// payload starts with the transport header).
    fn ipv6_fragment(&mut self, fixed: [u8; 8]) -> bool {
        let [_, _, o0, o1, i0, i1, i2, i3] = fixed;
        let offset_flags = u16::from_be_bytes([o0, o1]);
        let fragment_offset = offset_flags >> 3;
        self.msg.fragment_offset = u32::from(fragment_offset);
        self.msg.ip_flags = u32::from(offset_flags & 0x7);
        self.msg.fragment_id = u32::from_be_bytes([i0, i1, i2, i3]);
        self.push_layer(LayerStack::IPv6HeaderFragment, 8);
        fragment_offset == 0
    }

    /// TCP: ports need 4 bytes, flags 14; the layer size is the data offset when
    /// present (20 otherwise).
    fn tcp(&mut self, data: &[u8]) -> Option<Step> {
        let [s0, s1, d0, d1]: [u8; 4] = array(data, 0)?;
        self.msg.src_port = u32::from(u16::from_be_bytes([s0, s1]));
        self.msg.dst_port = u32::from(u16::from_be_bytes([d0, d1]));
        if let Some(flags) = data.get(13) {
            self.msg.tcp_flags = u32::from(*flags);
        }
        let size = match data.get(12) {
            Some(offset) if offset >> 4 >= 5 => usize::from(offset >> 4) * 4,
            _ => 20,
        };
        self.push_layer(LayerStack::Tcp, size);
        Some(Step { size, next: None })
    }

    fn udp(&mut self, data: &[u8]) -> Option<Step> {
        let [s0, s1, d0, d1]: [u8; 4] = array(data, 0)?;
        self.msg.src_port = u32::from(u16::from_be_bytes([s0, s1]));
        self.msg.dst_port = u32::from(u16::from_be_bytes([d0, d1]));
        self.push_layer(LayerStack::Udp, 8);
        Some(Step { size: 8, next: None })
    }

    fn icmp(&mut self, data: &[u8], layer: LayerStack) -> Option<Step> {
        let [icmp_type, icmp_code]: [u8; 2] = array(data, 0)?;
        self.msg.icmp_type = u32::from(icmp_type);
        self.msg.icmp_code = u32::from(icmp_code);
        self.push_layer(layer, 8);
        Some(Step { size: 8, next: None })
    }

    fn set_proto(&mut self, proto: u8) {
        self.msg.proto = u32::from(proto);
        self.proto = Some(proto);
    }
}

/// The layer an IP protocol number announces; extension headers only after IPv6.
fn transport_layer(proto: u8, ipv6: bool) -> Option<Layer> {
    match proto {
        PROTO_TCP => Some(Layer::Tcp),
        PROTO_UDP => Some(Layer::Udp),
        PROTO_ICMP => Some(Layer::Icmp),
        PROTO_ICMPV6 => Some(Layer::Icmpv6),
        PROTO_HOP_BY_HOP | PROTO_IPV6_ROUTING | PROTO_IPV6_FRAGMENT | PROTO_AUTH_HEADER
        | PROTO_IPV6_DEST_OPTS
            if ipv6 =>
        {
            Some(Layer::Ipv6Extension(proto))
        }
        _ => None,
    }
}

/// `N` bytes at `at`, or `None` when they are not all there.
fn array<const N: usize>(data: &[u8], at: usize) -> Option<[u8; N]> {
    let end = at.checked_add(N)?;
    data.get(at..end)?.try_into().ok()
}

/// A MAC address as the contract carries it: the low 48 bits, first octet most
/// significant.
pub fn mac_to_u64(mac: [u8; 6]) -> u64 {
    mac.iter().fold(0u64, |acc, byte| (acc << 8) | u64::from(*byte))
}
