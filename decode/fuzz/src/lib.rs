//! Shared driver of the fuzz targets: the input format ([`format`]), the settings each
//! target derives from its first byte, and the invariants checked after every call
//! into a session. A violated invariant panics (`assert!`), which libFuzzer reports as
//! a crash just like a panic inside the decoder.

pub mod format;

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use flow_decode::decode_flags::{
    SAMPLING_RATE_DEFAULTED, SAMPLING_RATE_OVERRIDDEN, TIME_END_BEFORE_START, TIME_IN_FUTURE,
};
use flow_decode::netflow::PendingMemory;
use flow_decode::{
    Datagram, DatagramReport, ExporterSession, FidelityStats, FlowBuffer, LifecycleEvent,
    NetflowSession, NetflowSettings, PendingFlowSettings, SamplingOverride, SamplingPolicy,
    SflowSession, SflowSettings,
};
use flowpb::FlowMessage;

use format::Frame;

/// Receive time of the first datagram: 2023-11-14, a plausible collector clock.
pub const START_NS: u64 = 1_700_000_000_000_000_000;
const SECOND_NS: u64 = 1_000_000_000;
/// Time to live of pending flows in the fuzzed sessions: short, so a few clock steps
/// (at most 31 s per frame) reach it.
pub const PENDING_TTL: Duration = Duration::from_secs(5);
/// Bytes the pending data of all sessions may take together (`pending_flows_max_bytes`):
/// each run has its own budget.
pub const PENDING_MEMORY: usize = 16 * 1024;
/// Rate of the sampling override, when the settings byte asks for one.
const OVERRIDE_RATE: u64 = 1000;
/// Rate of the default sampling policy, when the settings byte asks for one.
const DEFAULT_RATE: u64 = 100;
/// Every `decode_flags` bit the decoders may set.
const KNOWN_FLAGS: u32 =
    TIME_END_BEFORE_START | TIME_IN_FUTURE | SAMPLING_RATE_DEFAULTED | SAMPLING_RATE_OVERRIDDEN;

/// The exporter address and sampling policy bits shared by both settings bytes.
fn exporter(ipv6: bool) -> IpAddr {
    if ipv6 {
        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 7))
    } else {
        IpAddr::V4(Ipv4Addr::new(192, 0, 2, 7))
    }
}

fn sampling(default: bool, override_exporter: Option<IpAddr>) -> SamplingPolicy {
    let overrides = override_exporter
        .map(|ip| {
            let prefix = if ip.is_ipv4() { 32 } else { 128 };
            vec![SamplingOverride::new(ip, prefix, OVERRIDE_RATE).expect("valid override")]
        })
        .unwrap_or_default();
    SamplingPolicy { default_rate: default.then_some(DEFAULT_RATE), overrides }
}

/// What a NetFlow target's settings byte selects.
///
/// - bits 0-1: `max_templates` 16, 1, 2 or 4 (small: eviction paths are reached)
/// - bit 2: pending-flows cache disabled
/// - bit 3: `max_entry_size_bytes` 64 and `max_bytes` 400 instead of 65,535 and
///   256 KiB (the exporter's byte bound binds; else the shared [`PENDING_MEMORY`] does)
/// - bit 4: `max_pending_flows` 1 instead of 4 (`max_entries_per_template` is 2)
/// - bit 5: a default sampling rate
/// - bit 6: a sampling override for the exporter
/// - bit 7: the exporter is IPv6
#[derive(Debug, Clone)]
pub struct NetflowCase {
    pub settings: NetflowSettings,
    pub exporter: IpAddr,
}

