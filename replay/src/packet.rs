//! Link, network and transport headers of one captured frame, down to its UDP payload.
//!
//! Pure functions over byte slices: every length is checked before it is read, and a
//! frame that does not hold one whole, unfragmented UDP datagram says why ([`Skip`]).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use pcap_file::DataLink;

/// The link-layer framings this reader understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Link {
    /// Ethernet II, with any number of 802.1Q / 802.1ad (QinQ) tags.
    Ethernet,
    /// Linux cooked capture v1 (`any` interface), 16-byte header.
    LinuxSll,
    /// Linux cooked capture v2, 20-byte header.
    LinuxSll2,
    /// Bare IPv4 or IPv6, version taken from the first nibble.
    RawIp,
    /// BSD loopback: a 4-byte address family (either byte order), then IP.
    Loopback,
}

impl Link {
    /// The framing of a pcap/pcapng link type, or `None` when it is not supported.
    pub fn from_datalink(datalink: DataLink) -> Option<Self> {
        match datalink {
            DataLink::ETHERNET => Some(Self::Ethernet),
            DataLink::LINUX_SLL => Some(Self::LinuxSll),
            DataLink::LINUX_SLL2 => Some(Self::LinuxSll2),
            DataLink::RAW | DataLink::IPV4 | DataLink::IPV6 => Some(Self::RawIp),
            DataLink::NULL | DataLink::LOOP => Some(Self::Loopback),
            _ => None,
        }
    }
}

/// Why a frame yields no datagram.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Neither IPv4 nor IPv6 (ARP, LLDP, …).
    NotIp,
    /// IP, but not UDP (TCP, ICMP, …).
    NotUdp,
    /// An IP fragment: the datagram is not whole in this frame.
    Fragment,
    /// The capture cut the frame short of the lengths its headers announce.
    Truncated,
    /// A header whose own fields are inconsistent (IHL below 5, UDP length below 8).
    Malformed,
}

/// One UDP datagram found in a frame, borrowing its payload from the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpView<'a> {
    /// IP source address and UDP source port.
    pub source: SocketAddr,
    /// IP destination address and UDP destination port.
    pub destination: SocketAddr,
    /// The UDP payload.
    pub payload: &'a [u8],
}

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86DD;
const VLAN_ETHERTYPES: [u16; 4] = [0x8100, 0x88A8, 0x9100, 0x9200];
const IPPROTO_UDP: u8 = 17;

/// Finds the UDP datagram carried by `frame`, framed as `link`.
pub fn udp_in_frame(link: Link, frame: &[u8]) -> Result<UdpView<'_>, Skip> {
    match link {
        Link::Ethernet => {
            let ethertype = be16(frame, 12)?;
            by_ethertype(ethertype, rest(frame, 14)?)
        }
        Link::LinuxSll => by_ethertype(be16(frame, 14)?, rest(frame, 16)?),
        Link::LinuxSll2 => by_ethertype(be16(frame, 0)?, rest(frame, 20)?),
        Link::RawIp => by_version(frame),
        Link::Loopback => by_version(rest(frame, 4)?),
    }
}

/// Strips VLAN tags, then dispatches on the inner ethertype.
fn by_ethertype(mut ethertype: u16, mut data: &[u8]) -> Result<UdpView<'_>, Skip> {
    while VLAN_ETHERTYPES.contains(&ethertype) {
        ethertype = be16(data, 2)?;
        data = rest(data, 4)?;
    }
    match ethertype {
        ETHERTYPE_IPV4 => ipv4(data),
        ETHERTYPE_IPV6 => ipv6(data),
        _ => Err(Skip::NotIp),
    }
}

/// Dispatches on the IP version nibble.
fn by_version(data: &[u8]) -> Result<UdpView<'_>, Skip> {
    match data.first().map(|b| b >> 4) {
        Some(4) => ipv4(data),
        Some(6) => ipv6(data),
        Some(_) => Err(Skip::NotIp),
        None => Err(Skip::Truncated),
    }
}

/// An IPv4 packet: header checks, fragments out, then UDP.
fn ipv4(data: &[u8]) -> Result<UdpView<'_>, Skip> {
    let header = data.get(..20).ok_or(Skip::Truncated)?;
    if header[0] >> 4 != 4 {
        return Err(Skip::NotIp);
    }
    let header_len = usize::from(header[0] & 0x0F) * 4;
    let total_len = usize::from(u16::from_be_bytes([header[2], header[3]]));
    if header_len < 20 || total_len < header_len {
        return Err(Skip::Malformed);
    }
    let flags_offset = u16::from_be_bytes([header[6], header[7]]);
    let more_fragments = flags_offset & 0x2000 != 0;
    if more_fragments || flags_offset & 0x1FFF != 0 {
        return Err(Skip::Fragment);
    }
    if header[9] != IPPROTO_UDP {
        return Err(Skip::NotUdp);
    }
    let source = IpAddr::V4(Ipv4Addr::new(header[12], header[13], header[14], header[15]));
    let destination = IpAddr::V4(Ipv4Addr::new(header[16], header[17], header[18], header[19]));
    // Ethernet pads short frames: the IP total length, not the frame, ends the packet.
    let packet = &data[..total_len.min(data.len())];
    udp(source, destination, rest(packet, header_len)?)
}

