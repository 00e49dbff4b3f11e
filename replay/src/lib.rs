//! The project's pcap reader and UDP replayer.
//!
//! [`pcap`] reads pcap/pcapng captures into the UDP datagrams they hold, in file order;
//! [`send`] replays datagrams over real UDP sockets, mapping each original exporter onto
//! its own local source address; [`write`] writes datagrams back into a pcap file.
//! [`generate`] builds NetFlow v5/v9, IPFIX and sFlow v5 datagrams itself, and [`load`]
//! sends them from many simulated exporters at a fixed rate or flat out (the
//! `flow-loadgen` binary).

pub mod generate;
pub mod load;
mod mmsg;
pub mod packet;
pub mod pcap;
pub mod send;
pub mod write;

use std::net::SocketAddr;
use std::time::Duration;

pub use pcap::{Capture, DatagramReader, PcapError, SkipCounts, capture_files, read_file};
pub use send::{Replayer, SendError, SourcePlan, SourceReport};

/// One UDP datagram of a capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpDatagram {
    /// IP source address and UDP source port, as captured.
    pub source: SocketAddr,
    /// IP destination address and UDP destination port, as captured.
    pub destination: SocketAddr,
    /// Capture time since the Unix epoch: the frame's timestamp when read from a
    /// capture, and the timestamp its frame gets when written to one.
    pub timestamp: Duration,
    /// The UDP payload.
    pub payload: Vec<u8>,
}

impl UdpDatagram {
    /// The capture time in Unix nanoseconds (saturating far past the year 2554).
    pub fn timestamp_ns(&self) -> u64 {
        u64::try_from(self.timestamp.as_nanos()).unwrap_or(u64::MAX)
    }
}
