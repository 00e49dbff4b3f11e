//! Reads a pcap or pcapng capture and yields its UDP datagrams in file order.
//!
//! Frames that hold no whole UDP datagram (other protocols, IP fragments, frames cut
//! short by the snap length) are skipped and counted in [`SkipCounts`]. Each datagram
//! keeps its frame's capture timestamp (pcapng: per the interface's `if_tsresol` and
//! `if_tsoffset`; simple packet blocks carry none and read as the epoch).

use std::fs::File;
use std::io::{BufReader, Chain, Cursor, Read};
use std::path::{Path, PathBuf};
use std::time::Duration;

use pcap_file::pcap::PcapReader;
use pcap_file::pcapng::blocks::interface_description::{
    InterfaceDescriptionBlock, InterfaceDescriptionOption,
};
use pcap_file::pcapng::{Block, PcapNgReader};

use crate::UdpDatagram;
use crate::packet::{Link, Skip, udp_in_frame};

/// Why a capture could not be read.
#[derive(Debug, thiserror::Error)]
pub enum PcapError {
    /// The file could not be opened.
    #[error("cannot open {path}: {source}")]
    Open {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Reading failed before the file's magic number.
    #[error("cannot read capture header: {0}")]
    Io(#[from] std::io::Error),
    /// The capture is malformed or truncated.
    #[error("malformed capture: {0}")]
    Format(#[from] pcap_file::PcapError),
    /// A pcap file whose link type this reader does not understand.
    #[error("unsupported link type {0:?}")]
    UnsupportedLink(pcap_file::DataLink),
}

/// Frames that yielded no datagram, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SkipCounts {
    /// Neither IPv4 nor IPv6.
    pub not_ip: u64,
    /// IP but not UDP.
    pub not_udp: u64,
    /// IPv4 or IPv6 fragments.
    pub fragments: u64,
    /// Frames cut short of their announced lengths.
    pub truncated: u64,
    /// Frames whose headers contradict themselves.
    pub malformed: u64,
    /// pcapng packets on an interface of an unsupported link type (or none).
    pub unsupported_link: u64,
}

impl SkipCounts {
    /// All skipped frames.
    pub fn total(&self) -> u64 {
        self.not_ip
            + self.not_udp
            + self.fragments
            + self.truncated
            + self.malformed
            + self.unsupported_link
    }

    fn count(&mut self, skip: Skip) {
        let counter = match skip {
            Skip::NotIp => &mut self.not_ip,
            Skip::NotUdp => &mut self.not_udp,
            Skip::Fragment => &mut self.fragments,
            Skip::Truncated => &mut self.truncated,
            Skip::Malformed => &mut self.malformed,
        };
        *counter += 1;
    }
}

/// A capture read whole: its datagrams in file order and what was skipped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capture {
    /// The UDP datagrams, in file order.
    pub datagrams: Vec<UdpDatagram>,
    /// Frames that were not whole UDP datagrams.
    pub skipped: SkipCounts,
}

/// Every `*.pcap` file under `dir`, in its subfolders too, sorted by path.
pub fn capture_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            found.extend(capture_files(&path)?);
        } else if path.extension().is_some_and(|e| e == "pcap") {
            found.push(path);
        }
    }
    found.sort();
    Ok(found)
}

/// Reads every UDP datagram of the capture at `path`.
pub fn read_file(path: &Path) -> Result<Capture, PcapError> {
    let mut reader = DatagramReader::open(path)?;
    let datagrams = reader.by_ref().collect::<Result<Vec<_>, _>>()?;
    Ok(Capture { datagrams, skipped: reader.skipped() })
}

type Peeked<R> = Chain<Cursor<[u8; 4]>, R>;

/// The container format, with its reader.
enum Format<R: Read> {
    Pcap { reader: PcapReader<Peeked<R>>, link: Link },
    PcapNg { reader: PcapNgReader<Peeked<R>>, interfaces: Vec<Interface> },
}

