//! Decode fidelity on the shared router captures: the sampling rate the 104 capture's
//! options data announces reaches every flow; the reordered captures (v9 packets
//! captured out of order, IPFIX messages swapped) show no restart and no stale
//! datagram; a capture with no gap in its sequence numbers shows no loss.

mod support;

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use flow_decode::{
    Datagram, DatagramReport, ExporterSession, FidelityStats, FlowBuffer, LifecycleEvent,
    NetflowSession,
};
use flowpb::FlowMessage;
use support::capture::udp_datagrams;

fn capture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/pcaps").join(name)
}

/// Everything one capture decoded to, with each exporter's fidelity totals.
struct Replay {
    flows: Vec<FlowMessage>,
    reports: Vec<DatagramReport>,
    fidelity: Vec<FidelityStats>,
}

fn replay(name: &str) -> Replay {
    let path = capture(name);
    let datagrams = udp_datagrams(&path);
    let mut sessions: HashMap<IpAddr, NetflowSession> = HashMap::new();
    let (mut flows, mut reports) = (FlowBuffer::new(), Vec::new());
    for datagram in &datagrams {
        let session = sessions
            .entry(datagram.source.ip())
            .or_insert_with(|| NetflowSession::new(&support::netflow::settings(true)));
        let report = session.decode(
            Datagram {
                source: datagram.source,
                received_ns: datagram.timestamp_ns(),
                payload: &datagram.payload,
            },
            &mut flows,
        );
        reports.push(report);
    }
    let fidelity = sessions.values().map(|s| s.stats().fidelity).collect();
    Replay { flows: flows.take(), reports, fidelity }
}

fn restarts(replay: &Replay) -> usize {
    let restarted = |e: &&LifecycleEvent| matches!(e, LifecycleEvent::ExporterRestarted { .. });
    replay.reports.iter().map(|r| r.events.iter().filter(restarted).count()).sum()
}

fn errors(replay: &Replay) -> Vec<String> {
    replay.reports.iter().flat_map(|r| r.errors.iter().map(ToString::to_string)).collect()
}

#[test]
fn sampling_option_capture_gives_every_flow_its_rate() {
    let replay = replay("104-IPFIXv10-IPv6-CISCO-sampling_option/traffic-00.pcap");
    assert!(errors(&replay).is_empty(), "{:?}", errors(&replay));
    assert_eq!(replay.flows.len(), 3);
    // Options data: selectorId 1, random 1 out of 256 (samplingSize 1, population 256).
    assert!(replay.flows.iter().all(|f| f.sampling_rate == 256), "{:?}", replay.flows);
    let unknown: u64 = replay.fidelity.iter().map(|f| f.sampling_rate_unknown).sum();
    assert_eq!(unknown, 0);
}

#[test]
fn ios_xr_sampler_without_population_is_counted_unknown() {
    // IOS-XR announces random n-out-of-N with samplingPacketInterval 1 only.
    let replay = replay("srv6/srv6.pcap");
    assert!(errors(&replay).is_empty(), "{:?}", errors(&replay));
    assert!(!replay.flows.is_empty());
    assert!(replay.flows.iter().all(|f| f.sampling_rate == 0));
    let unknown: u64 = replay.fidelity.iter().map(|f| f.sampling_rate_unknown).sum();
    assert_eq!(unknown, replay.flows.len() as u64);
}

#[test]
fn a_capture_without_sequence_gaps_shows_no_loss_and_no_restart() {
    let replay = replay("srv6/srv6.pcap");
    let lost: u64 = replay.fidelity.iter().map(|f| f.lost_records + f.lost_packets).sum();
    assert_eq!(lost, 0);
    assert_eq!(restarts(&replay), 0);
}

#[test]
fn reordered_captures_are_not_restarts_or_stale() {
    for name in [
        "101-NFv9-CISCO-cust_primitives/traffic-00.pcap",
        "111-IPFIXv10-NFv9-IPv6-IPv4-mix_sources/traffic-00.pcap",
        "111-IPFIXv10-NFv9-IPv6-IPv4-mix_sources/traffic-01.pcap",
        "500-IPFIXv10-BGP-CISCO-SRv6/traffic-00.pcap",
        "106-IPFIXv10-HUAWEI-vrf_name/traffic-00.pcap",
        "100-IPFIXv10-CISCO/traffic-00.pcap",
    ] {
        let replay = replay(name);
        assert!(errors(&replay).is_empty(), "{name}: {:?}", errors(&replay));
        assert_eq!(restarts(&replay), 0, "{name}");
        assert!(!replay.flows.is_empty(), "{name}");
    }
}