/// An IPv6 packet: walks extension headers to UDP, skipping real fragments.
fn ipv6(data: &[u8]) -> Result<UdpView<'_>, Skip> {
    let header = data.get(..40).ok_or(Skip::Truncated)?;
    if header[0] >> 4 != 6 {
        return Err(Skip::NotIp);
    }
    let payload_len = usize::from(u16::from_be_bytes([header[4], header[5]]));
    let source = IpAddr::V6(Ipv6Addr::from(octets16(&header[8..24])));
    let destination = IpAddr::V6(Ipv6Addr::from(octets16(&header[24..40])));
    let body = &data[40..];
    // A payload length of 0 announces a jumbogram: the rest of the frame is the payload.
    let mut payload = if payload_len == 0 { body } else { &body[..payload_len.min(body.len())] };
    let mut next = header[6];
    loop {
        match next {
            IPPROTO_UDP => return udp(source, destination, payload),
            // Hop-by-hop, routing, destination options: length in 8-octet units past the first 8.
            0 | 43 | 60 => {
                let len = (usize::from(*payload.get(1).ok_or(Skip::Truncated)?) + 1) * 8;
                next = payload[0];
                payload = rest(payload, len)?;
            }
            // Authentication header: length in 4-octet units past the first 8.
            51 => {
                let len = (usize::from(*payload.get(1).ok_or(Skip::Truncated)?) + 2) * 4;
                next = payload[0];
                payload = rest(payload, len)?;
            }
            44 => {
                let fragment = payload.get(..8).ok_or(Skip::Truncated)?;
                let offset = u16::from_be_bytes([fragment[2], fragment[3]]) >> 3;
                // An atomic fragment (offset 0, no more fragments) holds a whole datagram.
                if offset != 0 || fragment[3] & 1 != 0 {
                    return Err(Skip::Fragment);
                }
                next = fragment[0];
                payload = &payload[8..];
            }
            _ => return Err(Skip::NotUdp),
        }
    }
}

/// A UDP header and its payload, bounded by the UDP length field.
fn udp(source: IpAddr, destination: IpAddr, data: &[u8]) -> Result<UdpView<'_>, Skip> {
    let header = data.get(..8).ok_or(Skip::Truncated)?;
    let source_port = u16::from_be_bytes([header[0], header[1]]);
    let destination_port = u16::from_be_bytes([header[2], header[3]]);
    let length = usize::from(u16::from_be_bytes([header[4], header[5]]));
    let payload = match length {
        // Length 0 only occurs in IPv6 jumbograms: the IP payload bounds the datagram.
        0 => &data[8..],
        1..=7 => return Err(Skip::Malformed),
        _ => data.get(8..length).ok_or(Skip::Truncated)?,
    };
    Ok(UdpView {
        source: SocketAddr::new(source, source_port),
        destination: SocketAddr::new(destination, destination_port),
        payload,
    })
}

/// The big-endian u16 at `at`.
fn be16(data: &[u8], at: usize) -> Result<u16, Skip> {
    match data.get(at..at + 2) {
        Some(&[hi, lo]) => Ok(u16::from_be_bytes([hi, lo])),
        _ => Err(Skip::Truncated),
    }
}

/// `data` past its first `len` bytes.
fn rest(data: &[u8], len: usize) -> Result<&[u8], Skip> {
    data.get(len..).ok_or(Skip::Truncated)
}

