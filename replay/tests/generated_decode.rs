//! The load generator's datagrams, decoded by the collector's own decoders: every
//! record comes out as a flow, sequence numbers follow each protocol's rule (no loss
//! while nothing is dropped, exactly the dropped datagram's worth when one is),
//! templates are learned from the first datagram, flow times sit just before the
//! export time, and the announced sampling rate reaches every flow.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroU32;

use flow_decode::{
    Datagram, DatagramReport, ExporterSession, FlowBuffer, LifecycleEvent, NetflowSession,
    NetflowSettings, SamplingPolicy, SflowSession, SflowSettings,
};
use flow_replay::generate::{Exporter, Protocol, Settings};
use flowpb::FlowMessage;

const START_MS: u64 = 1_700_000_000_000;
const AGENT: Ipv4Addr = Ipv4Addr::new(127, 1, 0, 1);

fn session(protocol: Protocol) -> Box<dyn ExporterSession> {
    match protocol {
        Protocol::Sflow => Box::new(SflowSession::new(&SflowSettings::default())),
        _ => Box::new(NetflowSession::new(&NetflowSettings {
            max_templates: 100,
            max_template_fields: 10_000,
            pending: None,
            sampling: SamplingPolicy::default(),
        })),
    }
}

/// What decoding a run of datagrams gave, summed.
#[derive(Debug, Default)]
struct Totals {
    flows: FlowBuffer,
    sequence_gap: u64,
    lost_records: u64,
    errors: usize,
    restarts: usize,
    templates_learned: usize,
    time_anomalies: usize,
    time_unknown: usize,
}

impl Totals {
    fn add(&mut self, report: &DatagramReport) {
        self.sequence_gap += report.sequence_gap;
        self.lost_records += report.lost_records;
        self.errors += report.errors.len();
        self.time_anomalies += report.time_anomalies;
        self.time_unknown += report.time_unknown;
        for event in &report.events {
            match event {
                LifecycleEvent::ExporterRestarted { .. } => self.restarts += 1,
                LifecycleEvent::TemplateLearned { .. } => self.templates_learned += 1,
                _ => {}
            }
        }
        assert!(report.errors.is_empty(), "decode errors: {:?}", report.errors);
    }
}

/// Generates `datagrams` datagrams 1 ms apart and decodes all but those in `skip`.
fn run(settings: &Settings, datagrams: u64, skip: &[u64]) -> (Totals, u64) {
    let mut exporter =
        Exporter::new(settings, 0, AGENT, START_MS).unwrap_or_else(|e| panic!("{e}"));
    let mut session = session(settings.protocol);
    let source = SocketAddr::new(IpAddr::V4(AGENT), 40_000);
    let mut totals = Totals::default();
    let mut buf = Vec::new();
    let mut records_sent = 0;
    for i in 0..datagrams {
        let now_ms = START_MS + i;
        let generated = exporter.next_datagram(now_ms, &mut buf);
        assert_eq!(generated.records, u32::from(settings.records));
        assert!(buf.len() <= 65_507);
        if skip.contains(&i) {
            continue;
        }
        records_sent += u64::from(generated.records);
        let datagram = Datagram { source, received_ns: now_ms * 1_000_000, payload: &buf };
        let before = totals.flows.len();
        let report = session.decode(datagram, &mut totals.flows);
        assert_eq!(report.flows, totals.flows.len() - before);
        totals.add(&report);
    }
    (totals, records_sent)
}

fn settings(protocol: Protocol) -> Settings {
    let mut settings = Settings::new(protocol);
    settings.template_every = NonZeroU32::new(50);
    settings
}

/// Every flow's fields are in the generator's ranges and its times just before export.
fn check_flows(protocol: Protocol, flows: &[FlowMessage]) {
    for f in flows {
        assert_eq!(f.sampler_address, AGENT.octets().to_vec());
        assert!(matches!(f.proto, 1 | 6 | 17), "proto {}", f.proto);
        assert_eq!(f.src_addr.len(), 4);
        assert!(f.src_addr[0] == 10 || f.dst_addr[0] == 10, "one end is a 10/8 client");
        assert!(f.packets >= 1 && f.bytes >= 40, "packets {} bytes {}", f.packets, f.bytes);
        assert!(f.in_if >= 1 && f.in_if <= 48);
        if protocol != Protocol::Sflow {
            assert!(f.time_flow_start_ns <= f.time_flow_end_ns);
            // 2 s of idle timeout, 1 s of v5/v9 export-time resolution.
            assert!(f.time_flow_end_ns <= f.time_received_ns + 1_000_000_000);
            assert!(f.time_flow_end_ns + 3_000_000_000 >= f.time_received_ns);
            assert!(f.time_flow_end_ns - f.time_flow_start_ns <= 120_000_000_000);
        }
    }
}

fn consecutive_datagrams_decode_whole(protocol: Protocol) {
    let settings = settings(protocol);
    let (totals, sent) = run(&settings, 150, &[]);
    assert_eq!(totals.flows.len() as u64, sent, "{protocol}: every record is a flow");
    assert_eq!(sent, 150 * u64::from(settings.records));
    assert_eq!((totals.sequence_gap, totals.lost_records), (0, 0), "{protocol}: no loss");
    assert_eq!(totals.restarts, 0, "{protocol}: no restart");
    assert_eq!((totals.time_anomalies, totals.time_unknown), (0, 0), "{protocol}: times");
    if protocol.has_templates() {
        // Learned from datagram 0, refreshed in 50 and 100 (a refresh of a known,
        // unchanged template is not a new lesson, so at least once).
        assert!(totals.templates_learned >= 1, "{protocol}: template learned");
    }
    check_flows(protocol, &totals.flows);
}

