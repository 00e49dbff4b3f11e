//! Writes the seed corpus of the flow-decode fuzz targets:
//!
//! `seed-corpus <captures dir> <corpus dir>`
//!
//! Every UDP payload of every `*.pcap`/`*.pcapng` under the captures directory (read by
//! `flow-replay`), in the input format of each target (`../src/format.rs`):
//!
//! - `netflow_single/<capture>-<n>`: datagram n as is;
//! - `netflow_session/<capture>-<n>`: datagram n alone, and `<capture>-all` the whole
//!   capture in order (each source address on its own source port, the clock moving as
//!   the capture's did), `<capture>-all-small` the same under the smallest caps, and
//!   `<capture>-reversed` in reverse order (data before its templates: pending flows);
//! - `sflow_session/`: the sFlow datagrams of the captures (the shared captures have
//!   none today) and a few built here by the sFlow v5 specification's XDR layout.
//!
//! File names are stable, so running it again rewrites the same seeds.

#[path = "../../src/format.rs"]
#[allow(dead_code)]
mod format;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use flow_replay::{UdpDatagram, read_file};

/// Settings byte of the seeds: `max_templates` 16, pending cache on, no sampling policy.
const SETTINGS_DEFAULT: u8 = 0x00;
/// Settings byte of the `-all-small` seeds: 4 templates, 64-byte pending sets, one
/// pending queue.
const SETTINGS_SMALL: u8 = 0x1B;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let [_, captures_dir, corpus_dir] = &args[..] else {
        eprintln!("usage: seed-corpus <captures dir> <corpus dir>");
        return ExitCode::from(2);
    };
    match run(Path::new(captures_dir), Path::new(corpus_dir)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("seed-corpus: {message}");
            ExitCode::FAILURE
        }
    }
}

