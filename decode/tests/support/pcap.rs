//! UDP datagrams out of a pcap file, in file order: Ethernet (with 802.1Q/QinQ tags),
//! Linux cooked (SLL, SLL2), BSD loopback and raw IP link types; IPv4 and IPv6.
//!
//! Non-UDP packets (e.g. a BGP session in the same capture) are skipped. What cannot be
//! read faithfully (IP fragments, unknown link types, truncated captures) is an error,
//! never skipped silently.

#![allow(dead_code)]

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;

use pcap_file::DataLink;
use pcap_file::pcap::PcapReader;

/// One UDP datagram of a capture.
#[derive(Debug, Clone)]
pub struct UdpDatagram {
    pub source: SocketAddr,
    pub destination: SocketAddr,
    /// Capture time, Unix nanoseconds.
    pub timestamp_ns: u64,
    pub payload: Vec<u8>,
}

/// Reads every UDP datagram of `path`.
pub fn udp_datagrams(path: &Path) -> Result<Vec<UdpDatagram>, String> {
    let file = std::fs::File::open(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut reader = PcapReader::new(file).map_err(|e| format!("{}: {e}", path.display()))?;
    let link = reader.header().datalink;
    let mut out = Vec::new();
    let mut index = 0usize;
    while let Some(packet) = reader.next_packet() {
        index += 1;
        let packet = packet.map_err(|e| format!("{} packet {index}: {e}", path.display()))?;
        if packet.orig_len as usize != packet.data.len() {
            return Err(format!("{} packet {index} is truncated by the capture", path.display()));
        }
        let timestamp_ns = u64::try_from(packet.timestamp.as_nanos()).unwrap_or(u64::MAX);
        let ip = network_layer(link, &packet.data)
            .map_err(|e| format!("{} packet {index}: {e}", path.display()))?;
        if let Some(ip) = ip
            && let Some((source, destination, payload)) =
                udp(ip).map_err(|e| format!("{} packet {index}: {e}", path.display()))?
        {
            out.push(UdpDatagram { source, destination, timestamp_ns, payload: payload.to_vec() });
        }
    }
    Ok(out)
}

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86DD;

fn be16(data: &[u8], at: usize) -> Result<u16, String> {
    data.get(at..at + 2).map(|b| u16::from_be_bytes([b[0], b[1]])).ok_or("truncated".to_owned())
}

/// The IP packet inside a frame, or `None` for non-IP frames.
fn network_layer(link: DataLink, frame: &[u8]) -> Result<Option<&[u8]>, String> {
    let (ethertype, rest) = match link {
        DataLink::ETHERNET => {
            let mut at = 12;
            let mut ethertype = be16(frame, at)?;
            while matches!(ethertype, 0x8100 | 0x88A8 | 0x9100) {
                at += 4;
                ethertype = be16(frame, at)?;
            }
            (ethertype, frame.get(at + 2..))
        }
        DataLink::LINUX_SLL => (be16(frame, 14)?, frame.get(16..)),
        DataLink::LINUX_SLL2 => (be16(frame, 0)?, frame.get(20..)),
        DataLink::NULL | DataLink::LOOP => {
            let family = frame.get(..4).ok_or("truncated")?;
            let family = u32::from_le_bytes([family[0], family[1], family[2], family[3]]);
            let family = if family > 0xFFFF { family.swap_bytes() } else { family };
            let ethertype = match family {
                2 => ETHERTYPE_IPV4,
                24 | 28 | 30 => ETHERTYPE_IPV6,
                _ => return Ok(None),
            };
            (ethertype, frame.get(4..))
        }
        DataLink::RAW | DataLink::IPV4 | DataLink::IPV6 => {
            let version = frame.first().ok_or("empty frame")? >> 4;
            (if version == 6 { ETHERTYPE_IPV6 } else { ETHERTYPE_IPV4 }, Some(frame))
        }
        other => return Err(format!("link type {other:?} is not supported")),
    };
    let rest = rest.ok_or("truncated link header")?;
    Ok(matches!(ethertype, ETHERTYPE_IPV4 | ETHERTYPE_IPV6).then_some(rest))
}

type Udp<'a> = Option<(SocketAddr, SocketAddr, &'a [u8])>;

/// The UDP datagram inside an IP packet, or `None` when it carries something else.
fn udp(ip: &[u8]) -> Result<Udp<'_>, String> {
    match ip.first().map(|b| b >> 4) {
        Some(4) => udp_in_ipv4(ip),
        Some(6) => udp_in_ipv6(ip),
        _ => Err("not an IP packet".to_owned()),
    }
}

fn udp_in_ipv4(ip: &[u8]) -> Result<Udp<'_>, String> {
    let header_len = usize::from(ip.first().ok_or("truncated")? & 0x0F) * 4;
    let total = usize::from(be16(ip, 2)?);
    let flags_offset = be16(ip, 6)?;
    let protocol = *ip.get(9).ok_or("truncated")?;
    if flags_offset & 0x3FFF != 0 {
        return Err("IPv4 fragment: reassembly is not supported".to_owned());
    }
    if protocol != 17 {
        return Ok(None);
    }
    let addr = |at: usize| -> Result<IpAddr, String> {
        let b: [u8; 4] =
            ip.get(at..at + 4).ok_or("truncated")?.try_into().map_err(|_| "truncated")?;
        Ok(IpAddr::V4(Ipv4Addr::from(b)))
    };
    let payload = ip.get(header_len..total).ok_or("IPv4 length past the capture")?;
    udp_header(addr(12)?, addr(16)?, payload)
}

fn udp_in_ipv6(ip: &[u8]) -> Result<Udp<'_>, String> {
    let payload_len = usize::from(be16(ip, 4)?);
    let mut next = *ip.get(6).ok_or("truncated")?;
    let addr = |at: usize| -> Result<IpAddr, String> {
        let b: [u8; 16] =
            ip.get(at..at + 16).ok_or("truncated")?.try_into().map_err(|_| "truncated")?;
        Ok(IpAddr::V6(Ipv6Addr::from(b)))
    };
    let body = ip.get(40..40 + payload_len).ok_or("IPv6 length past the capture")?;
    let mut at = 0;
    loop {
        match next {
            17 => return udp_header(addr(8)?, addr(24)?, &body[at..]),
            0 | 43 | 60 => {
                next = *body.get(at).ok_or("truncated extension header")?;
                at += (usize::from(*body.get(at + 1).ok_or("truncated")?) + 1) * 8;
            }
            44 => return Err("IPv6 fragment: reassembly is not supported".to_owned()),
            _ => return Ok(None),
        }
    }
}

fn udp_header(source: IpAddr, destination: IpAddr, segment: &[u8]) -> Result<Udp<'_>, String> {
    let length = usize::from(be16(segment, 4)?);
    let payload = segment.get(8..length).ok_or("UDP length past the IP payload")?;
    let source = SocketAddr::new(source, be16(segment, 0)?);
    let destination = SocketAddr::new(destination, be16(segment, 2)?);
    Ok(Some((source, destination, payload)))
}
