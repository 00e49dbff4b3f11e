//! The project's pcap reader and UDP replayer.
//!
//! [`pcap`] reads pcap/pcapng captures into the UDP datagrams they hold, in file order;
//! [`send`] replays datagrams over real UDP sockets, mapping each original exporter onto
//! its own local source address; [`write`] writes datagrams back into a pcap file.

pub mod packet;
pub mod pcap;
pub mod send;
pub mod write;

use std::net::SocketAddr;

pub use pcap::{Capture, DatagramReader, PcapError, SkipCounts, read_file};
pub use send::{Replayer, SendError, SourcePlan, SourceReport};

/// One UDP datagram of a capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpDatagram {
    /// IP source address and UDP source port, as captured.
    pub source: SocketAddr,
    /// IP destination address and UDP destination port, as captured.
    pub destination: SocketAddr,
    /// The UDP payload.
    pub payload: Vec<u8>,
}
