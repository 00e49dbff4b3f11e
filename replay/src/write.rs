//! Writes UDP datagrams into a pcap file as Ethernet/IP/UDP frames with valid
//! checksums, so that other tools (tshark, softflowd) can read what was sent.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use pcap_file::pcap::{PcapHeader, PcapPacket, PcapWriter};
use pcap_file::{DataLink, Endianness, TsResolution};

use crate::UdpDatagram;

/// Why a datagram could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    /// Source and destination are of different IP families.
    #[error("source {from} and destination {to} are of different IP families")]
    FamilyMismatch {
        /// The datagram's source.
        from: SocketAddr,
        /// The datagram's destination.
        to: SocketAddr,
    },
    /// The payload does not fit in one IP packet.
    #[error("payload of {0} bytes does not fit in one UDP datagram")]
    TooLarge(usize),
    /// The output file could not be created.
    #[error("cannot create {path}: {source}")]
    Create {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Writing the capture failed.
    #[error("cannot write capture: {0}")]
    Pcap(#[from] pcap_file::PcapError),
    /// Flushing the capture failed.
    #[error("cannot flush capture: {0}")]
    Io(#[from] std::io::Error),
}

const SNAPLEN: u32 = 65_535;
const IPPROTO_UDP: u8 = 17;

/// Writes `datagrams` as an Ethernet pcap file at `path`, each frame stamped with its
/// datagram's timestamp.
pub fn write_pcap_file<'a>(
    path: &Path,
    datagrams: impl IntoIterator<Item = &'a UdpDatagram>,
) -> Result<(), WriteError> {
    write_frames_file(path, &datagram_frames(datagrams)?)
}

/// Writes `datagrams` as an Ethernet pcap stream into `out`, returning `out`; each
/// frame is stamped with its datagram's timestamp.
pub fn write_pcap<'a, W: Write>(
    out: W,
    datagrams: impl IntoIterator<Item = &'a UdpDatagram>,
) -> Result<W, WriteError> {
    write_frames(out, &datagram_frames(datagrams)?)
}

/// Each datagram as a timestamped Ethernet/IP/UDP frame.
fn datagram_frames<'a>(
    datagrams: impl IntoIterator<Item = &'a UdpDatagram>,
) -> Result<Vec<(Duration, Vec<u8>)>, WriteError> {
    datagrams
        .into_iter()
        .map(|d| {
            let packet = udp_ip_packet(d.source, d.destination, &d.payload)?;
            Ok((d.timestamp, ethernet_frame(&packet, ethertype(d.source.ip()))))
        })
        .collect()
}

/// Writes Ethernet `frames` with their capture timestamps (since the Unix epoch) as a
/// pcap file at `path`.
pub fn write_frames_file(path: &Path, frames: &[(Duration, Vec<u8>)]) -> Result<(), WriteError> {
    let file = File::create(path)
        .map_err(|source| WriteError::Create { path: path.to_path_buf(), source })?;
    let mut out = write_frames(BufWriter::new(file), frames)?;
    out.flush()?;
    Ok(())
}

/// Writes Ethernet `frames` with their capture timestamps (since the Unix epoch, kept
/// to the microsecond) as a pcap stream into `out`, returning `out`.
pub fn write_frames<W: Write>(out: W, frames: &[(Duration, Vec<u8>)]) -> Result<W, WriteError> {
    let header = PcapHeader {
        version_major: 2,
        version_minor: 4,
        ts_correction: 0,
        ts_accuracy: 0,
        snaplen: SNAPLEN,
        datalink: DataLink::ETHERNET,
        ts_resolution: TsResolution::MicroSecond,
        endianness: Endianness::Little,
    };
    let mut writer = PcapWriter::with_header(out, header)?;
    for (timestamp, frame) in frames {
        let orig_len = u32::try_from(frame.len()).map_err(|_| WriteError::TooLarge(frame.len()))?;
        writer.write_packet(&PcapPacket::new(*timestamp, orig_len, frame))?;
    }
    Ok(writer.into_writer())
}

/// The ethertype of an address family.
pub fn ethertype(addr: IpAddr) -> u16 {
    match addr {
        IpAddr::V4(_) => 0x0800,
        IpAddr::V6(_) => 0x86DD,
    }
}

/// An Ethernet II frame between two fixed, locally administered MACs.
pub fn ethernet_frame(packet: &[u8], ethertype: u16) -> Vec<u8> {
    let mut frame = Vec::with_capacity(14 + packet.len());
    frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01]);
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame.extend_from_slice(packet);
    frame
}