/// A 16-byte slice as an array (callers slice exactly 16 bytes).
fn octets16(slice: &[u8]) -> [u8; 16] {
    let mut octets = [0u8; 16];
    octets.copy_from_slice(slice);
    octets
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::write::{ethernet_frame, udp_ip_packet};

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap_or_else(|e| panic!("bad test address {text}: {e}"))
    }

    fn ip_packet(src: &str, dst: &str, payload: &[u8]) -> Vec<u8> {
        udp_ip_packet(addr(src), addr(dst), payload)
            .unwrap_or_else(|e| panic!("cannot build packet: {e}"))
    }

    #[test]
    fn ethernet_ipv4_udp() {
        let frame =
            ethernet_frame(&ip_packet("10.0.0.1:1000", "10.0.0.2:2055", b"abc"), ETHERTYPE_IPV4);
        let view = udp_in_frame(Link::Ethernet, &frame);
        assert_eq!(
            view,
            Ok(UdpView {
                source: addr("10.0.0.1:1000"),
                destination: addr("10.0.0.2:2055"),
                payload: b"abc"
            })
        );
    }

    #[test]
    fn ethernet_padding_is_not_payload() {
        let mut frame =
            ethernet_frame(&ip_packet("10.0.0.1:1", "10.0.0.2:2", b"x"), ETHERTYPE_IPV4);
        frame.extend_from_slice(&[0u8; 20]);
        assert_eq!(udp_in_frame(Link::Ethernet, &frame).map(|v| v.payload), Ok(&b"x"[..]));
    }

    #[test]
    fn qinq_tags_are_stripped() {
        let packet = ip_packet("[2001:db8::1]:5000", "[2001:db8::2]:9995", b"ipfix");
        let mut frame = vec![0u8; 12];
        frame.extend_from_slice(&[0x88, 0xA8, 0x00, 0x0A, 0x81, 0x00, 0x00, 0x14, 0x86, 0xDD]);
        frame.extend_from_slice(&packet);
        let view = udp_in_frame(Link::Ethernet, &frame);
        assert_eq!(
            view.map(|v| (v.source, v.payload)),
            Ok((addr("[2001:db8::1]:5000"), &b"ipfix"[..]))
        );
    }

    #[test]
    fn linux_cooked_v1_and_v2() {
        let packet = ip_packet("192.0.2.1:40000", "192.0.2.2:2055", b"v9");
        let mut sll = vec![0u8; 14];
        sll.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        sll.extend_from_slice(&packet);
        let mut sll2 = ETHERTYPE_IPV4.to_be_bytes().to_vec();
        sll2.extend_from_slice(&[0u8; 18]);
        sll2.extend_from_slice(&packet);
        for (link, frame) in [(Link::LinuxSll, sll), (Link::LinuxSll2, sll2)] {
            let view = udp_in_frame(link, &frame);
            assert_eq!(
                view.map(|v| (v.destination, v.payload)),
                Ok((addr("192.0.2.2:2055"), &b"v9"[..])),
                "{link:?}"
            );
        }
    }

    #[test]
    fn raw_and_loopback() {
        let packet = ip_packet("[::1]:1", "[::1]:2", b"raw");
        assert_eq!(udp_in_frame(Link::RawIp, &packet).map(|v| v.payload), Ok(&b"raw"[..]));
        let mut null = 30u32.to_le_bytes().to_vec();
        null.extend_from_slice(&packet);
        assert_eq!(udp_in_frame(Link::Loopback, &null).map(|v| v.payload), Ok(&b"raw"[..]));
    }

    #[test]
    fn ipv4_fragments_are_skipped() {
        let mut packet = ip_packet("10.0.0.1:1", "10.0.0.2:2", b"frag");
        packet[6] = 0x20; // more fragments
        assert_eq!(udp_in_frame(Link::RawIp, &packet), Err(Skip::Fragment));
        packet[6] = 0x00;
        packet[7] = 0x10; // offset 16 octets * 8
        assert_eq!(udp_in_frame(Link::RawIp, &packet), Err(Skip::Fragment));
    }

    #[test]
    fn ipv6_extension_headers_and_fragments() {
        let packet = ip_packet("[2001:db8::1]:1", "[2001:db8::2]:2", b"ext");
        let udp_part = packet[40..].to_vec();
        let with_ext = |ext: [u8; 8]| {
            let mut p = packet[..40].to_vec();
            p[6] = ext[0];
            let len = u16::try_from(udp_part.len() + 8).unwrap_or(u16::MAX);
            p[4..6].copy_from_slice(&len.to_be_bytes());
            let mut ext = ext;
            ext[0] = IPPROTO_UDP;
            p.extend_from_slice(&ext);
            p.extend_from_slice(&udp_part);
            p
        };
        let hop_by_hop = with_ext([0, 0, 1, 4, 0, 0, 0, 0]);
        assert_eq!(udp_in_frame(Link::RawIp, &hop_by_hop).map(|v| v.payload), Ok(&b"ext"[..]));
        let atomic = with_ext([44, 0, 0, 0, 0, 0, 0, 1]);
        assert_eq!(udp_in_frame(Link::RawIp, &atomic).map(|v| v.payload), Ok(&b"ext"[..]));
        let first_fragment = with_ext([44, 0, 0, 1, 0, 0, 0, 1]);
        assert_eq!(udp_in_frame(Link::RawIp, &first_fragment), Err(Skip::Fragment));
    }

    #[test]
    fn non_udp_non_ip_and_short_frames() {
        let mut tcp = ip_packet("10.0.0.1:1", "10.0.0.2:2", b"");
        tcp[9] = 6;
        assert_eq!(udp_in_frame(Link::RawIp, &tcp), Err(Skip::NotUdp));
        let arp = ethernet_frame(&[0u8; 28], 0x0806);
        assert_eq!(udp_in_frame(Link::Ethernet, &arp), Err(Skip::NotIp));
        let full = ip_packet("10.0.0.1:1", "10.0.0.2:2", b"0123456789");
        assert_eq!(udp_in_frame(Link::RawIp, &full[..full.len() - 1]), Err(Skip::Truncated));
        assert_eq!(udp_in_frame(Link::Ethernet, &[0u8; 13]), Err(Skip::Truncated));
        let mut bad_udp = full.clone();
        bad_udp[25] = 4; // UDP length 4 < 8
        bad_udp[24] = 0;
        assert_eq!(udp_in_frame(Link::RawIp, &bad_udp), Err(Skip::Malformed));
    }
}
