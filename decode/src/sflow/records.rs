//! The flow records of a flow sample (sFlow v5 §5.2, enterprise 0): sampled header,
//! Ethernet frame data, sampled IPv4/IPv6, and the extended switch, router and gateway
//! records. Other records, and every record of another enterprise, are skipped by
//! their length.

use std::net::IpAddr;

use super::cursor::Cursor;
use super::datagram::{DataFormat, read_address, read_element};
use super::error::SflowError;
use crate::packet::HeaderProtocol;

const SAMPLED_HEADER: DataFormat = DataFormat::standard(1);
const SAMPLED_ETHERNET: DataFormat = DataFormat::standard(2);
const SAMPLED_IPV4: DataFormat = DataFormat::standard(3);
const SAMPLED_IPV6: DataFormat = DataFormat::standard(4);
const EXTENDED_SWITCH: DataFormat = DataFormat::standard(1001);
const EXTENDED_ROUTER: DataFormat = DataFormat::standard(1002);
const EXTENDED_GATEWAY: DataFormat = DataFormat::standard(1003);

/// Record 1: the first bytes of the sampled frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SampledHeader<'a> {
    pub protocol: HeaderProtocol,
    /// Length of the original frame, before sampling cut it.
    pub frame_length: u32,
    pub header: &'a [u8],
}

/// Record 2: MAC addresses and type of the sampled frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SampledEthernet {
    pub length: u32,
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub ethertype: u32,
}

/// Records 3 and 4: the IP fields of the sampled packet, when no header is exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SampledIp {
    pub length: u32,
    pub protocol: u32,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub src_port: u32,
    pub dst_port: u32,
    pub tcp_flags: u32,
    /// IPv4 type of service, or IPv6 priority.
    pub tos: u32,
}

/// Record 1001.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ExtendedSwitch {
    pub src_vlan: u32,
    pub dst_vlan: u32,
}

/// Record 1002.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ExtendedRouter {
    pub next_hop: Option<IpAddr>,
    pub src_mask_len: u32,
    pub dst_mask_len: u32,
}

/// Record 1003.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExtendedGateway {
    pub next_hop: Option<IpAddr>,
    /// The AS of the router that sampled the packet.
    pub router_as: u32,
    pub src_as: u32,
    pub src_peer_as: u32,
    /// Every segment of the destination AS path (AS_SET and AS_SEQUENCE), flattened.
    pub as_path: Vec<u32>,
    pub communities: Vec<u32>,
}

/// The records of one flow sample that become flow fields. When a sample holds a
/// record type twice, the last one counts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct FlowRecords<'a> {
    pub header: Option<SampledHeader<'a>>,
    pub ethernet: Option<SampledEthernet>,
    pub ip: Option<SampledIp>,
    pub switch: Option<ExtendedSwitch>,
    pub router: Option<ExtendedRouter>,
    pub gateway: Option<ExtendedGateway>,
}

impl<'a> FlowRecords<'a> {
    /// Reads the record count and every record. Any malformed record fails the whole
    /// sample: a record that lies about its structure makes the others doubtful.
    pub(crate) fn read(cur: &mut Cursor<'a>) -> Result<Self, SflowError> {
        let declared = cur.u32("flow record count")?;
        let mut records = FlowRecords::default();
        for _ in 0..declared {
            let (format, body) = read_element(cur, "flow record")?;
            records.add(format, body)?;
        }
        Ok(records)
    }

    fn add(&mut self, format: DataFormat, body: &'a [u8]) -> Result<(), SflowError> {
        let mut cur = Cursor::new(body);
        match format {
            SAMPLED_HEADER => self.header = Some(read_sampled_header(&mut cur)?),
            SAMPLED_ETHERNET => self.ethernet = Some(read_sampled_ethernet(&mut cur)?),
            SAMPLED_IPV4 => self.ip = Some(read_sampled_ipv4(&mut cur)?),
            SAMPLED_IPV6 => self.ip = Some(read_sampled_ipv6(&mut cur)?),
            EXTENDED_SWITCH => self.switch = Some(read_extended_switch(&mut cur)?),
            EXTENDED_ROUTER => self.router = Some(read_extended_router(&mut cur)?),
            EXTENDED_GATEWAY => self.gateway = Some(read_extended_gateway(&mut cur)?),
            _ => {}
        }
        Ok(())
    }
}

fn read_sampled_header<'a>(cur: &mut Cursor<'a>) -> Result<SampledHeader<'a>, SflowError> {
    let protocol = HeaderProtocol::from_sflow(cur.u32("sampled header protocol")?);
    let frame_length = cur.u32("sampled header frame length")?;
    cur.skip(4, "sampled header stripped octets")?;
    let header = cur.opaque("sampled header bytes")?;
    Ok(SampledHeader { protocol, frame_length, header })
}

