//! Reads a pcap or pcapng capture and yields its UDP datagrams in file order.
//!
//! Frames that hold no whole UDP datagram (other protocols, IP fragments, frames cut
//! short by the snap length) are skipped and counted in [`SkipCounts`].

use std::fs::File;
use std::io::{BufReader, Chain, Cursor, Read};
use std::path::{Path, PathBuf};

use pcap_file::pcap::PcapReader;
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
    PcapNg { reader: PcapNgReader<Peeked<R>>, links: Vec<Option<Link>> },
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
            Format::PcapNg { reader: PcapNgReader::new(input)?, links: Vec::new() }
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
            Format::PcapNg { reader, links } => next_in_pcapng(reader, links, skipped),
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
        if let Some(datagram) = datagram_in(Some(link), &packet.data, skipped) {
            return Some(Ok(datagram));
        }
    }
}

/// The next datagram of a pcapng file, tracking each section's interfaces.
fn next_in_pcapng<R: Read>(
    reader: &mut PcapNgReader<R>,
    links: &mut Vec<Option<Link>>,
    skipped: &mut SkipCounts,
) -> Option<Result<UdpDatagram, PcapError>> {
    loop {
        let block = match reader.next_block()? {
            Ok(block) => block,
            Err(e) => return Some(Err(e.into())),
        };
        let found = match &block {
            Block::SectionHeader(_) => {
                links.clear();
                None
            }
            Block::InterfaceDescription(idb) => {
                links.push(Link::from_datalink(idb.linktype));
                None
            }
            Block::EnhancedPacket(epb) => {
                datagram_in(interface_link(links, epb.interface_id), &epb.data, skipped)
            }
            Block::SimplePacket(spb) => {
                let len =
                    usize::try_from(spb.original_len).unwrap_or(usize::MAX).min(spb.data.len());
                datagram_in(interface_link(links, 0), &spb.data[..len], skipped)
            }
            Block::Packet(pb) => {
                datagram_in(interface_link(links, u32::from(pb.interface_id)), &pb.data, skipped)
            }
            _ => None,
        };
        if let Some(datagram) = found {
            return Some(Ok(datagram));
        }
    }
}

/// The link type of interface `id` of the current section, if known and supported.
fn interface_link(links: &[Option<Link>], id: u32) -> Option<Link> {
    usize::try_from(id).ok().and_then(|i| links.get(i).copied().flatten())
}

/// The datagram in `frame`, or `None` after counting why there is none.
fn datagram_in(link: Option<Link>, frame: &[u8], skipped: &mut SkipCounts) -> Option<UdpDatagram> {
    let Some(link) = link else {
        skipped.unsupported_link += 1;
        return None;
    };
    match udp_in_frame(link, frame) {
        Ok(view) => Some(UdpDatagram {
            source: view.source,
            destination: view.destination,
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
    use std::time::Duration;

    use pcap_file::DataLink;
    use pcap_file::pcapng::PcapNgWriter;
    use pcap_file::pcapng::blocks::enhanced_packet::EnhancedPacketBlock;
    use pcap_file::pcapng::blocks::interface_description::InterfaceDescriptionBlock;

    use super::*;
    use crate::write::{ethernet_frame, udp_ip_packet, write_pcap};

    fn datagram(src: &str, dst: &str, payload: &[u8]) -> UdpDatagram {
        UdpDatagram {
            source: src.parse().unwrap_or_else(|e| panic!("{e}")),
            destination: dst.parse().unwrap_or_else(|e| panic!("{e}")),
            payload: payload.to_vec(),
        }
    }

    #[test]
    fn pcap_round_trip_keeps_order_and_families() {
        let sent = vec![
            datagram("10.0.0.1:1000", "10.0.0.9:2055", b"first"),
            datagram("[2001:db8::1]:1001", "[2001:db8::9]:4739", b"second"),
            datagram("10.0.0.2:1002", "10.0.0.9:2055", &[7u8; 1400]),
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
            let idb = InterfaceDescriptionBlock::new(linktype, 65535);
            writer.write_pcapng_block(idb).unwrap_or_else(|e| panic!("{e}"));
        }
        let frames = [(0, ethernet_frame(&packet, 0x0800)), (1, packet.clone()), (2, packet)];
        for (interface_id, frame) in frames {
            let len = u32::try_from(frame.len()).unwrap_or(u32::MAX);
            let epb = EnhancedPacketBlock {
                interface_id,
                timestamp: Duration::ZERO,
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
        assert_eq!(read, vec![d.clone(), d]);
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
