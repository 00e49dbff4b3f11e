//! Hand-built sFlow v5 datagrams and sampled packets for the sFlow tests: every byte
//! written here follows the sFlow v5 specification's XDR layout.
#![allow(dead_code)]

pub mod tools;

use std::net::{IpAddr, SocketAddr};

use flow_decode::{
    Datagram, DatagramReport, ExporterSession, FlowBuffer, SflowSession, SflowSettings,
};
use flowpb::FlowMessage;

/// An XDR writer.
#[derive(Debug, Default, Clone)]
pub struct Xdr(pub Vec<u8>);

impl Xdr {
    pub fn new() -> Self {
        Xdr(Vec::new())
    }
    pub fn u32(mut self, value: u32) -> Self {
        self.0.extend_from_slice(&value.to_be_bytes());
        self
    }
    pub fn raw(mut self, bytes: &[u8]) -> Self {
        self.0.extend_from_slice(bytes);
        self
    }
    /// Length, bytes, zero padding to 4.
    pub fn opaque(self, bytes: &[u8]) -> Self {
        let padding = (4 - bytes.len() % 4) % 4;
        self.u32(bytes.len() as u32).raw(bytes).raw(&[0; 3][..padding])
    }
    /// An sFlow `address`: type 1 + 4 bytes or type 2 + 16 bytes.
    pub fn address(self, addr: IpAddr) -> Self {
        match addr {
            IpAddr::V4(v4) => self.u32(1).raw(&v4.octets()),
            IpAddr::V6(v6) => self.u32(2).raw(&v6.octets()),
        }
    }
    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

/// A data format word: enterprise << 12 | format.
pub fn data_format(enterprise: u32, format: u32) -> u32 {
    (enterprise << 12) | format
}

/// A typed element (sample or record): format word, then the body as an opaque.
#[derive(Debug, Clone)]
pub struct Element {
    pub format: u32,
    pub body: Vec<u8>,
}

impl Element {
    pub fn new(format: u32, body: Vec<u8>) -> Self {
        Element { format, body }
    }
    fn write(&self, xdr: Xdr) -> Xdr {
        xdr.u32(self.format).opaque(&self.body)
    }
}

/// How the datagram header names its agent.
#[derive(Debug, Clone, Copy)]
pub enum Agent {
    Ip(IpAddr),
    /// Address type 0: no address bytes follow.
    Unknown,
    /// Any other type word followed by 4 bytes.
    BadType(u32),
}

#[derive(Debug, Clone)]
pub struct DatagramBuilder {
    pub version: u32,
    pub agent: Agent,
    pub sub_agent_id: u32,
    pub sequence: u32,
    pub uptime_ms: u32,
    pub samples: Vec<Element>,
    /// Overrides the sample count word when set.
    pub declared_samples: Option<u32>,
}

impl DatagramBuilder {
    pub fn new(agent: IpAddr) -> Self {
        DatagramBuilder {
            version: 5,
            agent: Agent::Ip(agent),
            sub_agent_id: 0,
            sequence: 1,
            uptime_ms: 60_000,
            samples: Vec::new(),
            declared_samples: None,
        }
    }
    pub fn sequence(mut self, sequence: u32) -> Self {
        self.sequence = sequence;
        self
    }
    pub fn uptime(mut self, uptime_ms: u32) -> Self {
        self.uptime_ms = uptime_ms;
        self
    }
    pub fn sub_agent(mut self, id: u32) -> Self {
        self.sub_agent_id = id;
        self
    }
    pub fn sample(mut self, sample: Element) -> Self {
        self.samples.push(sample);
        self
    }
    pub fn build(&self) -> Vec<u8> {
        let mut xdr = Xdr::new().u32(self.version);
        xdr = match self.agent {
            Agent::Ip(addr) => xdr.address(addr),
            Agent::Unknown => xdr.u32(0),
            Agent::BadType(kind) => xdr.u32(kind).raw(&[1, 2, 3, 4]),
        };
        xdr = xdr
            .u32(self.sub_agent_id)
            .u32(self.sequence)
            .u32(self.uptime_ms)
            .u32(self.declared_samples.unwrap_or(self.samples.len() as u32));
        for sample in &self.samples {
            xdr = sample.write(xdr);
        }
        xdr.into_bytes()
    }
}

/// Compact flow sample (format 1).
pub fn flow_sample(sampling_rate: u32, input: u32, output: u32, records: &[Element]) -> Element {
    let mut xdr = Xdr::new()
        .u32(7) // sample sequence
        .u32(3) // source id: ifIndex 3
        .u32(sampling_rate)
        .u32(1_000) // sample pool
        .u32(0) // drops
        .u32(input)
        .u32(output)
        .u32(records.len() as u32);
    for record in records {
        xdr = record.write(xdr);
    }
    Element::new(1, xdr.into_bytes())
}

/// Expanded flow sample (format 3), interfaces as (format, value) pairs.
pub fn expanded_flow_sample(
    sampling_rate: u32,
    input: (u32, u32),
    output: (u32, u32),
    records: &[Element],
) -> Element {
    let mut xdr = Xdr::new()
        .u32(9) // sample sequence
        .u32(0) // source id type
        .u32(0x0100_0000) // source id index beyond 24 bits
        .u32(sampling_rate)
        .u32(5_000)
        .u32(2)
        .u32(input.0)
        .u32(input.1)
        .u32(output.0)
        .u32(output.1)
        .u32(records.len() as u32);
    for record in records {
        xdr = record.write(xdr);
    }
    Element::new(3, xdr.into_bytes())
}

/// Counter sample (format 2) with one generic interface counters record; `expanded`
/// gives format 4.
pub fn counter_sample(expanded: bool) -> Element {
    let counters = Element::new(1, vec![0xAB; 88]);
    let mut xdr = Xdr::new().u32(11);
    xdr = if expanded { xdr.u32(0).u32(4) } else { xdr.u32(4) };
    xdr = counters.write(xdr.u32(1));
    Element::new(if expanded { 4 } else { 2 }, xdr.into_bytes())
}

/// Raw packet header record (1).
pub fn header_record(protocol: u32, frame_length: u32, header: &[u8]) -> Element {
    let xdr = Xdr::new().u32(protocol).u32(frame_length).u32(4).opaque(header);
    Element::new(1, xdr.into_bytes())
}

/// Ethernet frame data record (2): MACs padded to 8 bytes.
pub fn ethernet_record(length: u32, src: [u8; 6], dst: [u8; 6], ethertype: u32) -> Element {
    let xdr = Xdr::new().u32(length).raw(&src).raw(&[0, 0]).raw(&dst).raw(&[0, 0]).u32(ethertype);
    Element::new(2, xdr.into_bytes())
}

/// Sampled IPv4 (3) or IPv6 (4) record, chosen by the address family.
#[allow(clippy::too_many_arguments)]
pub fn ip_record(
    length: u32,
    protocol: u32,
    src: IpAddr,
    dst: IpAddr,
    src_port: u32,
    dst_port: u32,
    tcp_flags: u32,
    tos: u32,
) -> Element {
    let (format, src_bytes, dst_bytes) = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => (3, s.octets().to_vec(), d.octets().to_vec()),
        (IpAddr::V6(s), IpAddr::V6(d)) => (4, s.octets().to_vec(), d.octets().to_vec()),
        _ => panic!("mixed address families"),
    };
    let xdr = Xdr::new()
        .u32(length)
        .u32(protocol)
        .raw(&src_bytes)
        .raw(&dst_bytes)
        .u32(src_port)
        .u32(dst_port)
        .u32(tcp_flags)
        .u32(tos);
    Element::new(format, xdr.into_bytes())
}