/// MACs are XDR `opaque[6]`, so each is padded to 8 bytes.
fn read_sampled_ethernet(cur: &mut Cursor<'_>) -> Result<SampledEthernet, SflowError> {
    let length = cur.u32("ethernet frame length")?;
    let src_mac = read_mac(cur, "ethernet frame source MAC")?;
    let dst_mac = read_mac(cur, "ethernet frame destination MAC")?;
    let ethertype = cur.u32("ethernet frame type")?;
    Ok(SampledEthernet { length, src_mac, dst_mac, ethertype })
}

fn read_mac(cur: &mut Cursor<'_>, what: &'static str) -> Result<[u8; 6], SflowError> {
    let [m0, m1, m2, m3, m4, m5, _, _] = cur.array::<8>(what)?;
    Ok([m0, m1, m2, m3, m4, m5])
}

fn read_sampled_ipv4(cur: &mut Cursor<'_>) -> Result<SampledIp, SflowError> {
    let length = cur.u32("sampled IPv4 length")?;
    let protocol = cur.u32("sampled IPv4 protocol")?;
    let src = IpAddr::from(cur.array::<4>("sampled IPv4 source")?);
    let dst = IpAddr::from(cur.array::<4>("sampled IPv4 destination")?);
    read_sampled_ip_tail(cur, length, protocol, src, dst)
}

fn read_sampled_ipv6(cur: &mut Cursor<'_>) -> Result<SampledIp, SflowError> {
    let length = cur.u32("sampled IPv6 length")?;
    let protocol = cur.u32("sampled IPv6 protocol")?;
    let src = IpAddr::from(cur.array::<16>("sampled IPv6 source")?);
    let dst = IpAddr::from(cur.array::<16>("sampled IPv6 destination")?);
    read_sampled_ip_tail(cur, length, protocol, src, dst)
}

/// Ports, TCP flags and TOS/priority: the same four words in both IP records.
fn read_sampled_ip_tail(
    cur: &mut Cursor<'_>,
    length: u32,
    protocol: u32,
    src: IpAddr,
    dst: IpAddr,
) -> Result<SampledIp, SflowError> {
    Ok(SampledIp {
        length,
        protocol,
        src,
        dst,
        src_port: cur.u32("sampled IP source port")?,
        dst_port: cur.u32("sampled IP destination port")?,
        tcp_flags: cur.u32("sampled IP TCP flags")?,
        tos: cur.u32("sampled IP TOS")?,
    })
}

/// VLANs and 802.1p priorities; the priorities are not part of the flow message.
fn read_extended_switch(cur: &mut Cursor<'_>) -> Result<ExtendedSwitch, SflowError> {
    let src_vlan = cur.u32("extended switch source VLAN")?;
    cur.skip(4, "extended switch source priority")?;
    let dst_vlan = cur.u32("extended switch destination VLAN")?;
    cur.skip(4, "extended switch destination priority")?;
    Ok(ExtendedSwitch { src_vlan, dst_vlan })
}

fn read_extended_router(cur: &mut Cursor<'_>) -> Result<ExtendedRouter, SflowError> {
    Ok(ExtendedRouter {
        next_hop: read_address(cur, "extended router next hop")?,
        src_mask_len: cur.u32("extended router source mask")?,
        dst_mask_len: cur.u32("extended router destination mask")?,
    })
}

/// Next hop, router AS, source AS, source peer AS, the destination AS path segments
/// (type, count, ASNs), communities, and local preference (read for validation only).
fn read_extended_gateway(cur: &mut Cursor<'_>) -> Result<ExtendedGateway, SflowError> {
    let next_hop = read_address(cur, "extended gateway next hop")?;
    let router_as = cur.u32("extended gateway router AS")?;
    let src_as = cur.u32("extended gateway source AS")?;
    let src_peer_as = cur.u32("extended gateway source peer AS")?;
    let segments = cur.u32("extended gateway AS path segment count")?;
    let mut as_path = Vec::new();
    for _ in 0..segments {
        cur.skip(4, "extended gateway AS path segment type")?;
        let count = cur.u32("extended gateway AS path segment length")?;
        read_u32_list(cur, count, &mut as_path, "extended gateway AS path")?;
    }
    let community_count = cur.u32("extended gateway community count")?;
    let mut communities = Vec::new();
    read_u32_list(cur, community_count, &mut communities, "extended gateway communities")?;
    cur.skip(4, "extended gateway local preference")?;
    Ok(ExtendedGateway { next_hop, router_as, src_as, src_peer_as, as_path, communities })
}

/// Appends `count` words to `out`. The count is untrusted: it is checked against the
/// bytes left before anything is reserved.
fn read_u32_list(
    cur: &mut Cursor<'_>,
    count: u32,
    out: &mut Vec<u32>,
    what: &'static str,
) -> Result<(), SflowError> {
    let len = usize::try_from(count).unwrap_or(usize::MAX);
    let bytes = cur
        .bytes(len.saturating_mul(4), what)
        .map_err(|_| SflowError::LengthPastEnd { what, length: count })?;
    let (words, _) = bytes.as_chunks::<4>();
    out.extend(words.iter().map(|word| u32::from_be_bytes(*word)));
    Ok(())
}
