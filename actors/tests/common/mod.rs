//! Test doubles and helpers shared by the actor tests: a decoder double (one flow per
//! datagram), a recording sink that can be held shut, real UDP senders on 127.0.0.x.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use flow_actors::counters::ListenerCountersSnapshot;
use flow_actors::sink::{Delivery, FlowSink, SinkError, SinkFuture};
use flow_actors::{
    Collector, CollectorSettings, CountersSnapshot, ExporterLimits, ListenerProtocol,
    ListenerSettings, SessionFactory, SinkFactory, SinkSettings, SourceFilter,
};
use flow_decode::report::CacheStats;
use flow_decode::{
    Datagram, DatagramReport, DecodeError, ExporterSession, FlowBuffer, LifecycleEvent, Protocol,
    SessionStats,
};
use flowpb::FlowMessage;
use tokio::net::UdpSocket;
use tokio::sync::watch;

/// Payload tag that makes [`EchoSession`] block until the [`DecodeGate`] is opened.
pub const TAG_BLOCK: u8 = 0xEE;
/// Payload tag that makes [`EchoSession`] append its flow and then panic (a decoder
/// bug, half-way through a batch).
pub const TAG_PANIC: u8 = 0xEF;
/// Payload tag that makes [`EchoSession`] report data for a missing template 300
/// instead of a flow.
pub const TAG_MISSING_TEMPLATE: u8 = 3;

/// Payload: a tag byte and a big-endian sequence number.
pub fn payload(tag: u8, seq: u32) -> Vec<u8> {
    let mut p = vec![tag];
    p.extend_from_slice(&seq.to_be_bytes());
    p
}

/// Lets a test hold a decoder inside `decode` (blocking its exporter) and release it.
#[derive(Default)]
pub struct DecodeGate {
    state: Mutex<(bool, bool)>, // (entered, released)
    changed: Condvar,
}

impl DecodeGate {
    fn hold(&self) {
        let mut state = self.state.lock().unwrap();
        state.0 = true;
        self.changed.notify_all();
        while !state.1 {
            state = self.changed.wait(state).unwrap();
        }
    }

    pub fn entered(&self) -> bool {
        self.state.lock().unwrap().0
    }

    pub fn release(&self) {
        self.state.lock().unwrap().1 = true;
        self.changed.notify_all();
    }
}

/// The decoder double: one flow per datagram carrying the source address, the tag as
/// `src_port` and the sequence number; an empty payload is a decode error.
pub struct EchoSession {
    gate: Arc<DecodeGate>,
}

impl ExporterSession for EchoSession {
    fn decode(&mut self, datagram: Datagram<'_>, out: &mut FlowBuffer) -> DatagramReport {
        let Some((&tag, rest)) = datagram.payload.split_first() else {
            return DatagramReport {
                errors: vec![DecodeError::TruncatedHeader { protocol: Protocol::V9, len: 0 }],
                ..Default::default()
            };
        };
        if tag == TAG_MISSING_TEMPLATE {
            return DatagramReport {
                events: vec![LifecycleEvent::MissingTemplate {
                    protocol: Protocol::V9,
                    domain: 0,
                    template_id: 300,
                }],
                ..Default::default()
            };
        }
        if tag == TAG_BLOCK {
            // Blocks this worker thread the proper way: tokio moves its other work away.
            tokio::task::block_in_place(|| self.gate.hold());
        }
        let seq = rest.get(..4).map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
        out.push(FlowMessage {
            src_port: u32::from(tag),
            sequence_num: seq,
            sampler_address: flow_decode::address_bytes(datagram.source.ip()),
            time_received_ns: datagram.received_ns,
            ..Default::default()
        });
        assert_ne!(tag, TAG_PANIC, "decoder bug, as asked (seq {seq})");
        DatagramReport {
            flows: 1,
            events: if seq == 0 {
                vec![LifecycleEvent::TemplateLearned {
                    protocol: Protocol::V9,
                    domain: 0,
                    template_id: 256,
                    field_count: 1,
                }]
            } else {
                Vec::new()
            },
            ..Default::default()
        }
    }

    fn expire(&mut self, _now_ns: u64) -> Vec<LifecycleEvent> {
        Vec::new()
    }

    /// The guide's example figures.
    fn stats(&self) -> SessionStats {
        SessionStats {
            caches: vec![CacheStats {
                protocol: Some(Protocol::V9),
                templates: 15,
                max_templates: 2000,
                pending_flows: 8,
                max_pending_flows: 256,
                template_hits: 1250,
                template_misses: 15,
                ..Default::default()
            }],
            ..Default::default()
        }
    }
}

/// Sessions for every exporter, sharing one gate.
pub fn echo_sessions(gate: Arc<DecodeGate>) -> Arc<dyn SessionFactory> {
    Arc::new(move |_: &ListenerProtocol| {
        Box::new(EchoSession { gate: Arc::clone(&gate) }) as Box<dyn ExporterSession>
    })
}

/// What a recording sink saw.
#[derive(Clone)]
pub struct Recorder {
    flows: Arc<Mutex<Vec<(String, FlowMessage)>>>,
    publishes_started: Arc<AtomicUsize>,
    open: watch::Receiver<bool>,
    opener: Arc<watch::Sender<bool>>,
}

impl Recorder {
    /// A recorder whose sinks accept at once.
    pub fn open() -> Self {
        Self::with_gate(true)
    }

    /// A recorder whose sinks block in `publish` until [`Recorder::release`].
    pub fn shut() -> Self {
        Self::with_gate(false)
    }

    fn with_gate(open: bool) -> Self {
        let (tx, rx) = watch::channel(open);
        Self {
            flows: Arc::default(),
            publishes_started: Arc::default(),
            open: rx,
            opener: Arc::new(tx),
        }
    }