/// Extended switch (1001).
pub fn switch_record(src_vlan: u32, dst_vlan: u32) -> Element {
    let xdr = Xdr::new().u32(src_vlan).u32(5).u32(dst_vlan).u32(6);
    Element::new(1001, xdr.into_bytes())
}

/// Extended router (1002); `None` next hop = address type 0.
pub fn router_record(next_hop: Option<IpAddr>, src_mask: u32, dst_mask: u32) -> Element {
    let xdr = match next_hop {
        Some(addr) => Xdr::new().address(addr),
        None => Xdr::new().u32(0),
    };
    Element::new(1002, xdr.u32(src_mask).u32(dst_mask).into_bytes())
}

/// Extended gateway (1003): segments are (type, ASNs).
pub fn gateway_record(
    next_hop: IpAddr,
    router_as: u32,
    src_as: u32,
    src_peer_as: u32,
    segments: &[(u32, Vec<u32>)],
    communities: &[u32],
    local_pref: u32,
) -> Element {
    let mut xdr = Xdr::new()
        .address(next_hop)
        .u32(router_as)
        .u32(src_as)
        .u32(src_peer_as)
        .u32(segments.len() as u32);
    for (kind, asns) in segments {
        xdr = xdr.u32(*kind).u32(asns.len() as u32);
        for asn in asns {
            xdr = xdr.u32(*asn);
        }
    }
    xdr = xdr.u32(communities.len() as u32);
    for community in communities {
        xdr = xdr.u32(*community);
    }
    Element::new(1003, xdr.u32(local_pref).into_bytes())
}