/// One datagram in the middle is dropped; the decoder declares exactly that loss in
/// the protocol's unit once the gap leaves its reordering window.
fn a_dropped_datagram_is_the_loss_declared(protocol: Protocol) {
    let settings = settings(protocol);
    let (totals, sent) = run(&settings, 150, &[20]);
    assert_eq!(totals.flows.len() as u64, sent);
    let records = u64::from(settings.records);
    let expected = match protocol {
        Protocol::V9 | Protocol::Sflow => (1, 0),
        Protocol::V5 | Protocol::Ipfix => (0, records),
    };
    assert_eq!((totals.sequence_gap, totals.lost_records), expected, "{protocol}");
    assert_eq!(totals.restarts, 0);
}

fn the_sampling_rate_reaches_every_flow(protocol: Protocol) {
    let mut settings = settings(protocol);
    settings.sampling_rate = 512;
    let (totals, sent) = run(&settings, 60, &[]);
    assert_eq!(totals.flows.len() as u64, sent);
    assert!(totals.flows.iter().all(|f| f.sampling_rate == 512), "{protocol}");
    assert_eq!((totals.sequence_gap, totals.lost_records), (0, 0), "{protocol}");
}

#[test]
fn netflow_v5() {
    consecutive_datagrams_decode_whole(Protocol::V5);
    a_dropped_datagram_is_the_loss_declared(Protocol::V5);
    the_sampling_rate_reaches_every_flow(Protocol::V5);
}

#[test]
fn netflow_v9() {
    consecutive_datagrams_decode_whole(Protocol::V9);
    a_dropped_datagram_is_the_loss_declared(Protocol::V9);
    the_sampling_rate_reaches_every_flow(Protocol::V9);
}

#[test]
fn ipfix() {
    consecutive_datagrams_decode_whole(Protocol::Ipfix);
    a_dropped_datagram_is_the_loss_declared(Protocol::Ipfix);
    the_sampling_rate_reaches_every_flow(Protocol::Ipfix);
}

#[test]
fn sflow() {
    consecutive_datagrams_decode_whole(Protocol::Sflow);
    a_dropped_datagram_is_the_loss_declared(Protocol::Sflow);
    the_sampling_rate_reaches_every_flow(Protocol::Sflow);
}

/// Templates come first, then every `template_every` datagrams; v5 and sFlow have none.
#[test]
fn templates_are_sent_first_and_refreshed() {
    for protocol in Protocol::ALL {
        let mut settings = Settings::new(protocol);
        settings.template_every = NonZeroU32::new(10);
        settings.template_interval = None;
        let mut exporter =
            Exporter::new(&settings, 3, AGENT, START_MS).unwrap_or_else(|e| panic!("{e}"));
        let mut buf = Vec::new();
        let with: Vec<u64> =
            (0..35).filter(|i| exporter.next_datagram(START_MS + i, &mut buf).templates).collect();
        let expected: Vec<u64> =
            if protocol.has_templates() { vec![0, 10, 20, 30] } else { vec![] };
        assert_eq!(with, expected, "{protocol}");
    }
    // And by time: a datagram 31 s after the last templates carries them again.
    let mut exporter = Exporter::new(&Settings::new(Protocol::Ipfix), 0, AGENT, START_MS)
        .unwrap_or_else(|e| panic!("{e}"));
    let mut buf = Vec::new();
    assert!(exporter.next_datagram(START_MS, &mut buf).templates);
    assert!(!exporter.next_datagram(START_MS + 1_000, &mut buf).templates);
    assert!(exporter.next_datagram(START_MS + 31_000, &mut buf).templates);
}

#[test]
fn record_counts_beyond_the_format_are_refused() {
    for protocol in Protocol::ALL {
        let mut settings = Settings::new(protocol);
        settings.records = protocol.max_records();
        assert!(settings.validate().is_ok(), "{protocol}: the maximum fits");
        let (totals, sent) = run(&settings, 2, &[]);
        assert_eq!(totals.flows.len() as u64, sent, "{protocol}: a full datagram decodes");
        settings.records = protocol.max_records() + 1;
        assert!(settings.validate().is_err(), "{protocol}");
        settings.records = 0;
        assert!(settings.validate().is_err(), "{protocol}");
    }
}

/// Field values vary within and across datagrams, and two exporters sharing settings
/// do not send the same flows at the same time.
#[test]
fn values_vary_and_exporters_differ() {
    let settings = Settings::new(Protocol::V9);
    let (totals, _) = run(&settings, 100, &[]);
    let sources: std::collections::HashSet<&[u8]> =
        totals.flows.iter().map(|f| f.src_addr.as_slice()).collect();
    assert!(sources.len() > 1_000, "{} distinct sources in 2800 flows", sources.len());
    let ports: std::collections::HashSet<u32> = totals.flows.iter().map(|f| f.dst_port).collect();
    assert!(ports.len() > 100);
    let mut a = Exporter::new(&settings, 0, AGENT, START_MS).unwrap_or_else(|e| panic!("{e}"));
    let mut b = Exporter::new(&settings, 1, AGENT, START_MS).unwrap_or_else(|e| panic!("{e}"));
    let (mut x, mut y) = (Vec::new(), Vec::new());
    a.next_datagram(START_MS, &mut x);
    b.next_datagram(START_MS, &mut y);
    assert_ne!(x[20..], y[20..], "different records (and uptimes)");
}
