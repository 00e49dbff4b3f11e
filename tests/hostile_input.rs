//! Malformed and hostile datagrams from one source never crash the collector nor
//! disturb another exporter: a real router capture replayed from a second source at the
//! same time decodes completely, the hostile source emits no flow, and each bad datagram
//! is logged as a decode error naming the hostile exporter's address.

mod support;

#[path = "../decode/tests/support/reference.rs"]
mod reference;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use flow_replay::read_file;
use reference::{ExpectedFlow, ReferenceStream, compare};
use support::{Collector, shared_pcaps};

const HOSTILE: &str = "127.0.0.60";
const GOOD: &str = "127.0.0.61";

/// A v9 header (20 bytes) with `count` records, followed by `body`.
fn v9(count: u16, body: &[u8]) -> Vec<u8> {
    let mut d = vec![0, 9];
    d.extend_from_slice(&count.to_be_bytes());
    d.extend_from_slice(&[0, 0, 0, 1, 0x63, 0x5e, 0x0b, 0x00, 0, 0, 0, 1, 0, 0, 0, 0]);
    d.extend_from_slice(body);
    d
}

/// An IPFIX message header with a correct length, followed by `body`.
fn ipfix(body: &[u8]) -> Vec<u8> {
    let mut d = vec![0, 10];
    d.extend_from_slice(&u16::try_from(16 + body.len()).unwrap_or(u16::MAX).to_be_bytes());
    d.extend_from_slice(&[0x63, 0x5e, 0x0b, 0x00, 0, 0, 0, 1, 0, 0, 0, 0]);
    d.extend_from_slice(body);
    d
}

/// Every kind of bad datagram the issue names, and a few more.
fn hostile_datagrams() -> Vec<Vec<u8>> {
    // A v9 template claiming 65535 fields, with only four of them present.
    let mut huge_template = vec![0, 0, 0x00, 0x18, 1, 0, 0xff, 0xff];
    huge_template.extend_from_slice(&[0, 8, 0, 4, 0, 12, 0, 4, 0, 1, 0, 4, 0, 2, 0, 4]);
    // An IPFIX template with a field length of 65535 (oversized), then data using it.
    let oversized = [0, 2, 0, 12, 1, 1, 0, 1, 0, 8, 0xff, 0xff];
    vec![
        vec![],                                 // zero-length datagram
        vec![0, 9, 0, 1],                       // truncated v9 header
        vec![0, 10, 0, 200, 0, 0],              // truncated IPFIX header
        vec![0, 5, 0, 30, 0, 0, 0, 0],          // v5 claiming 30 records, none present
        vec![0x12, 0x34, 0xde, 0xad, 0xbe],     // unknown version
        v9(1, &[1, 0, 0xff, 0xf0, 1, 2, 3, 4]), // data set whose length runs past the end
        v9(1, &[1, 0, 0, 0]),                   // zero-length set
        v9(1, &huge_template),                  // template with 65535 fields
        v9(1, &[1, 44, 0, 8, 9, 9, 9, 9]),      // data before any template
        ipfix(&oversized),                      // oversized field length
        ipfix(&[0, 2, 0, 4]),                   // empty template set
        vec![0xff; 1500],                       // noise
    ]
}

#[test]
fn hostile_datagrams_are_counted_and_do_not_disturb_another_exporter() {
    let capture = shared_pcaps().join("100-IPFIXv10-CISCO/traffic-00.pcap");
    let reference = capture.with_file_name("traffic-00-flow.json");
    let expected_flows = expected_flows(&reference);
    let expected = expected_flows.len();
    assert!(expected > 0, "the reference holds no data record");
    let datagrams = read_file(&capture).unwrap_or_else(|e| panic!("{e}")).datagrams;

    let collector = Collector::start_netflow();
    let target = collector.addr();
    let hostile = bind(HOSTILE);
    let good = bind(GOOD);
    // Interleave: hostile bytes before, between and after the good exporter's datagrams.
    let bad = hostile_datagrams();
    for (i, datagram) in datagrams.iter().enumerate() {
        let noise = &bad[i % bad.len()];
        hostile.send_to(noise, target).unwrap_or_else(|e| panic!("send hostile: {e}"));
        good.send_to(&datagram.payload, target).unwrap_or_else(|e| panic!("send good: {e}"));
        std::thread::sleep(Duration::from_millis(2));
    }
    for noise in &bad {
        hostile.send_to(noise, target).unwrap_or_else(|e| panic!("send hostile: {e}"));
        std::thread::sleep(Duration::from_millis(2));
    }
    collector.wait_for_lines(expected, Duration::from_secs(30), Duration::from_millis(500));
    let finished = collector.stop();

    assert!(finished.status.success(), "collector exit {}", finished.status);
    let from = |addr: &str| finished.flows.iter().filter(|f| f["sampler_address"] == addr).count();
    assert_eq!(from(GOOD), expected, "the good exporter lost flows");
    for (want, got) in expected_flows.iter().zip(&finished.flows) {
        compare(want, got).unwrap_or_else(|e| panic!("flow differs from the reference: {e}"));
    }
    assert_eq!(from(HOSTILE), 0, "hostile datagrams produced flows");
    assert_eq!(finished.flows.len(), expected, "flows from nowhere");
    let logs = finished.logs.join("\n");
    assert!(!logs.contains("panicked"), "a panic was logged:\n{logs}");
    let hostile_errors =
        finished.logs.iter().filter(|l| l.contains("Decode error") && l.contains(HOSTILE)).count();
    assert!(hostile_errors > 0, "no decode error logged for {HOSTILE}:\n{logs}");
    assert!(
        !finished.logs.iter().any(|l| l.contains("Decode error") && l.contains(GOOD)),
        "the good exporter was blamed for an error:\n{logs}"
    );
}

/// The flows the reference decode expects, in order.
fn expected_flows(reference: &std::path::Path) -> Vec<ExpectedFlow> {
    let text = std::fs::read_to_string(reference)
        .unwrap_or_else(|e| panic!("{}: {e}", reference.display()));
    let mut stream = ReferenceStream::default();
    text.lines()
        .flat_map(|line| {
            stream
                .next_packet(GOOD, line)
                .unwrap_or_else(|e| panic!("{}: {e}", reference.display()))
        })
        .collect()
}

fn bind(ip: &str) -> UdpSocket {
    let addr: SocketAddr = format!("{ip}:0").parse().unwrap_or_else(|e| panic!("{ip}: {e}"));
    UdpSocket::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"))
}