impl NetflowCase {
    pub fn from_byte(byte: u8) -> Self {
        let exporter = exporter(byte & 0x80 != 0);
        let small = byte & 0x08 != 0;
        let pending = (byte & 0x04 == 0).then(|| PendingFlowSettings {
            max_pending_flows: if byte & 0x10 != 0 { 1 } else { 4 },
            max_entries_per_template: 2,
            max_entry_size_bytes: if small { 64 } else { 65_535 },
            ttl: PENDING_TTL,
            max_bytes: if small { 400 } else { 256 * 1024 },
            memory: Arc::new(PendingMemory::new(PENDING_MEMORY)),
        });
        let settings = NetflowSettings {
            max_templates: [16, 1, 2, 4][usize::from(byte & 0x03)],
            max_template_fields: 100,
            pending,
            sampling: sampling(byte & 0x20 != 0, (byte & 0x40 != 0).then_some(exporter)),
        };
        NetflowCase { settings, exporter }
    }
}

/// What the sFlow target's settings byte selects.
///
/// - bits 0-2: `max_samples_per_datagram`: 0 = no cap, else 1..=7
/// - bit 5: a default sampling rate
/// - bit 6: a sampling override for the exporter
/// - bit 7: the exporter (UDP source) is IPv6
#[derive(Debug, Clone)]
pub struct SflowCase {
    pub settings: SflowSettings,
    pub exporter: IpAddr,
}

impl SflowCase {
    pub fn from_byte(byte: u8) -> Self {
        let exporter = exporter(byte & 0x80 != 0);
        let cap = u32::from(byte & 0x07);
        let settings = SflowSettings {
            max_samples_per_datagram: (cap > 0).then_some(cap),
            sampling: sampling(byte & 0x20 != 0, (byte & 0x40 != 0).then_some(exporter)),
        };
        SflowCase { settings, exporter }
    }
}

/// Checks of one flow that hold whatever the protocol.
fn check_flow(flow: &FlowMessage, now_ns: u64) {
    assert!(matches!(flow.sampler_address.len(), 4 | 16), "sampler_address {flow:?}");
    for (name, addr) in [
        ("src_addr", &flow.src_addr),
        ("dst_addr", &flow.dst_addr),
        ("next_hop", &flow.next_hop),
        ("bgp_next_hop", &flow.bgp_next_hop),
        ("post_nat_src_addr", &flow.post_nat_src_addr),
        ("post_nat_dst_addr", &flow.post_nat_dst_addr),
    ] {
        assert!(matches!(addr.len(), 0 | 4 | 16), "{name} of {} bytes", addr.len());
    }
    assert_eq!(flow.decode_flags & !KNOWN_FLAGS, 0, "unknown decode_flags bits");
    assert!(flow.time_received_ns <= now_ns, "flow received after the datagram that emitted it");
    assert!(flow.time_received_ns >= START_NS, "flow received before the session started");
}

/// Checks of a report against the flows it appended, for both protocols: counts agree
/// with the flows' own rates and flags.
fn check_report(report: &DatagramReport, flows: &[FlowMessage], now_ns: u64) {
    assert_eq!(report.flows, flows.len(), "report.flows vs flows appended");
    for flow in flows {
        check_flow(flow, now_ns);
    }
    let count = |f: &dyn Fn(&FlowMessage) -> bool| flows.iter().filter(|m| f(m)).count();
    assert_eq!(report.sampling_rate_unknown, count(&|f| f.sampling_rate == 0), "rate unknown");
    assert_eq!(
        report.sampling_rate_defaulted,
        count(&|f| f.decode_flags & SAMPLING_RATE_DEFAULTED != 0),
        "rate defaulted"
    );
    assert_eq!(
        report.time_anomalies,
        count(&|f| f.decode_flags & (TIME_END_BEFORE_START | TIME_IN_FUTURE) != 0),
        "time anomalies"
    );
    assert_eq!(
        report.time_unknown,
        count(&|f| f.time_flow_start_ns == 0 || f.time_flow_end_ns == 0),
        "time unknown"
    );
}