// ---- sampled packet layers ----

pub const MAC_A: [u8; 6] = [0x00, 0x11, 0x22, 0x33, 0x44, 0x55];
pub const MAC_B: [u8; 6] = [0x66, 0x77, 0x88, 0x99, 0xAA, 0xBB];

pub fn ethernet(dst: [u8; 6], src: [u8; 6], ethertype: u16) -> Vec<u8> {
    [&dst[..], &src[..], &ethertype.to_be_bytes()[..]].concat()
}

pub fn vlan_tag(pcp: u8, vlan: u16, ethertype: u16) -> Vec<u8> {
    let tci = (u16::from(pcp) << 13) | vlan;
    [tci.to_be_bytes(), ethertype.to_be_bytes()].concat()
}

pub fn mpls_entry(label: u32, bottom: bool, ttl: u8) -> Vec<u8> {
    ((label << 12) | (u32::from(bottom) << 8) | u32::from(ttl)).to_be_bytes().to_vec()
}

/// IPv4 header with no options (checksum left 0).
#[allow(clippy::too_many_arguments)]
pub fn ipv4(
    tos: u8,
    id: u16,
    flags: u8,
    fragment_offset: u16,
    ttl: u8,
    proto: u8,
    src: [u8; 4],
    dst: [u8; 4],
    payload_len: u16,
) -> Vec<u8> {
    let flags_fragment = (u16::from(flags) << 13) | fragment_offset;
    let mut h = vec![0x45, tos];
    h.extend_from_slice(&(20 + payload_len).to_be_bytes());
    h.extend_from_slice(&id.to_be_bytes());
    h.extend_from_slice(&flags_fragment.to_be_bytes());
    h.extend_from_slice(&[ttl, proto, 0, 0]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    h
}

pub fn ipv6(
    traffic_class: u8,
    flow_label: u32,
    next_header: u8,
    hop_limit: u8,
    src: [u8; 16],
    dst: [u8; 16],
    payload_len: u16,
) -> Vec<u8> {
    let word = (6u32 << 28) | (u32::from(traffic_class) << 20) | (flow_label & 0xF_FFFF);
    let mut h = word.to_be_bytes().to_vec();
    h.extend_from_slice(&payload_len.to_be_bytes());
    h.extend_from_slice(&[next_header, hop_limit]);
    h.extend_from_slice(&src);
    h.extend_from_slice(&dst);
    h
}

/// A hop-by-hop or destination options header of `8 * (units + 1)` bytes.
pub fn ipv6_options(next_header: u8, units: u8) -> Vec<u8> {
    let mut h = vec![next_header, units];
    h.resize(8 * (usize::from(units) + 1), 0);
    h
}

/// An SRv6 segment routing header (routing type 4).
pub fn srh(next_header: u8, segments_left: u8, segments: &[[u8; 16]]) -> Vec<u8> {
    let units = (segments.len() * 2) as u8;
    let last_entry = segments.len().saturating_sub(1) as u8;
    let mut h = vec![next_header, units, 4, segments_left, last_entry, 0, 0, 0];
    for segment in segments {
        h.extend_from_slice(segment);
    }
    h
}

pub fn ipv6_fragment(next_header: u8, offset_units: u16, more: bool, id: u32) -> Vec<u8> {
    let offset_flags = (offset_units << 3) | u16::from(more);
    let mut h = vec![next_header, 0];
    h.extend_from_slice(&offset_flags.to_be_bytes());
    h.extend_from_slice(&id.to_be_bytes());
    h
}

pub fn tcp(src_port: u16, dst_port: u16, flags: u8) -> Vec<u8> {
    let mut h = Vec::new();
    h.extend_from_slice(&src_port.to_be_bytes());
    h.extend_from_slice(&dst_port.to_be_bytes());
    h.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 0, 0x50, flags, 0xFF, 0xFF, 0, 0, 0, 0]);
    h
}