/// An IPv4 or IPv6 packet carrying one UDP datagram, with valid checksums.
pub fn udp_ip_packet(
    source: SocketAddr,
    destination: SocketAddr,
    payload: &[u8],
) -> Result<Vec<u8>, WriteError> {
    let udp_len =
        u16::try_from(payload.len() + 8).map_err(|_| WriteError::TooLarge(payload.len()))?;
    let mut udp = Vec::with_capacity(usize::from(udp_len));
    udp.extend_from_slice(&source.port().to_be_bytes());
    udp.extend_from_slice(&destination.port().to_be_bytes());
    udp.extend_from_slice(&udp_len.to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(payload);
    let checksum = match transport_checksum(source.ip(), destination.ip(), IPPROTO_UDP, &udp)? {
        // RFC 768: a computed 0 is sent as all ones (0 means "no checksum").
        0 => 0xFFFF,
        sum => sum,
    };
    udp[6..8].copy_from_slice(&checksum.to_be_bytes());
    ip_packet(source.ip(), destination.ip(), IPPROTO_UDP, 0, &udp)
}

/// An IPv4 (DF, TTL 64) or IPv6 (hop limit 64) packet around a transport `segment`
/// whose checksum the caller has filled; `tos` is the IPv4 TOS / IPv6 traffic class.
pub fn ip_packet(
    source: IpAddr,
    destination: IpAddr,
    protocol: u8,
    tos: u8,
    segment: &[u8],
) -> Result<Vec<u8>, WriteError> {
    let too_large = || WriteError::TooLarge(segment.len());
    match (source, destination) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            let total_len = u16::try_from(segment.len() + 20).map_err(|_| too_large())?;
            let mut packet = vec![0x45, tos, 0, 0, 0, 0, 0x40, 0, 64, protocol, 0, 0];
            packet[2..4].copy_from_slice(&total_len.to_be_bytes());
            packet.extend_from_slice(&src.octets());
            packet.extend_from_slice(&dst.octets());
            let checksum = internet_checksum(&[&packet]);
            packet[10..12].copy_from_slice(&checksum.to_be_bytes());
            packet.extend_from_slice(segment);
            Ok(packet)
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            let payload_len = u16::try_from(segment.len()).map_err(|_| too_large())?;
            let mut packet = vec![0x60 | (tos >> 4), tos << 4, 0, 0];
            packet.extend_from_slice(&payload_len.to_be_bytes());
            packet.extend_from_slice(&[protocol, 64]);
            packet.extend_from_slice(&src.octets());
            packet.extend_from_slice(&dst.octets());
            packet.extend_from_slice(segment);
            Ok(packet)
        }
        _ => Err(WriteError::FamilyMismatch {
            from: SocketAddr::new(source, 0),
            to: SocketAddr::new(destination, 0),
        }),
    }
}

/// The checksum of a TCP, UDP or ICMPv6 `segment` (its checksum field zeroed) under the
/// IPv4/IPv6 pseudo header of `source`, `destination` and `protocol`.
pub fn transport_checksum(
    source: IpAddr,
    destination: IpAddr,
    protocol: u8,
    segment: &[u8],
) -> Result<u16, WriteError> {
    let too_large = || WriteError::TooLarge(segment.len());
    let mut pseudo = Vec::with_capacity(40);
    match (source, destination) {
        (IpAddr::V4(src), IpAddr::V4(dst)) => {
            pseudo.extend_from_slice(&src.octets());
            pseudo.extend_from_slice(&dst.octets());
            pseudo.extend_from_slice(&[0, protocol]);
            let len = u16::try_from(segment.len()).map_err(|_| too_large())?;
            pseudo.extend_from_slice(&len.to_be_bytes());
        }
        (IpAddr::V6(src), IpAddr::V6(dst)) => {
            pseudo.extend_from_slice(&src.octets());
            pseudo.extend_from_slice(&dst.octets());
            let len = u32::try_from(segment.len()).map_err(|_| too_large())?;
            pseudo.extend_from_slice(&len.to_be_bytes());
            pseudo.extend_from_slice(&[0, 0, 0, protocol]);
        }
        _ => {
            return Err(WriteError::FamilyMismatch {
                from: SocketAddr::new(source, 0),
                to: SocketAddr::new(destination, 0),
            });
        }
    }
    Ok(internet_checksum(&[&pseudo, segment]))
}

/// The RFC 1071 one's-complement sum over the concatenation of `parts`.
pub fn internet_checksum(parts: &[&[u8]]) -> u16 {
    let mut sum: u32 = 0;
    let mut odd: Option<u8> = None;
    for byte in parts.iter().flat_map(|p| p.iter().copied()) {
        match odd.take() {
            Some(hi) => sum += u32::from(u16::from_be_bytes([hi, byte])),
            None => odd = Some(byte),
        }
    }
    if let Some(hi) = odd {
        sum += u32::from(u16::from_be_bytes([hi, 0]));
    }
    while sum > 0xFFFF {
        sum = (sum & 0xFFFF) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksums_verify_to_zero() {
        let source: SocketAddr = "192.0.2.1:40000".parse().unwrap_or_else(|e| panic!("{e}"));
        let destination: SocketAddr = "192.0.2.2:2055".parse().unwrap_or_else(|e| panic!("{e}"));
        let packet = udp_ip_packet(source, destination, b"odd").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(internet_checksum(&[&packet[..20]]), 0, "IPv4 header checksum");
        let udp_sum = transport_checksum(source.ip(), destination.ip(), 17, &packet[20..]);
        assert_eq!(udp_sum.ok(), Some(0), "UDP checksum");
    }

    #[test]
    fn mixed_families_are_refused() {
        let source: SocketAddr = "192.0.2.1:1".parse().unwrap_or_else(|e| panic!("{e}"));
        let destination: SocketAddr = "[::1]:2".parse().unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(
            udp_ip_packet(source, destination, b""),
            Err(WriteError::FamilyMismatch { .. })
        ));
    }
}