/// Checks the sampling policy was applied to every flow, as it applies to the flow's
/// sampler (NetFlow: the UDP source; sFlow: the agent address).
fn check_policy(flows: &[FlowMessage], policy: &SamplingPolicy) {
    for flow in flows {
        let sampler = match flow.sampler_address.len() {
            4 => IpAddr::from(<[u8; 4]>::try_from(&flow.sampler_address[..]).expect("4 bytes")),
            _ => IpAddr::from(<[u8; 16]>::try_from(&flow.sampler_address[..]).expect("16 bytes")),
        };
        if policy.override_for(sampler).is_some() {
            assert_eq!(flow.sampling_rate, OVERRIDE_RATE, "override not applied");
            assert_ne!(flow.decode_flags & SAMPLING_RATE_OVERRIDDEN, 0, "override not flagged");
        } else {
            let overridden = flow.decode_flags & SAMPLING_RATE_OVERRIDDEN;
            assert_eq!(overridden, 0, "override flag without an override");
            if policy.default_rate.is_some() {
                assert_ne!(flow.sampling_rate, 0, "rate 0 left with a default configured");
            }
        }
    }
}

/// The template scope a NetFlow v9/IPFIX datagram names: (version, source port, domain).
fn scope_of(payload: &[u8], port: u16) -> Option<(u16, u16, u32)> {
    let word =
        |at: usize| payload.get(at..at + 4).map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    match payload.get(..2).map(|v| u16::from_be_bytes([v[0], v[1]]))? {
        9 => Some((9, port, word(16)?)),
        10 => Some((10, port, word(12)?)),
        _ => None,
    }
}

/// Feeds frames, in order, to one NetFlow session and checks every report; then
/// expires at `final_advance_secs` past the last datagram and checks the stats.
pub fn run_netflow(case: &NetflowCase, frames: &[Frame<'_>], final_advance_secs: u64) {
    let mut session = NetflowSession::new(&case.settings);
    let mut now = START_NS;
    let mut out = FlowBuffer::new();
    let (mut bytes_in, mut flows_out) = (0usize, 0usize);
    let mut fidelity = FidelityStats::default();
    let mut scopes = HashSet::new();
    let mut events = EventCounts::default();
    for frame in frames {
        now += frame.advance_secs * SECOND_NS;
        if frame.expire_first {
            let expired = session.expire(now);
            check_expired(&expired);
            events.add(&expired);
        }
        out.clear();
        let source = SocketAddr::new(case.exporter, frame.port);
        let datagram = Datagram { source, received_ns: now, payload: frame.payload };
        let report = session.decode(datagram, &mut out);
        check_report(&report, &out, now);
        check_policy(&out, &case.settings.sampling);
        bytes_in += frame.payload.len();
        flows_out += out.len();
        // Each flow is a record of at least one byte of some datagram fed (pending data
        // is replayed once); without pending data, of this datagram.
        assert!(flows_out <= bytes_in, "{flows_out} flows from {bytes_in} bytes");
        if case.settings.pending.is_none() {
            assert!(out.len() <= frame.payload.len(), "{} flows from one datagram", out.len());
            assert_eq!(report.records_pending, 0, "data held with the pending cache disabled");
        }
        assert!(report.records_pending <= frame.payload.len() / 4, "more pending sets than sets");
        fidelity.add(&report);
        events.add(&report.events);
        scopes.extend(scope_of(frame.payload, frame.port));
        check_netflow_stats(&session, case, &fidelity, &events, scopes.len());
    }
    let end = now.saturating_add(final_advance_secs.saturating_mul(SECOND_NS));
    let expired = session.expire(end);
    check_expired(&expired);
    events.add(&expired);
    let stats = check_netflow_stats(&session, case, &fidelity, &events, scopes.len());
    if end - now > PENDING_TTL.as_nanos() as u64 {
        for cache in &stats.caches {
            assert_eq!(cache.pending_flows, 0, "pending flows left past their ttl: {cache:?}");
        }
    }
    drop(session);
    if let Some(pending) = &case.settings.pending {
        assert_eq!(pending.memory.used(), 0, "pending memory not given back by the session");
    }
}

fn check_expired(events: &[LifecycleEvent]) {
    for event in events {
        assert!(
            matches!(event, LifecycleEvent::PendingDropped { reason: "ttl", .. }),
            "expire produced {event:?}"
        );
    }
}

/// Lifecycle events a session reported so far, by the kinds its stats count.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct EventCounts {
    evictions: u64,
    collisions: u64,
    pending_replayed: u64,
    pending_dropped: u64,
}

