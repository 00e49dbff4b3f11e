//! Malformed and hostile datagrams never crash the collector nor disturb another
//! exporter: a real router capture replayed from a good source at the same time decodes
//! completely. Two scenarios: every kind of bad datagram from one source (each logged as
//! a decode error naming that source), and a soak: random and mutated datagrams from
//! thousands of spoofed loopback sources for a bounded time, with memory held under a
//! stated bound.

mod support;

#[path = "../decode/tests/support/reference.rs"]
mod reference;
#[path = "../decode/tests/support/rng.rs"]
mod rng;

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use flow_replay::read_file;
use reference::{ExpectedFlow, ReferenceStream, compare};
use rng::XorShift;
use serde_json::json;
use support::{Collector, free_udp_port, shared_pcaps};

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

/// Soak: flood threads send random noise, mutated copies of the capture's datagrams and
/// template-less data from `SOAK_SOURCES` spoofed loopback addresses, as fast as
/// `SOAK_PPS` allows (default 8,000/s, what the debug build the suite runs keeps up
/// with on 2 busy cores; `SOAK_SECONDS`, default 8), while the good
/// exporter replays the capture once, spread over the flood. The good exporter loses
/// nothing, the collector's peak RSS stays under `MAX_PEAK_RSS_MIB`, and the figures
/// are printed (`cargo test --test hostile_input -- --nocapture` shows them).
#[test]
fn a_flood_from_spoofed_sources_leaves_the_good_exporter_whole_and_memory_bounded() {
    /// The memory bound this test states: pending caches at most 8 MiB, at most 1000
    /// exporters per listener, a 600000-flow publish buffer that stdout never fills.
    const MAX_PEAK_RSS_MIB: u64 = 256;
    let seconds: u64 = env_or("SOAK_SECONDS", 8);
    let pps: u64 = env_or("SOAK_PPS", 8_000);
    let sources: u32 = env_or("SOAK_SOURCES", 3_000);

    let capture = shared_pcaps().join("100-IPFIXv10-CISCO/traffic-00.pcap");
    let expected_flows = expected_flows(&capture.with_file_name("traffic-00-flow.json"));
    let datagrams = read_file(&capture).unwrap_or_else(|e| panic!("{e}")).datagrams;
    let addr = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    let config = json!({
        "max_exporters": 1000,
        "pending_flows_max_bytes": 8 << 20,
        "listeners": [{
            "protocol": "netflow",
            "listen_addr": addr.to_string(),
            "buffer_size": 32 << 20,
        }],
    });
    let collector = Collector::start(&config, vec![addr]);

    // The good exporter is established before the flood, as a production router is: the
    // flood then fills the exporter cap without taking its place.
    let good = bind(GOOD);
    let (first, rest) = datagrams.split_first().unwrap_or_else(|| panic!("empty capture"));
    good.send_to(&first.payload, addr).unwrap_or_else(|e| panic!("send good: {e}"));
    let deadline = Instant::now() + Duration::from_secs(10);
    while !collector.logs().contains(&format!("exporter={GOOD}")) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let seeds: Vec<Vec<u8>> = datagrams.iter().map(|d| d.payload.to_vec()).collect();
    let flooders: Vec<_> = (0..2u8)
        .map(|thread| {
            let (stop, sent, seeds) = (Arc::clone(&stop), Arc::clone(&sent), seeds.clone());
            std::thread::spawn(move || {
                flood(thread, sources / 2, pps / 2, &seeds, addr, &stop, &sent);
            })
        })
        .collect();
    let started = Instant::now();
    let gap = Duration::from_secs(seconds) / u32::try_from(datagrams.len()).unwrap_or(1);
    for datagram in rest {
        good.send_to(&datagram.payload, addr).unwrap_or_else(|e| panic!("send good: {e}"));
        std::thread::sleep(gap);
    }
    while started.elapsed() < Duration::from_secs(seconds) {
        std::thread::sleep(Duration::from_millis(50));
    }
    stop.store(true, Ordering::Relaxed);
    for flooder in flooders {
        flooder.join().unwrap_or_else(|_| panic!("a flood thread panicked"));
    }
    collector.wait_for_lines(expected_flows.len(), Duration::from_secs(30), Duration::from_secs(1));
    let peak_mib = collector.peak_rss_kib() / 1024;
    let finished = collector.stop();

    let flood_sent = sent.load(Ordering::Relaxed);
    let summary = finished.logs.iter().rev().find(|l| l.contains("datagrams_received=")).cloned();
    println!(
        "soak: {flood_sent} flood datagrams from {sources} sources in {seconds} s \
         ({} /s), peak RSS {peak_mib} MiB; {}",
        flood_sent / seconds.max(1),
        summary.as_deref().unwrap_or("no summary line")
    );
    assert!(finished.status.success(), "collector exit {}", finished.status);
    let logs = finished.logs.join("\n");
    assert!(!logs.contains("panicked"), "a panic was logged");
    let good_flows: Vec<_> =
        finished.flows.iter().filter(|f| f["sampler_address"] == GOOD).collect();
    assert_eq!(good_flows.len(), expected_flows.len(), "the good exporter lost flows");
    for (want, got) in expected_flows.iter().zip(good_flows) {
        compare(want, got).unwrap_or_else(|e| panic!("flow differs from the reference: {e}"));
    }
    assert!(
        peak_mib < MAX_PEAK_RSS_MIB,
        "peak RSS {peak_mib} MiB is over the stated {MAX_PEAK_RSS_MIB} MiB"
    );
}

