//! The shared router captures, read by `flow-replay` as strictly as a decode test needs.

#![allow(dead_code)]

use std::path::Path;

use flow_replay::{SkipCounts, UdpDatagram, read_file};

/// Every UDP datagram of the capture at `path`, in file order, with its capture time.
///
/// Frames that carry no UDP (a BGP session in the same capture) are passed over; a frame
/// the reader could not take whole (IP fragment, cut short by the capture, malformed
/// header, unsupported link type) fails the test instead of going missing silently.
pub fn udp_datagrams(path: &Path) -> Vec<UdpDatagram> {
    let capture = read_file(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let skipped = capture.skipped;
    let not_udp =
        SkipCounts { not_ip: skipped.not_ip, not_udp: skipped.not_udp, ..SkipCounts::default() };
    assert_eq!(
        skipped,
        not_udp,
        "{}: frames skipped for other reasons than not UDP",
        path.display()
    );
    capture.datagrams
}