pub fn udp(src_port: u16, dst_port: u16, payload_len: u16) -> Vec<u8> {
    [src_port.to_be_bytes(), dst_port.to_be_bytes(), (8 + payload_len).to_be_bytes(), [0, 0]]
        .concat()
}

pub fn icmp(kind: u8, code: u8) -> Vec<u8> {
    vec![kind, code, 0, 0, 0, 1, 0, 1]
}

pub fn v6(last: u8) -> [u8; 16] {
    let mut a = [0u8; 16];
    a[0] = 0x20;
    a[1] = 0x01;
    a[2] = 0x0d;
    a[3] = 0xb8;
    a[15] = last;
    a
}

// ---- decoding ----

pub const SOURCE: &str = "192.0.2.50:6343";
pub const RECEIVED_NS: u64 = 1_700_000_000_123_456_789;

pub fn session() -> SflowSession {
    SflowSession::new(&SflowSettings::default())
}

pub fn decode_with(
    session: &mut SflowSession,
    payload: &[u8],
) -> (Vec<FlowMessage>, DatagramReport) {
    let source: SocketAddr = SOURCE.parse().expect("valid socket address");
    let mut out = FlowBuffer::new();
    let report = session.decode(Datagram { source, received_ns: RECEIVED_NS, payload }, &mut out);
    assert_eq!(report.flows, out.len(), "report.flows counts the flows appended");
    (out.take(), report)
}

pub fn decode(payload: &[u8]) -> (Vec<FlowMessage>, DatagramReport) {
    decode_with(&mut session(), payload)
}

/// Decodes one sampled header through a whole datagram and returns its single flow.
pub fn decode_header(protocol: u32, frame_length: u32, header: &[u8]) -> FlowMessage {
    let datagram = DatagramBuilder::new("10.0.0.1".parse().expect("ip"))
        .sample(flow_sample(256, 1, 2, &[header_record(protocol, frame_length, header)]))
        .build();
    let (mut flows, report) = decode(&datagram);
    assert!(report.errors.is_empty(), "unexpected errors: {:?}", report.errors);
    assert_eq!(flows.len(), 1);
    flows.remove(0)
}

pub fn layers(msg: &FlowMessage) -> Vec<(flowpb::LayerStack, u32)> {
    msg.layer_stack
        .iter()
        .map(|l| flowpb::LayerStack::try_from(*l).expect("known layer"))
        .zip(msg.layer_size.iter().copied())
        .collect()
}