/// A positive number from the environment, or `default`.
fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// One flood thread: `sources` spoofed loopback sources (127.<20 + thread>.x.y), each
/// datagram from the next source in turn, paced to `pps`, until `stop`.
fn flood(
    thread: u8,
    sources: u32,
    pps: u64,
    seeds: &[Vec<u8>],
    to: SocketAddr,
    stop: &AtomicBool,
    sent: &AtomicU64,
) {
    let sockets: Vec<UdpSocket> = (0..sources.max(1))
        .map(|i| {
            let [_, _, x, y] = i.to_be_bytes();
            let ip = Ipv4Addr::new(127, 20 + thread, x, y.max(1));
            UdpSocket::bind((ip, 0)).unwrap_or_else(|e| panic!("bind {ip}: {e}"))
        })
        .collect();
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15 ^ u64::from(thread));
    let started = Instant::now();
    let mut count: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        let socket = &sockets[usize::try_from(count).unwrap_or(0) % sockets.len()];
        let datagram = hostile_variant(&mut rng, seeds);
        // A full socket buffer is what a flood does; the error is not the test's concern.
        let _ = socket.send_to(&datagram, to);
        count += 1;
        sent.fetch_add(1, Ordering::Relaxed);
        if count.is_multiple_of(256) {
            let due = Duration::from_secs_f64(count as f64 / pps.max(1) as f64);
            if let Some(ahead) = due.checked_sub(started.elapsed()) {
                std::thread::sleep(ahead);
            }
        }
    }
}

/// Noise, a mutated capture datagram, a truncated one, or template-less IPFIX data.
fn hostile_variant(rng: &mut XorShift, seeds: &[Vec<u8>]) -> Vec<u8> {
    let seed = &seeds[rng.below(seeds.len())];
    match rng.below(4) {
        0 => (0..rng.below(1500)).map(|_| rng.byte()).collect(),
        1 => {
            let mut mutated = seed.clone();
            for _ in 0..=rng.below(8) {
                let at = rng.below(mutated.len());
                mutated[at] = rng.byte();
            }
            mutated
        }
        2 => seed[..rng.below(seed.len())].to_vec(),
        _ => {
            let template_id = u16::try_from(256 + rng.below(4000)).unwrap_or(256);
            let mut set = template_id.to_be_bytes().to_vec();
            set.extend_from_slice(&1_004u16.to_be_bytes());
            set.extend((0..1_000).map(|_| rng.byte()));
            ipfix(&set)
        }
    }
}
