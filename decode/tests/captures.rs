//! Every capture in `shared/pcaps` replayed through `NetflowSession` (one per exporter
//! address, in file order) and compared record by record with NetGauze's reference
//! decode (`*-flow.json`, one line per exported packet).
//!
//! For each packet: no decode errors; as many flows as the reference has data records
//! (options data excluded); each flow's JSON (`flowpb::json::to_json`) equal to the
//! reference's values for addresses, ports, protocol, counters, interfaces, AS numbers,
//! next hops, prefix lengths, TOS, TCP flags, VLANs, MPLS labels, times, domain,
//! sequence number and sampling rate (see `support/reference.rs` for how each is
//! derived). No exceptions to the reference were needed: where the decoder makes a
//! choice the reference leaves open (repeated IEs, both address families present) the
//! expectation follows the decoder's documented rule.

mod support;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use flow_decode::{
    Datagram, ExporterSession, FlowBuffer, NetflowSession, NetflowSettings, PendingFlowSettings,
    SamplingPolicy,
};
use support::capture::udp_datagrams;
use support::reference::{ReferenceStream, compare, to_object};
use support::rng::XorShift;

fn pcaps_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/pcaps")
}

fn settings() -> NetflowSettings {
    NetflowSettings {
        max_templates: 2000,
        max_template_fields: 10_000,
        pending: Some(PendingFlowSettings {
            max_pending_flows: 256,
            max_entries_per_template: 1024,
            max_entry_size_bytes: 65_535,
            ttl: Duration::from_secs(300),
            max_bytes: usize::MAX,
            memory: std::sync::Arc::new(flow_decode::netflow::PendingMemory::unbounded()),
        }),
        sampling: SamplingPolicy::default(),
    }
}

/// Every `*.pcap` under the directory, sorted.
fn captures(dir: &Path) -> Vec<PathBuf> {
    flow_replay::capture_files(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
}

fn reference_for(pcap: &Path) -> PathBuf {
    let stem = pcap.file_stem().and_then(|s| s.to_str()).expect("pcap name");
    pcap.with_file_name(format!("{stem}-flow.json"))
}

/// Replays one capture; returns the number of flows compared.
fn replay(pcap: &Path) -> usize {
    let datagrams = udp_datagrams(pcap);
    let reference_path = reference_for(pcap);
    let reference = std::fs::read_to_string(&reference_path)
        .unwrap_or_else(|e| panic!("{}: {e}", reference_path.display()));
    let lines: Vec<&str> = reference.lines().collect();
    assert_eq!(
        datagrams.len(),
        lines.len(),
        "{}: UDP datagrams vs reference packets",
        pcap.display()
    );
    let mut sessions: HashMap<IpAddr, NetflowSession> = HashMap::new();
    let mut stream = ReferenceStream::default();
    let mut compared = 0;
    for (index, (datagram, line)) in datagrams.iter().zip(&lines).enumerate() {
        let exporter = datagram.source.ip();
        let expected = stream
            .next_packet(&exporter.to_string(), line)
            .unwrap_or_else(|e| panic!("{}: {e}", reference_path.display()));
        let session = sessions.entry(exporter).or_insert_with(|| NetflowSession::new(&settings()));
        let mut flows = FlowBuffer::new();
        let report = session.decode(
            Datagram {
                source: datagram.source,
                received_ns: datagram.timestamp_ns(),
                payload: &datagram.payload,
            },
            &mut flows,
        );
        let place = format!("{} packet {index}", pcap.display());
        assert!(report.errors.is_empty(), "{place}: errors {:?}", report.errors);
        assert_eq!(report.flows, flows.len(), "{place}: report.flows");
        assert_eq!(flows.len(), expected.len(), "{place}: flows vs reference data records");
        for (flow, want) in flows.iter().zip(&expected) {
            let json = flowpb::json::to_json(flow);
            if let Err(mismatch) = compare(want, &json) {
                panic!("{place}: {mismatch}\nexpected {}\ngot {json}", to_object(want));
            }
            assert_eq!(json["sampler_address"], exporter.to_string(), "{place}");
            assert_eq!(flow.time_received_ns, datagram.timestamp_ns(), "{place}");
        }
        compared += flows.len();
    }
    compared
}

#[test]
fn every_capture_matches_the_reference_decode() {
    let dir = pcaps_dir();
    assert!(dir.is_dir(), "captures directory {} is missing", dir.display());
    let pcaps = captures(&dir);
    assert!(!pcaps.is_empty(), "no pcap under {}", dir.display());
    for pcap in &pcaps {
        let compared = replay(pcap);
        assert!(compared > 0, "{}: no data records compared", pcap.display());
        eprintln!("{}: {compared} flows match the reference", pcap.display());
    }
}

#[test]
fn mutated_and_truncated_captures_never_panic() {
    let pcaps = captures(&pcaps_dir());
    assert!(!pcaps.is_empty());
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15);
    let mut decoded = 0usize;
    for pcap in &pcaps {
        let datagrams = udp_datagrams(pcap);
        for round in 0..20 {
            let mut session = NetflowSession::new(&settings());
            for datagram in &datagrams {
                let mut payload = datagram.payload.clone();
                for _ in 0..=rng.below(4) {
                    let at = rng.below(payload.len());
                    if let Some(byte) = payload.get_mut(at) {
                        *byte = rng.next() as u8;
                    }
                }
                if round % 3 == 0 {
                    payload.truncate(rng.below(payload.len() + 1));
                }
                let mut flows = FlowBuffer::new();
                let report = session.decode(
                    Datagram {
                        source: datagram.source,
                        received_ns: datagram.timestamp_ns(),
                        payload: &payload,
                    },
                    &mut flows,
                );
                assert_eq!(report.flows, flows.len());
                decoded += 1;
            }
            let _ = session.expire(u64::MAX);
            let _ = session.stats();
        }
    }
    assert!(decoded > 1000);
}

/// Flows decoded into messages kept from earlier flows (what exporter actors do when
/// they encode) equal flows decoded into fresh messages, on every capture: nothing of
/// an earlier flow is left in a reused message.
#[test]
fn reused_messages_decode_every_capture_as_fresh_ones() {
    let mut checked = 0;
    for pcap in captures(&pcaps_dir()) {
        let mut fresh_sessions: HashMap<IpAddr, NetflowSession> = HashMap::new();
        let mut reused_sessions: HashMap<IpAddr, NetflowSession> = HashMap::new();
        let mut reused = FlowBuffer::new();
        for datagram in udp_datagrams(&pcap) {
            let exporter = datagram.source.ip();
            let input = Datagram {
                source: datagram.source,
                received_ns: datagram.timestamp_ns(),
                payload: &datagram.payload,
            };
            let mut fresh = FlowBuffer::new();
            let session =
                fresh_sessions.entry(exporter).or_insert_with(|| NetflowSession::new(&settings()));
            session.decode(input, &mut fresh);
            reused.clear();
            let session =
                reused_sessions.entry(exporter).or_insert_with(|| NetflowSession::new(&settings()));
            session.decode(input, &mut reused);
            assert_eq!(*reused, *fresh, "{}", pcap.display());
            checked += fresh.len();
        }
    }
    assert!(checked > 200, "the captures hold {checked} flows");
}
