//! Every shared router capture replayed as real UDP to one running collector, all
//! captures at the same time, each from its own loopback source address(es), and the
//! collector's JSON flows compared per exporter with NetGauze's reference decode.
//!
//! Checked per capture: as many flows as the reference has data records (options data
//! excluded), every reference field equal (see `decode/tests/support/reference.rs`),
//! `sampler_address` equal to the replay source address, and `time_received_ns` taken
//! from the collector's clock during the run.

mod support;

#[path = "../decode/tests/support/reference.rs"]
mod reference;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use flow_replay::{SourcePlan, UdpDatagram, read_file};
use reference::{ExpectedFlow, ReferenceStream, compare, to_object};
use serde_json::Value;
use support::{Collector, replay_concurrently, shared_captures, shared_pcaps};

/// Replay pace per capture.
const PPS: u32 = 1_000;
/// How long the collector may take to print every expected flow.
const FLOW_TIMEOUT: Duration = Duration::from_secs(60);
/// Quiet time after the last expected flow, to catch extra ones.
const SETTLE: Duration = Duration::from_millis(750);
/// Source addresses one capture may use (one per original exporter address).
const ADDRESSES_PER_CAPTURE: u8 = 8;

/// One capture: its datagrams and, per original exporter address, the flows the
/// reference expects from it in order.
struct Capture {
    name: String,
    datagrams: Vec<UdpDatagram>,
    expected: HashMap<IpAddr, Vec<ExpectedFlow>>,
    /// The source addresses this capture's exporters are replayed from, in turn.
    sources: Vec<IpAddr>,
}

#[test]
fn every_capture_replayed_concurrently_matches_the_reference() {
    let captures: Vec<Capture> =
        shared_captures().iter().enumerate().map(|(k, p)| load(k, p)).collect();
    let expected_total: usize =
        captures.iter().flat_map(|c| c.expected.values()).map(Vec::len).sum();
    assert!(expected_total > 0, "the references hold no data record");

    let before_ns = now_ns();
    let collector = Collector::start_netflow();
    let mappings = send_concurrently(collector.addr(), &captures);
    collector.wait_for_lines(expected_total, FLOW_TIMEOUT, SETTLE);
    let finished = collector.stop();
    let after_ns = now_ns();
    assert!(
        finished.status.success(),
        "collector exit {}:\n{}",
        finished.status,
        finished.logs.join("\n")
    );

    let mut problems = Vec::new();
    let mut accounted = 0;
    for (capture, mapping) in captures.iter().zip(&mappings) {
        for (original, expected) in &capture.expected {
            let Some(local) = mapping.get(original) else {
                problems.push(format!("{}: exporter {original} was never replayed", capture.name));
                continue;
            };
            let local = local.to_string();
            let flows: Vec<&Value> =
                finished.flows.iter().filter(|f| f["sampler_address"] == local.as_str()).collect();
            accounted += flows.len();
            let place = format!("{} (exporter {original} replayed from {local})", capture.name);
            let found = check_exporter(&place, expected, &flows, (before_ns, after_ns));
            eprintln!(
                "{place}: {} reference records, {} flows, {} problems",
                expected.len(),
                flows.len(),
                found.len()
            );
            problems.extend(found);
        }
    }
    if accounted != finished.flows.len() {
        let stray = finished.flows.len() - accounted;
        problems.push(format!("{stray} flow(s) with a sampler_address no capture was sent from"));
    }
    assert!(problems.is_empty(), "collector vs reference:\n{}", problems.join("\n"));
}

/// Reads capture `k` and its reference decode (`<stem>-flow.json` beside it).
fn load(k: usize, pcap: &Path) -> Capture {
    let name = pcap.strip_prefix(shared_pcaps()).unwrap_or(pcap).display().to_string();
    let datagrams = read_file(pcap).unwrap_or_else(|e| panic!("{name}: {e}")).datagrams;
    let stem = pcap.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
    let reference_path = pcap.with_file_name(format!("{stem}-flow.json"));
    let reference = std::fs::read_to_string(&reference_path)
        .unwrap_or_else(|e| panic!("{}: {e}", reference_path.display()));
    let lines: Vec<&str> = reference.lines().collect();
    assert_eq!(datagrams.len(), lines.len(), "{name}: datagrams vs reference packets");
    let mut stream = ReferenceStream::default();
    let mut expected: HashMap<IpAddr, Vec<ExpectedFlow>> = HashMap::new();
    for (datagram, line) in datagrams.iter().zip(&lines) {
        let exporter = datagram.source.ip();
        let flows = stream
            .next_packet(&exporter.to_string(), line)
            .unwrap_or_else(|e| panic!("{}: {e}", reference_path.display()));
        expected.entry(exporter).or_default().extend(flows);
    }
    let group = u8::try_from(10 + k).unwrap_or_else(|_| panic!("too many captures"));
    let sources = (1..=ADDRESSES_PER_CAPTURE)
        .map(|host| IpAddr::V4(Ipv4Addr::new(127, 0, group, host)))
        .collect();
    Capture { name, datagrams, expected, sources }
}

/// Replays every capture at once, each from its own addresses; returns, per capture,
/// which local address each original exporter was sent from.
fn send_concurrently(target: SocketAddr, captures: &[Capture]) -> Vec<HashMap<IpAddr, IpAddr>> {
    let jobs =
        captures.iter().map(|c| (SourcePlan::Addresses(c.sources.clone()), &c.datagrams[..]));
    let replayers = replay_concurrently(target, jobs.collect(), PPS);
    captures
        .iter()
        .zip(&replayers)
        .map(|(capture, replayer)| {
            let originals = capture.expected.keys();
            originals.filter_map(|o| replayer.local_ip(*o).map(|local| (*o, local))).collect()
        })
        .collect()
}

/// Compares one exporter's flows with its expected ones: count, then each expected
/// flow against the first unused flow that matches it (reporting the flow at the same
/// position when none does), then the receive clock.
fn check_exporter(
    place: &str,
    expected: &[ExpectedFlow],
    flows: &[&Value],
    (before_ns, after_ns): (u64, u64),
) -> Vec<String> {
    let mut problems = Vec::new();
    if flows.len() != expected.len() {
        problems.push(format!(
            "{place}: {} flows, reference has {} data records",
            flows.len(),
            expected.len()
        ));
    }
    let mut used = vec![false; flows.len()];
    for (position, want) in expected.iter().enumerate() {
        let hit = (0..flows.len()).find(|&i| !used[i] && compare(want, flows[i]).is_ok());
        match hit {
            Some(i) => used[i] = true,
            None => {
                let detail = flows.get(position).map_or_else(
                    || "no flow at that position".to_string(),
                    |flow| compare(want, flow).err().unwrap_or_default(),
                );
                problems.push(format!("{place}: {detail}\n  expected {}", to_object(want)));
            }
        }
    }
    for flow in flows {
        let received = flow["time_received_ns"].as_u64().unwrap_or(0);
        if !(before_ns..=after_ns).contains(&received) {
            problems.push(format!(
                "{place}: time_received_ns {received} outside the run [{before_ns}, {after_ns}]"
            ));
            break;
        }
    }
    problems
}

/// The system clock, Unix nanoseconds.
fn now_ns() -> u64 {
    let since = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
    u64::try_from(since.as_nanos()).unwrap_or(u64::MAX)
}