/// A pcapng interface: its framing, when supported, and its timestamp clock.
#[derive(Debug, Clone, Copy)]
struct Interface {
    link: Option<Link>,
    /// Timestamp units per second (`if_tsresol`, microseconds by default); 0 when the
    /// resolution is too fine to represent.
    units_per_second: u128,
    /// Seconds added to every timestamp (`if_tsoffset`).
    offset_secs: u64,
}

impl Interface {
    fn new(idb: &InterfaceDescriptionBlock<'_>) -> Self {
        let (mut resolution, mut offset_secs) = (6u8, 0u64);
        for option in &idb.options {
            match *option {
                InterfaceDescriptionOption::IfTsResol(value) => resolution = value,
                InterfaceDescriptionOption::IfTsOffset(value) => offset_secs = value,
                _ => {}
            }
        }
        // The high bit chooses a power of two over a power of ten.
        let base: u128 = if resolution & 0x80 == 0 { 10 } else { 2 };
        let units_per_second = base.checked_pow(u32::from(resolution & 0x7F)).unwrap_or(0);
        Self { link: Link::from_datalink(idb.linktype), units_per_second, offset_secs }
    }

    /// The time since the Unix epoch of a timestamp of `units` of this interface's clock.
    fn time(&self, units: u64) -> Duration {
        let offset = Duration::from_secs(self.offset_secs);
        let units = u128::from(units);
        let Some(secs) = units.checked_div(self.units_per_second) else { return offset };
        let nanos = units % self.units_per_second * 1_000_000_000 / self.units_per_second;
        let secs = u64::try_from(secs).unwrap_or(u64::MAX);
        let nanos = u32::try_from(nanos).unwrap_or(0);
        Duration::new(secs, nanos).saturating_add(offset)
    }
}

/// A streaming reader of the UDP datagrams in a pcap or pcapng capture.
///
/// It is an iterator of `Result<UdpDatagram, PcapError>`; after an error it ends.
pub struct DatagramReader<R: Read> {
    format: Format<R>,
    skipped: SkipCounts,
    failed: bool,
}

/// The first four bytes of a pcapng file (its Section Header Block type).
const PCAPNG_MAGIC: [u8; 4] = [0x0A, 0x0D, 0x0D, 0x0A];

impl DatagramReader<BufReader<File>> {
    /// Opens the capture at `path`.
    pub fn open(path: &Path) -> Result<Self, PcapError> {
        let file = File::open(path)
            .map_err(|source| PcapError::Open { path: path.to_path_buf(), source })?;
        Self::new(BufReader::new(file))
    }
}

impl<R: Read> DatagramReader<R> {
    /// Reads the capture header from `input`, telling pcap from pcapng by its magic.
    pub fn new(mut input: R) -> Result<Self, PcapError> {
        let mut magic = [0u8; 4];
        input.read_exact(&mut magic)?;
        let input = Cursor::new(magic).chain(input);
        let format = if magic == PCAPNG_MAGIC {
            Format::PcapNg { reader: PcapNgReader::new(input)?, interfaces: Vec::new() }
        } else {
            let reader = PcapReader::new(input)?;
            let datalink = reader.header().datalink;
            let link = Link::from_datalink(datalink).ok_or(PcapError::UnsupportedLink(datalink))?;
            Format::Pcap { reader, link }
        };
        Ok(Self { format, skipped: SkipCounts::default(), failed: false })
    }

    /// What was skipped so far.
    pub fn skipped(&self) -> SkipCounts {
        self.skipped
    }

    /// The next datagram, skipping (and counting) frames that hold none.
    fn next_datagram(&mut self) -> Option<Result<UdpDatagram, PcapError>> {
        let skipped = &mut self.skipped;
        match &mut self.format {
            Format::Pcap { reader, link } => next_in_pcap(reader, *link, skipped),
            Format::PcapNg { reader, interfaces } => next_in_pcapng(reader, interfaces, skipped),
        }
    }
}