fn run(captures_dir: &Path, corpus_dir: &Path) -> Result<(), String> {
    let mut captures = Vec::new();
    find_captures(captures_dir, &mut captures)?;
    captures.sort();
    if captures.is_empty() {
        return Err(format!("no capture under {}", captures_dir.display()));
    }
    let corpus = Corpus::new(corpus_dir)?;
    let mut sflow_frames = Vec::new();
    for path in &captures {
        let capture = read_file(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let name = capture_name(captures_dir, path);
        let count = capture.datagrams.len();
        let (sflow, netflow): (Vec<_>, Vec<_>) =
            capture.datagrams.into_iter().partition(|d| d.payload.starts_with(&[0, 0, 0, 5]));
        corpus.netflow(&name, &netflow)?;
        sflow_frames.extend(sflow.into_iter().map(|d| d.payload));
        eprintln!("{}: {count} datagrams", path.display());
    }
    sflow_frames.extend(synthetic_sflow());
    corpus.sflow(&sflow_frames)?;
    eprintln!("seeds written under {}", corpus_dir.display());
    Ok(())
}

fn find_captures(dir: &Path, found: &mut Vec<PathBuf>) -> Result<(), String> {
    let entries = std::fs::read_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    for entry in entries {
        let path = entry.map_err(|e| format!("{}: {e}", dir.display()))?.path();
        if path.is_dir() {
            find_captures(&path, found)?;
        } else if path.extension().is_some_and(|e| e == "pcap" || e == "pcapng") {
            found.push(path);
        }
    }
    Ok(())
}

/// `100-IPFIXv10-CISCO/traffic-00.pcap` → `100-IPFIXv10-CISCO_traffic-00`.
fn capture_name(root: &Path, path: &Path) -> String {
    let relative = path.strip_prefix(root).unwrap_or(path).with_extension("");
    relative.to_string_lossy().replace(['/', '\\'], "_")
}

struct Corpus {
    netflow_single: PathBuf,
    netflow_session: PathBuf,
    sflow_session: PathBuf,
}

impl Corpus {
    fn new(root: &Path) -> Result<Self, String> {
        let corpus = Corpus {
            netflow_single: root.join("netflow_single"),
            netflow_session: root.join("netflow_session"),
            sflow_session: root.join("sflow_session"),
        };
        for dir in [&corpus.netflow_single, &corpus.netflow_session, &corpus.sflow_session] {
            std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        }
        Ok(corpus)
    }

    fn netflow(&self, name: &str, datagrams: &[UdpDatagram]) -> Result<(), String> {
        if datagrams.is_empty() {
            return Ok(());
        }
        let mut ports: HashMap<SocketAddr, u8> = HashMap::new();
        let mut previous_ns = datagrams[0].timestamp_ns();
        let mut frames = Vec::new();
        for datagram in datagrams {
            let next = ports.len() as u8;
            let port = *ports.entry(datagram.source).or_insert(next);
            let now = datagram.timestamp_ns();
            let advance = (now.saturating_sub(previous_ns) / 1_000_000_000).min(31) as u8;
            previous_ns = now.max(previous_ns);
            frames.push((port, advance, &datagram.payload[..]));
        }
        for (index, (port, _, payload)) in frames.iter().enumerate() {
            write(&self.netflow_single.join(format!("{name}-{index:04}")), payload)?;
            let single = session_input(SETTINGS_DEFAULT, &[(*port, 0, payload)]);
            write(&self.netflow_session.join(format!("{name}-{index:04}")), &single)?;
        }
        let all = session_input(SETTINGS_DEFAULT, &frames);
        write(&self.netflow_session.join(format!("{name}-all")), &all)?;
        let small = session_input(SETTINGS_SMALL, &frames);
        write(&self.netflow_session.join(format!("{name}-all-small")), &small)?;
        let reversed: Vec<_> = frames.iter().rev().map(|(port, _, p)| (*port, 1, *p)).collect();
        let reversed = session_input(SETTINGS_DEFAULT, &reversed);
        write(&self.netflow_session.join(format!("{name}-reversed")), &reversed)
    }

    fn sflow(&self, datagrams: &[Vec<u8>]) -> Result<(), String> {
        let mut frames = Vec::new();
        for (index, payload) in datagrams.iter().enumerate() {
            let single = session_input(SETTINGS_DEFAULT, &[(0, 0, payload)]);
            write(&self.sflow_session.join(format!("sflow-{index:04}")), &single)?;
            frames.push((0, 1, &payload[..]));
        }
        write(&self.sflow_session.join("sflow-all"), &session_input(SETTINGS_DEFAULT, &frames))?;
        // The same under a cap of 2 samples, a default rate and an override.
        let capped = session_input(0x02 | 0x20 | 0x40, &frames);
        write(&self.sflow_session.join("sflow-all-capped"), &capped)
    }
}

fn session_input(settings: u8, frames: &[(u8, u8, &[u8])]) -> Vec<u8> {
    let mut input = vec![settings];
    for (port, advance, payload) in frames {
        format::push_frame(&mut input, *port, *advance, payload);
    }
    input
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()))
}

/// An XDR writer (sFlow v5 is XDR: big-endian words, opaques padded to 4 bytes).
#[derive(Default)]
struct Xdr(Vec<u8>);

impl Xdr {
    fn u32(mut self, value: u32) -> Self {
        self.0.extend_from_slice(&value.to_be_bytes());
        self
    }
    fn raw(mut self, bytes: &[u8]) -> Self {
        self.0.extend_from_slice(bytes);
        self
    }
    fn opaque(self, bytes: &[u8]) -> Self {
        let padding = (4 - bytes.len() % 4) % 4;
        self.u32(bytes.len() as u32).raw(bytes).raw(&[0; 3][..padding])
    }
    /// A typed element (sample or record): format word, then its body as an opaque.
    fn element(self, format: u32, body: Xdr) -> Self {
        self.u32(format).opaque(&body.0)
    }
    fn ipv4(self, octets: [u8; 4]) -> Self {
        self.u32(1).raw(&octets)
    }
    fn ipv6(self, octets: [u8; 16]) -> Self {
        self.u32(2).raw(&octets)
    }
}