    pub fn release(&self) {
        self.opener.send_replace(true);
    }

    pub fn publishes_started(&self) -> usize {
        self.publishes_started.load(Ordering::SeqCst)
    }

    pub fn flows(&self) -> Vec<(String, FlowMessage)> {
        self.flows.lock().unwrap().clone()
    }

    pub fn len(&self) -> usize {
        self.flows.lock().unwrap().len()
    }

    /// Sequence numbers seen per (subject, source IP), in arrival order.
    pub fn by_source(&self) -> BTreeMap<(String, IpAddr), Vec<u32>> {
        let mut map: BTreeMap<(String, IpAddr), Vec<u32>> = BTreeMap::new();
        for (subject, flow) in self.flows() {
            let octets: [u8; 4] = flow.sampler_address.as_slice().try_into().unwrap();
            map.entry((subject, IpAddr::from(octets))).or_default().push(flow.sequence_num);
        }
        map
    }

    /// A factory giving each subject a sink that records into this recorder.
    pub fn factory(&self) -> impl SinkFactory + use<> {
        let recorder = self.clone();
        move |subject: &str, _partition: &str| {
            Ok(Box::new(RecordingSink { subject: subject.to_owned(), recorder: recorder.clone() })
                as Box<dyn FlowSink>)
        }
    }
}

struct RecordingSink {
    subject: String,
    recorder: Recorder,
}

impl FlowSink for RecordingSink {
    fn publish<'a>(&'a mut self, flows: &'a [FlowMessage]) -> SinkFuture<'a, Delivery> {
        Box::pin(async move {
            self.recorder.publishes_started.fetch_add(1, Ordering::SeqCst);
            let mut open = self.recorder.open.clone();
            open.wait_for(|open| *open)
                .await
                .map_err(|_| SinkError::Rejected("gate dropped".into()))?;
            let mut recorded = self.recorder.flows.lock().unwrap();
            recorded.extend(flows.iter().map(|f| (self.subject.clone(), f.clone())));
            Ok(Delivery::all(flows.len()))
        })
    }
}

/// A listener on 127.0.0.1, port chosen by the kernel.
pub fn listener(subject: &str) -> ListenerSettings {
    ListenerSettings {
        listen_addr: "127.0.0.1:0".parse().unwrap(),
        partition: None,
        subject: subject.to_owned(),
        buffer_size: 1 << 20,
        protocol: ListenerProtocol::Sflow(flow_decode::SflowSettings::default()),
        sources: SourceFilter::default(),
        max_exporter_pps: None,
        max_datagram_bytes: 65_535,
        sockets: 1,
        transport: Default::default(),
    }
}

pub fn settings(listeners: Vec<ListenerSettings>) -> CollectorSettings {
    CollectorSettings {
        listeners,
        channel_size: 10_000,
        batch_size: 100,
        exporters: ExporterLimits {
            max_exporters: 100,
            idle_timeout: Duration::from_secs(600),
            max_series: 100,
        },
        stats_interval: Duration::from_secs(30),
        sink: SinkSettings::Stdout,
        partition: "test".to_owned(),
        registry: Default::default(),
        partition_limits: Default::default(),
    }
}

pub async fn start(
    settings: CollectorSettings,
    recorder: &Recorder,
    gate: Arc<DecodeGate>,
) -> Collector {
    Collector::start_with(settings, echo_sessions(gate), &recorder.factory()).await.unwrap()
}

/// A UDP sender bound to 127.0.0.`n`.
pub async fn sender(n: u8) -> UdpSocket {
    UdpSocket::bind(SocketAddr::from((Ipv4Addr::new(127, 0, 0, n), 0))).await.unwrap()
}

pub fn ip(n: u8) -> IpAddr {
    IpAddr::from(Ipv4Addr::new(127, 0, 0, n))
}

/// Sends datagrams with sequence numbers `seqs` and tag `tag` to `to`.
pub async fn send(from: &UdpSocket, to: SocketAddr, tag: u8, seqs: impl IntoIterator<Item = u32>) {
    for seq in seqs {
        from.send_to(&payload(tag, seq), to).await.unwrap();
    }
}

/// Waits (up to a generous deadline, this is not a speed test) until `condition` holds.
pub async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

pub fn listener0(counters: &CountersSnapshot) -> &ListenerCountersSnapshot {
    &counters.listeners[0].counters
}

/// After a drain: every datagram is decoded, dropped or lost, nothing is in flight, and
/// every decoded flow of each subject is published or dropped under a reason by one of
/// its publishers (one per partition).
pub fn assert_accounted(counters: &CountersSnapshot) {
    for listener in &counters.listeners {
        let c = &listener.counters;
        assert_eq!(c.datagrams_unaccounted(), 0, "{}: {c:?}", listener.name);
        assert_eq!(
            c.datagrams_received,
            c.datagrams_decoded + c.datagrams_dropped() + c.datagrams_lost_in_restart,
            "{}: {c:?}",
            listener.name
        );
        assert_eq!(c.datagrams_in_flight, 0, "{}: {c:?}", listener.name);
    }
    let subjects: std::collections::BTreeSet<&str> =
        counters.publishers.iter().map(|p| p.subject.as_str()).collect();
    for subject in subjects {
        let decoded: u64 = counters
            .listeners
            .iter()
            .filter(|l| l.subject == subject)
            .map(|l| l.counters.flows_decoded)
            .sum();
        let publishers = counters.publishers.iter().filter(|p| p.subject == subject);
        let settled: u64 =
            publishers.map(|p| p.counters.flows_published + p.counters.flows_dropped_total()).sum();
        assert_eq!(decoded, settled, "{subject}: {:?}", counters.publishers);
    }
}
