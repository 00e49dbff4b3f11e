//! A varied traffic capture for flow exporters to meter: TCP conversations
//! (handshake, data, FIN and RST), UDP, ICMP echo, and the same over IPv6, with several
//! TOS values and sub-millisecond timestamps.

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use flow_replay::write::{
    ethernet_frame, ethertype, internet_checksum, ip_packet, transport_checksum, write_frames_file,
};

const TCP: u8 = 6;
const UDP: u8 = 17;
const ICMP: u8 = 1;
const ICMPV6: u8 = 58;

const FIN: u8 = 0x01;
const SYN: u8 = 0x02;
const RST: u8 = 0x04;
const PSH: u8 = 0x08;
const ACK: u8 = 0x10;

/// First frame of the capture: 2024-03-01T10:00:00Z.
pub const START: Duration = Duration::from_secs(1_709_287_200);

/// One packet of the generated traffic, before framing.
struct Packet {
    /// Offset from [`START`], in microseconds.
    at_us: u64,
    source: SocketAddr,
    destination: SocketAddr,
    tos: u8,
    segment: Segment,
}

/// The transport part of a [`Packet`].
enum Segment {
    Tcp {
        flags: u8,
        payload_len: usize,
    },
    Udp {
        payload_len: usize,
    },
    /// ICMP (or ICMPv6 when the addresses are IPv6) with this type and code.
    Icmp {
        kind: u8,
        code: u8,
    },
}

fn sa(text: &str) -> SocketAddr {
    text.parse().unwrap_or_else(|e| panic!("bad address {text}: {e}"))
}

/// The packets of the capture, in time order.
fn packets() -> Vec<Packet> {
    let mut out = Vec::new();
    let mut add = |at_us: u64, src: &str, dst: &str, tos: u8, segment: Segment| {
        out.push(Packet { at_us, source: sa(src), destination: sa(dst), tos, segment });
    };
    let tcp = |flags, payload_len| Segment::Tcp { flags, payload_len };
    // An HTTPS conversation: handshake, data both ways, FIN close.
    let (c, s) = ("10.1.0.1:40001", "10.2.0.1:443");
    add(0, c, s, 0, tcp(SYN, 0));
    add(1_250, s, c, 0, tcp(SYN | ACK, 0));
    add(2_500, c, s, 0, tcp(ACK, 0));
    add(3_100, c, s, 0, tcp(PSH | ACK, 517));
    add(15_700, s, c, 0, tcp(PSH | ACK, 1_400));
    add(15_950, s, c, 0, tcp(PSH | ACK, 1_024));
    add(16_300, c, s, 0, tcp(ACK, 0));
    add(420_000, c, s, 0, tcp(FIN | ACK, 0));
    add(421_125, s, c, 0, tcp(FIN | ACK, 0));
    add(421_900, c, s, 0, tcp(ACK, 0));
    // SSH with a TOS of 0x10, data only (a flow seen mid-way).
    let (c, s) = ("10.1.0.2:40002", "10.2.0.2:22");
    for (i, len) in [36usize, 52, 36, 1_200, 88].into_iter().enumerate() {
        add(50_000 + i as u64 * 233_333, c, s, 0x10, tcp(PSH | ACK, len));
    }
    // A refused connection: SYN answered by RST.
    add(70_000, "10.1.0.5:40005", "10.2.0.5:8080", 0, tcp(SYN, 0));
    add(70_400, "10.2.0.5:8080", "10.1.0.5:40005", 0, tcp(RST | ACK, 0));
    // DNS over UDP with TOS 0xB8 (EF).
    let (c, s) = ("10.1.0.3:5353", "10.2.0.3:53");
    for (i, (q, r)) in [(33usize, 49usize), (41, 201), (29, 97)].into_iter().enumerate() {
        let at = 100_000 + i as u64 * 510_010;
        add(at, c, s, 0xB8, Segment::Udp { payload_len: q });
        add(at + 870, s, c, 0xB8, Segment::Udp { payload_len: r });
    }
    // ICMP echo request and reply.
    for i in 0..3u64 {
        let at = 200_000 + i * 1_000_000;
        add(at, "10.1.0.4:0", "10.2.0.4:0", 0, Segment::Icmp { kind: 8, code: 0 });
        add(at + 640, "10.2.0.4:0", "10.1.0.4:0", 0, Segment::Icmp { kind: 0, code: 0 });
    }
    // IPv6: HTTP with traffic class 0x28, NTP over UDP, ICMPv6 echo.
    let (c, s) = ("[2001:db8:1::1]:50000", "[2001:db8:2::1]:80");
    add(300_000, c, s, 0x28, tcp(SYN, 0));
    add(300_900, s, c, 0x28, tcp(SYN | ACK, 0));
    add(301_700, c, s, 0x28, tcp(ACK, 0));
    add(302_000, c, s, 0x28, tcp(PSH | ACK, 320));
    add(350_500, s, c, 0x28, tcp(PSH | ACK, 1_300));
    add(900_000, c, s, 0x28, tcp(FIN | ACK, 0));
    add(900_700, s, c, 0x28, tcp(FIN | ACK, 0));
    let (c, s) = ("[2001:db8:1::2]:50001", "[2001:db8:2::2]:123");
    add(400_000, c, s, 0, Segment::Udp { payload_len: 48 });
    add(401_500, s, c, 0, Segment::Udp { payload_len: 48 });
    add(1_400_000, c, s, 0, Segment::Udp { payload_len: 48 });
    add(500_000, "[2001:db8:1::3]:0", "[2001:db8:2::3]:0", 0, Segment::Icmp { kind: 128, code: 0 });
    add(500_450, "[2001:db8:2::3]:0", "[2001:db8:1::3]:0", 0, Segment::Icmp { kind: 129, code: 0 });
    // An ICMP destination unreachable (type 3, code 3): type and code both non-zero.
    add(600_000, "10.2.0.9:0", "10.1.0.9:0", 0, Segment::Icmp { kind: 3, code: 3 });
    // Many one-packet syslog flows, so that exports span several datagrams (v5 holds
    // 30 records at most) and sequence numbers advance.
    for i in 0..40u64 {
        let src = format!("10.3.0.{}:{}", 1 + i % 7, 20_000 + i);
        let tos = [0u8, 0x20, 0x48, 0xB8][(i % 4) as usize];
        add(
            1_500_000 + i * 12_345,
            &src,
            "10.4.0.1:514",
            tos,
            Segment::Udp { payload_len: 60 + i as usize },
        );
    }
    out.sort_by_key(|p| p.at_us);
    out
}