const V6_SRC: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const V6_DST: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

/// Ethernet header: destination, source, then `ethertype`.
fn ethernet(ethertype: u16) -> Vec<u8> {
    let mut frame = vec![0x00, 0x1b, 0x21, 0x00, 0x00, 0x02, 0x00, 0x1b, 0x21, 0x00, 0x00, 0x01];
    frame.extend_from_slice(&ethertype.to_be_bytes());
    frame
}

fn ipv4_header(protocol: u8, payload_len: u16) -> Vec<u8> {
    let total = (20 + payload_len).to_be_bytes();
    vec![
        0x45, 0x10, total[0], total[1], 0x12, 0x34, 0x40, 0, 64, protocol, 0, 0, 10, 0, 0, 1, 10,
        0, 0, 2,
    ]
}

fn ipv6_header(next_header: u8, payload_len: u16) -> Vec<u8> {
    let len = payload_len.to_be_bytes();
    let mut header = vec![0x60, 0x0a, 0xbc, 0xde, len[0], len[1], next_header, 64];
    header.extend_from_slice(&V6_SRC);
    header.extend_from_slice(&V6_DST);
    header
}

fn tcp_header() -> Vec<u8> {
    vec![0xc3, 0x50, 0x01, 0xbb, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]
}

fn udp_header() -> Vec<u8> {
    vec![0x30, 0x39, 0x00, 0x35, 0, 8, 0, 0]
}

fn header_record(protocol: u32, frame_length: u32, header: &[u8]) -> Xdr {
    Xdr::default().u32(protocol).u32(frame_length).u32(4).opaque(header)
}

/// Compact flow sample (format 1) with `records`.
fn flow_sample(sampling_rate: u32, records: Vec<(u32, Xdr)>) -> Xdr {
    let mut body = Xdr::default().u32(7).u32(3).u32(sampling_rate).u32(1_000).u32(0);
    body = body.u32(3).u32(5).u32(records.len() as u32);
    for (format, record) in records {
        body = body.element(format, record);
    }
    body
}

/// Expanded flow sample (format 3) with `records`.
fn expanded_flow_sample(sampling_rate: u32, records: Vec<(u32, Xdr)>) -> Xdr {
    let mut body = Xdr::default().u32(9).u32(0).u32(0x0100_0000).u32(sampling_rate);
    body = body.u32(5_000).u32(2).u32(0).u32(3).u32(0).u32(5).u32(records.len() as u32);
    for (format, record) in records {
        body = body.element(format, record);
    }
    body
}

/// Counter sample (format 2, or 4 expanded) with one generic interface record.
fn counter_sample(expanded: bool) -> Xdr {
    let body = Xdr::default().u32(11);
    let body = if expanded { body.u32(0).u32(4) } else { body.u32(4) };
    body.u32(1).element(1, Xdr::default().raw(&[0xab; 88]))
}

/// A datagram from `agent` (None: address type 0, unknown).
fn datagram(
    agent: Option<Xdr>,
    sub_agent: u32,
    sequence: u32,
    uptime_ms: u32,
    samples: Vec<(u32, Xdr)>,
) -> Vec<u8> {
    let mut xdr = Xdr::default().u32(5);
    xdr = match agent {
        Some(address) => xdr.raw(&address.0),
        None => xdr.u32(0),
    };
    xdr = xdr.u32(sub_agent).u32(sequence).u32(uptime_ms).u32(samples.len() as u32);
    for (format, sample) in samples {
        xdr = xdr.element(format, sample);
    }
    xdr.0
}

