//! Simulated exporters whose every flow record can be told apart, and the ground truth
//! of what they sent.
//!
//! Each record carries a unique 24-bit id in its source address (`10.x.y.z`); every other
//! field (destination, ports, protocol, bytes, packets) is derived from the id and the
//! template layout it was sent with, so a record read back from JetStream is checked
//! field by field: a record decoded with the wrong layout cannot pass. NetFlow v9 and
//! IPFIX datagrams are built byte for byte here (not with `flow-replay`'s generator,
//! whose values are random) so that the scenarios control sequence numbers, uptimes,
//! template ids and layouts exactly: a reboot resets sequence and uptime and reuses the
//! template id with another layout.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flowpb::{FlowMessage, FlowType};

/// The template id every simulated exporter uses (and reuses after a reboot).
pub const TEMPLATE_ID: u16 = 256;

/// The export protocol of a simulated exporter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    V9,
    Ipfix,
}

/// A template layout: which fields, in which order and sizes. A record of one layout
/// decoded with the other comes out with wrong values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layout {
    /// src, dst, ports, protocol, 4-byte counters, times: 29 bytes (v9).
    A,
    /// 8-byte counters first, then the rest reordered: 37 bytes (v9).
    B,
}

/// Field type (NetFlow v9 type = IPFIX information element) and length.
type Field = (u16, u16);

const IN_BYTES: u16 = 1;
const IN_PKTS: u16 = 2;
const PROTOCOL: u16 = 4;
const L4_SRC_PORT: u16 = 7;
const IPV4_SRC_ADDR: u16 = 8;
const L4_DST_PORT: u16 = 11;
const IPV4_DST_ADDR: u16 = 12;
const LAST_SWITCHED: u16 = 21;
const FIRST_SWITCHED: u16 = 22;
const FLOW_START_MS: u16 = 152;
const FLOW_END_MS: u16 = 153;

impl Layout {
    fn fields(self, protocol: Protocol) -> Vec<Field> {
        let times: [Field; 2] = match protocol {
            Protocol::V9 => [(FIRST_SWITCHED, 4), (LAST_SWITCHED, 4)],
            Protocol::Ipfix => [(FLOW_START_MS, 8), (FLOW_END_MS, 8)],
        };
        let mut fields = match self {
            Layout::A => vec![
                (IPV4_SRC_ADDR, 4),
                (IPV4_DST_ADDR, 4),
                (L4_SRC_PORT, 2),
                (L4_DST_PORT, 2),
                (PROTOCOL, 1),
                (IN_BYTES, 4),
                (IN_PKTS, 4),
            ],
            Layout::B => vec![
                (IN_BYTES, 8),
                (IN_PKTS, 8),
                (L4_DST_PORT, 2),
                (L4_SRC_PORT, 2),
                (IPV4_SRC_ADDR, 4),
                (PROTOCOL, 1),
                (IPV4_DST_ADDR, 4),
            ],
        };
        fields.extend(times);
        fields
    }
}

/// The values a record with this id and layout carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    pub src_addr: [u8; 4],
    pub dst_addr: [u8; 4],
    pub src_port: u16,
    pub dst_port: u16,
    pub proto: u8,
    pub bytes: u64,
    pub packets: u64,
}

impl Expected {
    pub fn of(id: u32, layout: Layout) -> Self {
        let (dst_addr, dst_port, proto) = match layout {
            Layout::A => ([192, 0, 2, 1], 443, 6),
            Layout::B => ([198, 51, 100, 1], 53, 17),
        };
        Expected {
            src_addr: (0x0A00_0000 | (id & 0x00FF_FFFF)).to_be_bytes(),
            dst_addr,
            src_port: (1024 + id % 60_000) as u16,
            dst_port,
            proto,
            bytes: 64 + u64::from(id % 10_000) * 3,
            packets: 1 + u64::from(id % 97),
        }
    }
}