/// The IP packet of `p`, with valid checksums.
fn ip(p: &Packet) -> Vec<u8> {
    let (src, dst) = (p.source.ip(), p.destination.ip());
    let built = match p.segment {
        Segment::Udp { payload_len } => {
            let mut seg = udp_segment(p, payload_len);
            let sum = transport_checksum(src, dst, UDP, &seg).unwrap_or_else(|e| panic!("{e}"));
            // RFC 768: a computed 0 is sent as all ones.
            seg[6..8].copy_from_slice(&(if sum == 0 { 0xFFFF } else { sum }).to_be_bytes());
            ip_packet(src, dst, UDP, p.tos, &seg)
        }
        Segment::Tcp { flags, payload_len } => {
            let mut seg = tcp_segment(p, flags, payload_len);
            let sum = transport_checksum(src, dst, TCP, &seg).unwrap_or_else(|e| panic!("{e}"));
            seg[16..18].copy_from_slice(&sum.to_be_bytes());
            ip_packet(src, dst, TCP, p.tos, &seg)
        }
        Segment::Icmp { kind, code } => {
            let mut seg = vec![kind, code, 0, 0, 0x12, 0x34, 0, 1];
            seg.extend_from_slice(&filler(56));
            let (protocol, sum) = match src {
                IpAddr::V4(_) => (ICMP, internet_checksum(&[&seg])),
                IpAddr::V6(_) => (
                    ICMPV6,
                    transport_checksum(src, dst, ICMPV6, &seg).unwrap_or_else(|e| panic!("{e}")),
                ),
            };
            seg[2..4].copy_from_slice(&sum.to_be_bytes());
            ip_packet(src, dst, protocol, p.tos, &seg)
        }
    };
    built.unwrap_or_else(|e| panic!("cannot build packet: {e}"))
}

/// A TCP header (20 bytes, checksum zero) and `payload_len` filler bytes.
fn tcp_segment(p: &Packet, flags: u8, payload_len: usize) -> Vec<u8> {
    let mut seg = Vec::with_capacity(20 + payload_len);
    seg.extend_from_slice(&p.source.port().to_be_bytes());
    seg.extend_from_slice(&p.destination.port().to_be_bytes());
    let seq = u32::try_from(p.at_us & 0xFFFF_FFFF).unwrap_or(0);
    seg.extend_from_slice(&seq.to_be_bytes());
    seg.extend_from_slice(&(if flags & ACK != 0 { 1u32 } else { 0 }).to_be_bytes());
    seg.extend_from_slice(&[0x50, flags, 0xFA, 0xF0, 0, 0, 0, 0]);
    seg.extend_from_slice(&filler(payload_len));
    seg
}

/// A UDP header (checksum zero) and `payload_len` filler bytes.
fn udp_segment(p: &Packet, payload_len: usize) -> Vec<u8> {
    let len = u16::try_from(8 + payload_len).unwrap_or(u16::MAX);
    let mut seg = Vec::with_capacity(usize::from(len));
    seg.extend_from_slice(&p.source.port().to_be_bytes());
    seg.extend_from_slice(&p.destination.port().to_be_bytes());
    seg.extend_from_slice(&len.to_be_bytes());
    seg.extend_from_slice(&[0, 0]);
    seg.extend_from_slice(&filler(payload_len));
    seg
}

/// `len` bytes of a repeating pattern.
fn filler(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

/// Writes the traffic capture to `path` and returns its packet count.
pub fn write_traffic_pcap(path: &Path) -> usize {
    let frames: Vec<(Duration, Vec<u8>)> = packets()
        .iter()
        .map(|p| {
            let frame = ethernet_frame(&ip(p), ethertype(p.source.ip()));
            (START + Duration::from_micros(p.at_us), frame)
        })
        .collect();
    write_frames_file(path, &frames).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    frames.len()
}