/// sFlow datagrams covering every sample and record type the decoder reads.
fn synthetic_sflow() -> Vec<Vec<u8>> {
    let agent4 = || Some(Xdr::default().ipv4([192, 0, 2, 7]));
    let agent6 = || Some(Xdr::default().ipv6(V6_SRC));
    // Ethernet + 802.1Q + IPv4 + TCP.
    let mut tcp4 = ethernet(0x8100);
    tcp4.extend_from_slice(&[0x00, 0x64, 0x08, 0x00]);
    tcp4.extend(ipv4_header(6, 20));
    tcp4.extend(tcp_header());
    // Ethernet + IPv6 + UDP.
    let mut udp6 = ethernet(0x86dd);
    udp6.extend(ipv6_header(17, 8));
    udp6.extend(udp_header());
    // Ethernet + MPLS (two labels) + IPv4 + UDP.
    let mut mpls = ethernet(0x8847);
    mpls.extend_from_slice(&[0x00, 0x01, 0x00, 0x40, 0x00, 0x02, 0x01, 0x40]);
    mpls.extend(ipv4_header(17, 8));
    mpls.extend(udp_header());
    // A bare IPv4 + ICMP header (header protocol 11).
    let mut icmp4 = ipv4_header(1, 8);
    icmp4.extend_from_slice(&[8, 0, 0, 0, 0, 1, 0, 1]);

    let switch = Xdr::default().u32(100).u32(0).u32(200).u32(0);
    let router = Xdr::default().ipv4([10, 0, 0, 254]).u32(24).u32(16);
    let gateway = Xdr::default()
        .ipv4([10, 0, 0, 253])
        .u32(65000)
        .u32(65001)
        .u32(65002)
        .u32(1) // one AS path segment
        .u32(2) // AS_SEQUENCE
        .u32(2)
        .u32(65010)
        .u32(65020)
        .u32(1) // one community
        .u32(0xfde8_0001)
        .u32(100); // local preference
    let ethernet_record = Xdr::default()
        .u32(1500)
        .raw(&[0, 0x1b, 0x21, 0, 0, 1, 0, 0])
        .raw(&[0, 0x1b, 0x21, 0, 0, 2, 0, 0])
        .u32(0x0800);
    let ipv4_record = Xdr::default()
        .u32(60)
        .u32(6)
        .raw(&[10, 0, 0, 1])
        .raw(&[10, 0, 0, 2])
        .u32(50000)
        .u32(443)
        .u32(0x18)
        .u32(0x10);
    let ipv6_record =
        Xdr::default().u32(80).u32(17).raw(&V6_SRC).raw(&V6_DST).u32(12345).u32(53).u32(0).u32(0);
    let other_enterprise = Xdr::default().u32(1).u32(2);

    vec![
        datagram(
            agent4(),
            0,
            1,
            60_000,
            vec![
                (
                    1,
                    flow_sample(
                        512,
                        vec![
                            (1, header_record(1, 1518, &tcp4)),
                            (1001, switch),
                            (1002, router),
                            (1003, gateway),
                        ],
                    ),
                ),
                (2, counter_sample(false)),
            ],
        ),
        datagram(
            agent6(),
            1,
            1,
            60_000,
            vec![
                (
                    3,
                    expanded_flow_sample(
                        1024,
                        vec![
                            (1, header_record(1, 128, &udp6)),
                            (2, ethernet_record),
                            (4, ipv6_record),
                        ],
                    ),
                ),
                (4, counter_sample(true)),
            ],
        ),
        datagram(
            agent4(),
            0,
            2,
            61_000,
            vec![
                (1, flow_sample(0, vec![(3, ipv4_record)])),
                (1, flow_sample(256, vec![(1, header_record(11, 36, &icmp4))])),
                (1, flow_sample(256, vec![((9 << 12) | 1, other_enterprise)])),
            ],
        ),
        datagram(
            None,
            0,
            1,
            5_000,
            vec![(1, flow_sample(2048, vec![(1, header_record(1, 64, &mpls))]))],
        ),
        // The agent again, sequence jumped and uptime gone back: a restart.
        datagram(
            agent4(),
            0,
            9,
            1_000,
            vec![(1, flow_sample(512, vec![(1, header_record(1, 1518, &tcp4))]))],
        ),
    ]
}