/// The record id a decoded flow carries, if its source address is one of ours.
pub fn flow_id(flow: &FlowMessage) -> Option<u32> {
    let octets: [u8; 4] = flow.src_addr.as_slice().try_into().ok()?;
    (octets[0] == 10).then(|| u32::from_be_bytes(octets) & 0x00FF_FFFF)
}

/// What is wrong with `flow` as the record `expected` sent from `exporter`, if anything.
pub fn mismatch(
    flow: &FlowMessage,
    exporter: IpAddr,
    protocol: Protocol,
    expected: &Expected,
) -> Option<String> {
    let sampler: Option<[u8; 4]> = flow.sampler_address.as_slice().try_into().ok();
    let flow_type = match protocol {
        Protocol::V9 => FlowType::NetflowV9,
        Protocol::Ipfix => FlowType::Ipfix,
    };
    let IpAddr::V4(exporter) = exporter else { return Some("IPv6 exporter".into()) };
    let checks = [
        ("sampler_address", sampler == Some(exporter.octets())),
        ("type", flow.r#type == flow_type as i32),
        ("dst_addr", flow.dst_addr == expected.dst_addr),
        ("src_port", flow.src_port == u32::from(expected.src_port)),
        ("dst_port", flow.dst_port == u32::from(expected.dst_port)),
        ("proto", flow.proto == u32::from(expected.proto)),
        ("bytes", flow.bytes == expected.bytes),
        ("packets", flow.packets == expected.packets),
    ];
    let wrong: Vec<&str> = checks.iter().filter(|(_, ok)| !ok).map(|(name, _)| *name).collect();
    (!wrong.is_empty()).then(|| format!("{wrong:?} differ in {flow:?} (expected {expected:?})"))
}

/// One built datagram and the records it carries.
#[derive(Debug, Clone)]
pub struct Datagram {
    pub payload: Vec<u8>,
    /// Ids of the data records, in order.
    pub records: Vec<u32>,
    pub layout: Layout,
    pub has_template: bool,
}

/// Unix time in milliseconds.
pub fn unix_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// One simulated device: its boot time, sequence numbers (v9: export packets; IPFIX:
/// data records, RFC 7011), observation domain and current template layout.
#[derive(Debug, Clone)]
pub struct Exporter {
    pub protocol: Protocol,
    pub layout: Layout,
    pub domain: u32,
    boot_ms: u64,
    sequence: u32,
}

impl Exporter {
    /// An exporter up for an hour, speaking `protocol` with `layout`.
    pub fn new(protocol: Protocol, layout: Layout) -> Self {
        Exporter { protocol, layout, domain: 7, boot_ms: unix_ms() - 3_600_000, sequence: 0 }
    }

    /// The device reboots: uptime and sequence start again from zero, and the template
    /// id comes back with `layout`.
    pub fn reboot(&mut self, layout: Layout) {
        self.boot_ms = unix_ms();
        self.sequence = 0;
        self.layout = layout;
    }

    /// A datagram carrying only the template.
    pub fn template_only(&mut self) -> Datagram {
        self.datagram(0..0, true)
    }

    /// A datagram with the records `ids` (one data set), the template in front when
    /// `with_template`.
    pub fn datagram(&mut self, ids: Range<u32>, with_template: bool) -> Datagram {
        let now = unix_ms();
        let uptime = now.saturating_sub(self.boot_ms) as u32;
        let fields = self.layout.fields(self.protocol);
        let records: Vec<u32> = ids.collect();
        let mut out = Vec::with_capacity(64 + records.len() * 64);
        let (template_set_id, header_len) = match self.protocol {
            Protocol::V9 => (0u16, 20),
            Protocol::Ipfix => (2u16, 16),
        };
        out.resize(header_len, 0);
        if with_template {
            let mark = out.len();
            put16(&mut out, template_set_id);
            put16(&mut out, 0);
            put16(&mut out, TEMPLATE_ID);
            put16(&mut out, fields.len() as u16);
            for (kind, len) in &fields {
                put16(&mut out, *kind);
                put16(&mut out, *len);
            }
            end_set(&mut out, mark);
        }
        if !records.is_empty() {
            let mark = out.len();
            put16(&mut out, TEMPLATE_ID);
            put16(&mut out, 0);
            for id in &records {
                self.put_record(&mut out, *id, &fields, now, uptime);
            }
            end_set(&mut out, mark);
        }
        let count = records.len() as u32;
        match self.protocol {
            Protocol::V9 => {
                let header = [
                    9u16.to_be_bytes().as_slice(),
                    &((count + u32::from(with_template)) as u16).to_be_bytes(),
                    &uptime.to_be_bytes(),
                    &((now / 1000) as u32).to_be_bytes(),
                    &self.sequence.to_be_bytes(),
                    &self.domain.to_be_bytes(),
                ]
                .concat();
                out[..20].copy_from_slice(&header);
                self.sequence = self.sequence.wrapping_add(1);
            }
            Protocol::Ipfix => {
                let header = [
                    10u16.to_be_bytes().as_slice(),
                    &(out.len() as u16).to_be_bytes(),
                    &((now / 1000) as u32).to_be_bytes(),
                    &self.sequence.to_be_bytes(),
                    &self.domain.to_be_bytes(),
                ]
                .concat();
                out[..16].copy_from_slice(&header);
                self.sequence = self.sequence.wrapping_add(count);
            }
        }
        Datagram { payload: out, records, layout: self.layout, has_template: with_template }
    }

    fn put_record(&self, out: &mut Vec<u8>, id: u32, fields: &[Field], now: u64, uptime: u32) {
        let e = Expected::of(id, self.layout);
        for (kind, len) in fields {
            match (*kind, *len) {
                (IPV4_SRC_ADDR, _) => out.extend_from_slice(&e.src_addr),
                (IPV4_DST_ADDR, _) => out.extend_from_slice(&e.dst_addr),
                (L4_SRC_PORT, _) => put16(out, e.src_port),
                (L4_DST_PORT, _) => put16(out, e.dst_port),
                (PROTOCOL, _) => out.push(e.proto),
                (IN_BYTES, 4) => out.extend_from_slice(&(e.bytes as u32).to_be_bytes()),
                (IN_BYTES, _) => out.extend_from_slice(&e.bytes.to_be_bytes()),
                (IN_PKTS, 4) => out.extend_from_slice(&(e.packets as u32).to_be_bytes()),
                (IN_PKTS, _) => out.extend_from_slice(&e.packets.to_be_bytes()),
                (FIRST_SWITCHED, _) => {
                    out.extend_from_slice(&uptime.saturating_sub(900).to_be_bytes())
                }
                (LAST_SWITCHED, _) => {
                    out.extend_from_slice(&uptime.saturating_sub(100).to_be_bytes())
                }
                (FLOW_START_MS, _) => out.extend_from_slice(&(now - 900).to_be_bytes()),
                (FLOW_END_MS, _) => out.extend_from_slice(&(now - 100).to_be_bytes()),
                (other, _) => unreachable!("no value for field {other}"),
            }
        }
    }
}

fn put16(out: &mut Vec<u8>, v: u16) {
    out.extend_from_slice(&v.to_be_bytes());
}

/// Pads the set started at `mark` to 4 bytes and writes its length.
fn end_set(out: &mut Vec<u8>, mark: usize) {
    while !(out.len() - mark).is_multiple_of(4) {
        out.push(0);
    }
    let len = (out.len() - mark) as u16;
    out[mark + 2..mark + 4].copy_from_slice(&len.to_be_bytes());
}

/// What was sent: for each record id, its exporter, protocol, layout and how many
/// copies the collector should end up with (2 for a datagram the exporter duplicated).
#[derive(Debug, Default, Clone)]
pub struct Ledger {
    pub records: HashMap<u32, Sent>,
}

/// One sent record.
#[derive(Debug, Clone, Copy)]
pub struct Sent {
    pub exporter: IpAddr,
    pub protocol: Protocol,
    pub layout: Layout,
    /// Copies put on the wire (0: dropped by the exporter side on purpose).
    pub copies: u32,
}

impl Ledger {
    /// Records `datagram` as sent `copies` times from `exporter`.
    pub fn record(
        &mut self,
        exporter: IpAddr,
        protocol: Protocol,
        datagram: &Datagram,
        copies: u32,
    ) {
        for id in &datagram.records {
            let sent = self.records.entry(*id).or_insert(Sent {
                exporter,
                protocol,
                layout: datagram.layout,
                copies: 0,
            });
            sent.copies += copies;
        }
    }

    pub fn merge(&mut self, other: Ledger) {
        for (id, sent) in other.records {
            self.records.entry(id).and_modify(|s| s.copies += sent.copies).or_insert(sent);
        }
    }

    /// Records put on the wire, copies included.
    pub fn records_on_wire(&self) -> u64 {
        self.records.values().map(|s| u64::from(s.copies)).sum()
    }

    /// Distinct records generated (dropped ones included).
    pub fn generated(&self) -> u64 {
        self.records.len() as u64
    }
}

/// Hands out record ids, so every record of a run is unique.
#[derive(Debug)]
pub struct Ids(u32);

impl Ids {
    pub fn starting_at(first: u32) -> Self {
        Ids(first)
    }

    pub fn take(&mut self, n: u32) -> Range<u32> {
        let start = self.0;
        self.0 += n;
        assert!(self.0 < 1 << 24, "record ids are 24 bits");
        start..self.0
    }
}

/// A small deterministic generator (xorshift64*), so fault patterns repeat per seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// A UDP socket on 127.0.0.`n` (each exporter its own source address).
pub fn loopback_socket(n: u8) -> UdpSocket {
    bind_socket(IpAddr::V4(Ipv4Addr::new(127, 0, 0, n)))
}

/// A UDP socket on `ip`, any port.
pub fn bind_socket(ip: IpAddr) -> UdpSocket {
    UdpSocket::bind(SocketAddr::new(ip, 0)).unwrap_or_else(|e| panic!("bind a sender on {ip}: {e}"))
}

/// Sends datagrams at most `rate` a second (0: flat out), sleeping between them.
pub struct Pacer {
    start: Instant,
    rate: u32,
    sent: u64,
}

impl Pacer {
    pub fn new(rate: u32) -> Self {
        Pacer { start: Instant::now(), rate, sent: 0 }
    }

    /// Waits until the next datagram is due.
    pub fn wait(&mut self) {
        if self.rate > 0 {
            let due = self.start + Duration::from_secs_f64(self.sent as f64 / f64::from(self.rate));
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        self.sent += 1;
    }
}

/// Sends each datagram once, paced, recording them in a ledger. Send errors (the
/// collector gone) are counted, not fatal.
pub fn send_all(
    socket: &UdpSocket,
    to: SocketAddr,
    protocol: Protocol,
    datagrams: &[Datagram],
    rate: u32,
) -> Ledger {
    let exporter = socket.local_addr().map(|a| a.ip()).unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
    let mut ledger = Ledger::default();
    let mut pacer = Pacer::new(rate);
    for datagram in datagrams {
        pacer.wait();
        let copies = u32::from(socket.send_to(&datagram.payload, to).is_ok());
        ledger.record(exporter, protocol, datagram, copies);
    }
    ledger
}

/// Steady traffic from one exporter in a background thread until stopped: datagrams
/// of `records` records each, the template in the first and every `template_every`-th.
pub struct Traffic {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    handle: Option<JoinHandle<Ledger>>,
}

/// How a [`Traffic`] sends.
#[derive(Debug, Clone)]
pub struct TrafficPlan {
    pub to: SocketAddr,
    pub from: IpAddr,
    pub protocol: Protocol,
    pub records: u32,
    /// Datagrams per second.
    pub rate: u32,
    pub template_every: u32,
    /// First record id (ids `first_id..` are used).
    pub first_id: u32,
    /// Stop by itself after this many datagrams.
    pub max_datagrams: Option<u64>,
}

impl Traffic {
    pub fn start(plan: TrafficPlan) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let (stop_flag, counter) = (Arc::clone(&stop), Arc::clone(&sent));
        let handle = std::thread::spawn(move || {
            let socket = bind_socket(plan.from);
            let mut exporter = Exporter::new(plan.protocol, Layout::A);
            let mut ids = Ids::starting_at(plan.first_id);
            let mut pacer = Pacer::new(plan.rate);
            let mut ledger = Ledger::default();
            let mut n: u64 = 0;
            while !stop_flag.load(Ordering::Relaxed) && plan.max_datagrams.is_none_or(|m| n < m) {
                let with_template = n.is_multiple_of(u64::from(plan.template_every.max(1)));
                let datagram = exporter.datagram(ids.take(plan.records), with_template);
                pacer.wait();
                let copies = u32::from(socket.send_to(&datagram.payload, plan.to).is_ok());
                ledger.record(plan.from, plan.protocol, &datagram, copies);
                n += 1;
                counter.store(n, Ordering::Relaxed);
            }
            ledger
        });
        Traffic { stop, sent, handle: Some(handle) }
    }

    /// Datagrams sent so far.
    pub fn datagrams_sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Stops sending and returns what was sent.
    pub fn stop(mut self) -> Ledger {
        self.stop.store(true, Ordering::Relaxed);
        self.join()
    }

    /// Waits until the plan's `max_datagrams` are sent.
    pub fn finish(mut self) -> Ledger {
        self.join()
    }

    fn join(&mut self) -> Ledger {
        let handle = self.handle.take().expect("joined once");
        handle.join().unwrap_or_else(|_| panic!("the traffic thread panicked"))
    }
}

impl Drop for Traffic {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Exporter-side faults applied to a datagram sequence: each datagram after the first
/// `keep_first` is dropped with probability `loss`, sent twice with probability
/// `duplicate`, and the survivors are shuffled within windows of `reorder_window`.
#[derive(Debug, Clone, Copy)]
pub struct WireFaults {
    pub loss: f64,
    pub duplicate: f64,
    pub reorder_window: usize,
    pub keep_first: usize,
    /// The last `clean_tail` datagrams go out untouched and in order (so the collector's
    /// reorder window has closed every hole by the end).
    pub clean_tail: usize,
    pub seed: u64,
}

/// What [`apply_faults`] did.
#[derive(Debug, Default, Clone)]
pub struct FaultLog {
    pub dropped_datagrams: u64,
    pub dropped_records: u64,
    pub duplicated_datagrams: u64,
    pub duplicated_records: u64,
    /// Datagrams sent out of their original order.
    pub reordered: u64,
}

/// The order in which to put `datagrams` on the wire (indices; an index twice is a
/// duplicate, a missing one a loss), and what that does.
pub fn apply_faults(datagrams: &[Datagram], faults: WireFaults) -> (Vec<usize>, FaultLog) {
    let mut rng = Rng::new(faults.seed);
    let mut log = FaultLog::default();
    let n = datagrams.len();
    let faulty_end = n.saturating_sub(faults.clean_tail);
    let mut order: Vec<usize> = (0..faults.keep_first.min(n)).collect();
    let mut middle = Vec::new();
    for (i, datagram) in datagrams.iter().enumerate().take(faulty_end).skip(faults.keep_first) {
        if rng.unit() < faults.loss {
            log.dropped_datagrams += 1;
            log.dropped_records += datagram.records.len() as u64;
            continue;
        }
        middle.push(i);
        if rng.unit() < faults.duplicate {
            log.duplicated_datagrams += 1;
            log.duplicated_records += datagram.records.len() as u64;
            middle.push(i);
        }
    }
    if faults.reorder_window > 1 {
        for chunk in middle.chunks_mut(faults.reorder_window) {
            for k in (1..chunk.len()).rev() {
                let j = rng.below(k + 1);
                chunk.swap(k, j);
            }
        }
        let mut highest = None;
        for &i in &middle {
            if highest.is_some_and(|h| i < h) {
                log.reordered += 1;
            }
            highest = highest.max(Some(i));
        }
    }
    order.extend(middle);
    order.extend(faulty_end.max(faults.keep_first)..n);
    (order, log)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn faults_drop_duplicate_and_reorder_only_the_middle() {
        let mut exporter = Exporter::new(Protocol::Ipfix, Layout::A);
        let mut ids = Ids::starting_at(0);
        let datagrams: Vec<Datagram> =
            (0..400).map(|i| exporter.datagram(ids.take(3), i == 0)).collect();
        let faults = WireFaults {
            loss: 0.1,
            duplicate: 0.05,
            reorder_window: 6,
            keep_first: 1,
            clean_tail: 70,
            seed: 3,
        };
        let (order, log) = apply_faults(&datagrams, faults);
        assert_eq!(order[0], 0);
        assert_eq!(&order[order.len() - 70..], &(330..400).collect::<Vec<_>>()[..]);
        assert!(log.dropped_datagrams > 10 && log.duplicated_datagrams > 3 && log.reordered > 10);
        assert_eq!(
            order.len() as u64,
            400 - log.dropped_datagrams + log.duplicated_datagrams,
            "{log:?}"
        );
        assert_eq!(log.dropped_records, 3 * log.dropped_datagrams);
    }

    #[test]
    fn ids_are_carried_in_the_source_address() {
        let e = Expected::of(0x01_02_03, Layout::A);
        let flow = FlowMessage { src_addr: e.src_addr.to_vec(), ..Default::default() };
        assert_eq!(flow_id(&flow), Some(0x01_02_03));
        assert_ne!(Expected::of(5, Layout::A), Expected::of(5, Layout::B));
    }

    /// The collector's own decoder reads every layout and protocol back exactly, and a
    /// reboot (uptime and sequence reset, template id reused with layout B) is detected.
    #[test]
    fn the_collectors_decoder_reads_every_record_back() {
        use flow_decode::{ExporterSession, NetflowSession, NetflowSettings};
        let source: SocketAddr = "127.0.0.9:40000".parse().unwrap();
        for protocol in [Protocol::V9, Protocol::Ipfix] {
            let settings = NetflowSettings {
                max_templates: 2000,
                max_template_fields: 10_000,
                pending: None,
                sampling: Default::default(),
            };
            let mut session = NetflowSession::new(&settings);
            let mut exporter = Exporter::new(protocol, Layout::A);
            let mut ids = Ids::starting_at(100);
            let mut sent =
                vec![exporter.datagram(ids.take(5), true), exporter.datagram(ids.take(7), false)];
            exporter.reboot(Layout::B);
            sent.push(exporter.datagram(ids.take(4), true));
            let mut flows = flow_decode::FlowBuffer::new();
            let mut restarts = 0;
            for datagram in &sent {
                let report = session.decode(
                    flow_decode::Datagram { source, received_ns: 1, payload: &datagram.payload },
                    &mut flows,
                );
                assert!(report.errors.is_empty(), "{protocol:?}: {:?}", report.errors);
                restarts += report
                    .events
                    .iter()
                    .filter(|e| matches!(e, flow_decode::LifecycleEvent::ExporterRestarted { .. }))
                    .count();
            }
            assert_eq!(flows.len(), 16, "{protocol:?}");
            for flow in flows.iter() {
                let id = flow_id(flow).expect("an id");
                let layout = if id >= 112 { Layout::B } else { Layout::A };
                let wrong = mismatch(flow, source.ip(), protocol, &Expected::of(id, layout));
                assert!(wrong.is_none(), "{protocol:?}: {wrong:?}");
            }
            if protocol == Protocol::V9 {
                assert_eq!(restarts, 1, "the v9 reboot is seen");
            }
        }
    }
}