impl<R: Read> Iterator for DatagramReader<R> {
    type Item = Result<UdpDatagram, PcapError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        let item = self.next_datagram();
        self.failed = matches!(item, Some(Err(_)));
        item
    }
}

/// The next datagram of a pcap file.
fn next_in_pcap<R: Read>(
    reader: &mut PcapReader<R>,
    link: Link,
    skipped: &mut SkipCounts,
) -> Option<Result<UdpDatagram, PcapError>> {
    loop {
        let packet = match reader.next_packet()? {
            Ok(packet) => packet,
            Err(e) => return Some(Err(e.into())),
        };
        if let Some(datagram) = datagram_in(Some(link), packet.timestamp, &packet.data, skipped) {
            return Some(Ok(datagram));
        }
    }
}

/// The next datagram of a pcapng file, tracking each section's interfaces.
fn next_in_pcapng<R: Read>(
    reader: &mut PcapNgReader<R>,
    interfaces: &mut Vec<Interface>,
    skipped: &mut SkipCounts,
) -> Option<Result<UdpDatagram, PcapError>> {
    loop {
        let block = match reader.next_block()? {
            Ok(block) => block,
            Err(e) => return Some(Err(e.into())),
        };
        let found = match &block {
            Block::SectionHeader(_) => {
                interfaces.clear();
                None
            }
            Block::InterfaceDescription(idb) => {
                interfaces.push(Interface::new(idb));
                None
            }
            Block::EnhancedPacket(epb) => {
                // pcap-file 2 hands over the raw timestamp count as if it were nanoseconds.
                let units = u64::try_from(epb.timestamp.as_nanos()).unwrap_or(u64::MAX);
                datagram_on(interfaces, epb.interface_id, Some(units), &epb.data, skipped)
            }
            Block::SimplePacket(spb) => {
                let len =
                    usize::try_from(spb.original_len).unwrap_or(usize::MAX).min(spb.data.len());
                datagram_on(interfaces, 0, None, &spb.data[..len], skipped)
            }
            Block::Packet(pb) => {
                let id = u32::from(pb.interface_id);
                datagram_on(interfaces, id, Some(pb.timestamp), &pb.data, skipped)
            }
            _ => None,
        };
        if let Some(datagram) = found {
            return Some(Ok(datagram));
        }
    }
}

/// The datagram in `frame`, captured on interface `id` of the current section at
/// `units` of its clock (the epoch without a timestamp).
fn datagram_on(
    interfaces: &[Interface],
    id: u32,
    units: Option<u64>,
    frame: &[u8],
    skipped: &mut SkipCounts,
) -> Option<UdpDatagram> {
    let interface = usize::try_from(id).ok().and_then(|i| interfaces.get(i));
    let timestamp = interface.zip(units).map_or(Duration::ZERO, |(i, units)| i.time(units));
    datagram_in(interface.and_then(|i| i.link), timestamp, frame, skipped)
}