impl EventCounts {
    fn add(&mut self, events: &[LifecycleEvent]) {
        for event in events {
            match event {
                LifecycleEvent::TemplateEvicted { .. } => self.evictions += 1,
                LifecycleEvent::TemplateCollision { .. } => self.collisions += 1,
                LifecycleEvent::PendingReplayed { .. } => self.pending_replayed += 1,
                LifecycleEvent::PendingDropped { .. } => self.pending_dropped += 1,
                _ => {}
            }
        }
    }
}

fn check_netflow_stats(
    session: &NetflowSession,
    case: &NetflowCase,
    fidelity: &FidelityStats,
    events: &EventCounts,
    scopes_seen: usize,
) -> flow_decode::SessionStats {
    let stats = session.stats();
    assert_eq!(&stats.fidelity, fidelity, "fidelity totals vs the sum of the reports");
    let counted = stats.caches.iter().fold(EventCounts::default(), |sum, c| EventCounts {
        evictions: sum.evictions + c.evictions,
        collisions: sum.collisions + c.collisions,
        pending_replayed: sum.pending_replayed + c.pending_replayed,
        pending_dropped: sum.pending_dropped + c.pending_dropped,
    });
    assert_eq!(&counted, events, "stats counters vs the lifecycle events reported");
    if let Some(pending) = &case.settings.pending {
        let used = pending.memory.used();
        assert!(used <= pending.memory.limit(), "pending memory {used} past its bound");
        assert!(used <= pending.max_bytes, "pending memory {used} past the exporter's bound");
        let queues: usize = stats.caches.iter().map(|c| c.pending_flows).sum();
        assert!(queues > 0 || used == 0, "{used} pending bytes held with no pending queue");
    }
    let scopes = scopes_seen.min(flow_decode::netflow::MAX_SCOPES);
    for cache in &stats.caches {
        // netflow_parser caps data and options templates separately.
        let bound = scopes * 2 * case.settings.max_templates;
        assert!(cache.templates <= bound, "{} templates in {scopes} scopes", cache.templates);
        if let Some(pending) = &case.settings.pending {
            assert!(cache.pending_flows <= pending.max_pending_flows, "pending {cache:?}");
        } else {
            assert_eq!(cache.pending_flows, 0, "pending flows with the cache disabled");
        }
    }
    stats
}

/// Feeds frames, in order, to one sFlow session and checks every report.
pub fn run_sflow(case: &SflowCase, frames: &[Frame<'_>], final_advance_secs: u64) {
    let mut session = SflowSession::new(&case.settings);
    let mut now = START_NS;
    let mut out = FlowBuffer::new();
    for frame in frames {
        now += frame.advance_secs * SECOND_NS;
        if frame.expire_first {
            assert!(session.expire(now).is_empty(), "sFlow keeps nothing that expires");
        }
        out.clear();
        let source = SocketAddr::new(case.exporter, frame.port);
        let datagram = Datagram { source, received_ns: now, payload: frame.payload };
        let report = session.decode(datagram, &mut out);
        check_report(&report, &out, now);
        for flow in out.iter() {
            assert_eq!(flow.time_received_ns, now, "sFlow flows are received with their datagram");
        }
        let samples = report.flows + report.non_flow_records;
        // Every sample takes at least its format and length words.
        assert!(
            samples * 8 <= frame.payload.len(),
            "{samples} samples in {} bytes",
            frame.payload.len()
        );
        if let Some(max) = case.settings.max_samples_per_datagram {
            assert!(samples <= max as usize, "{samples} samples past the cap {max}");
        }
        assert_eq!(report.records_pending, 0, "sFlow holds nothing");
        assert_eq!(report.lost_records, 0, "sFlow counts lost datagrams, not records");
        check_policy(&out, &case.settings.sampling);
    }
    let end = now.saturating_add(final_advance_secs.saturating_mul(SECOND_NS));
    assert!(session.expire(end).is_empty(), "sFlow keeps nothing that expires");
    let _ = session.stats();
}