/// The datagram in `frame`, or `None` after counting why there is none.
fn datagram_in(
    link: Option<Link>,
    timestamp: Duration,
    frame: &[u8],
    skipped: &mut SkipCounts,
) -> Option<UdpDatagram> {
    let Some(link) = link else {
        skipped.unsupported_link += 1;
        return None;
    };
    match udp_in_frame(link, frame) {
        Ok(view) => Some(UdpDatagram {
            source: view.source,
            destination: view.destination,
            timestamp,
            payload: view.payload.to_vec(),
        }),
        Err(skip) => {
            skipped.count(skip);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use pcap_file::DataLink;
    use pcap_file::pcapng::PcapNgWriter;
    use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;

    use super::*;
    use crate::write::{ethernet_frame, udp_ip_packet, write_pcap};

    fn datagram(src: &str, dst: &str, payload: &[u8]) -> UdpDatagram {
        UdpDatagram {
            source: src.parse().unwrap_or_else(|e| panic!("{e}")),
            destination: dst.parse().unwrap_or_else(|e| panic!("{e}")),
            timestamp: Duration::ZERO,
            payload: payload.to_vec(),
        }
    }

    #[test]
    fn pcap_round_trip_keeps_order_families_and_times() {
        let at = |micros: u64| Duration::from_secs(1_704_067_200) + Duration::from_micros(micros);
        let sent = vec![
            UdpDatagram {
                timestamp: at(0),
                ..datagram("10.0.0.1:1000", "10.0.0.9:2055", b"first")
            },
            UdpDatagram {
                timestamp: at(1),
                ..datagram("[2001:db8::1]:1001", "[2001:db8::9]:4739", b"second")
            },
            UdpDatagram {
                timestamp: at(1_500_000),
                ..datagram("10.0.0.2:1002", "10.0.0.9:2055", &[7u8; 1400])
            },
        ];
        let bytes = write_pcap(Vec::new(), &sent).unwrap_or_else(|e| panic!("{e}"));
        let mut reader = DatagramReader::new(bytes.as_slice()).unwrap_or_else(|e| panic!("{e}"));
        let read: Vec<UdpDatagram> =
            reader.by_ref().collect::<Result<_, _>>().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(read, sent);
        assert_eq!(reader.skipped(), SkipCounts::default());
    }

    #[test]
    fn pcapng_interfaces_choose_the_link_type() {
        let d = datagram("192.0.2.1:5000", "192.0.2.2:2055", b"ng");
        let packet =
            udp_ip_packet(d.source, d.destination, &d.payload).unwrap_or_else(|e| panic!("{e}"));
        let mut writer = PcapNgWriter::new(Vec::new()).unwrap_or_else(|e| panic!("{e}"));
        let interfaces = [DataLink::ETHERNET, DataLink::RAW, DataLink::IEEE802_11];
        for linktype in interfaces {
            let mut idb = InterfaceDescriptionBlock::new(linktype, 65535);
            if linktype == DataLink::RAW {
                // Nanosecond clock, 100 s ahead.
                idb.options.push(InterfaceDescriptionOption::IfTsResol(9));
                idb.options.push(InterfaceDescriptionOption::IfTsOffset(100));
            }
            writer.write_pcapng_block(idb).unwrap_or_else(|e| panic!("{e}"));
        }
        let frames = [(0, ethernet_frame(&packet, 0x0800)), (1, packet.clone()), (2, packet)];
        for (interface_id, frame) in frames {
            let len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
            let epb = EnhancedPacketBlock {
                interface_id,
                // pcap-file writes this count as is: 1_500_000 units of each interface.
                timestamp: Duration::from_nanos(1_500_000),
                original_len: len,
                data: Cow::Owned(frame),
                options: vec![],
            };
            writer.write_pcapng_block(epb).unwrap_or_else(|e| panic!("{e}"));
        }
        let bytes = writer.into_inner();
        let mut reader = DatagramReader::new(bytes.as_slice()).unwrap_or_else(|e| panic!("{e}"));
        let read: Vec<UdpDatagram> =
            reader.by_ref().collect::<Result<_, _>>().unwrap_or_else(|e| panic!("{e}"));
        let on_ethernet = UdpDatagram { timestamp: Duration::from_millis(1_500), ..d.clone() };
        let on_raw = UdpDatagram { timestamp: Duration::from_micros(100_001_500), ..d };
        assert_eq!(read, vec![on_ethernet, on_raw]);
        assert_eq!(reader.skipped(), SkipCounts { unsupported_link: 1, ..SkipCounts::default() });
    }

    #[test]
    fn garbage_and_truncated_files_are_errors() {
        assert!(DatagramReader::new(&b"not a capture at all, no"[..]).is_err());
        let sent = [datagram("10.0.0.1:1", "10.0.0.2:2", b"cut")];
        let bytes = write_pcap(Vec::new(), &sent).unwrap_or_else(|e| panic!("{e}"));
        let cut = &bytes[..bytes.len() - 2];
        let mut reader = DatagramReader::new(cut).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(reader.next(), Some(Err(PcapError::Format(_)))));
        assert!(reader.next().is_none(), "a reader ends after its first error");
    }
}
