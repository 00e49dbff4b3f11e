//! Decode cost per datagram and per record, for NetFlow v5, NetFlow v9, IPFIX and
//! sFlow v5: `cargo bench -p flow-decode`.
//!
//! Datagrams come from the load generator (`flow_replay::generate`): a ring of
//! consecutive datagrams of one exporter, its templates decoded once before measuring
//! (steady state: every data set finds its template). Each protocol is measured with
//! full datagrams (its default records per datagram: what fits 1500 bytes) and with
//! one-record datagrams; the throughput is in records, so criterion prints both the
//! time per datagram and records per second. Decoding a ring again repeats sequence
//! numbers, which the decoders take as late duplicates: they still decode every record
//! (checked before measuring).
//!
//! With `DECODE_INSTRUCTIONS=<protocol>` set (v5, v9, ipfix, sflow) the binary instead
//! decodes that protocol's ring [`ROUNDS`] times in [`decode_rounds`] and prints the
//! records decoded: `bash bench/instructions.sh` counts the instructions it takes under
//! callgrind, a figure per record that this host's noise does not move.

use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use criterion::{BatchSize, Criterion, Throughput, criterion_group};
use flow_decode::{
    Datagram, ExporterSession, FlowBuffer, NetflowSession, NetflowSettings, SamplingPolicy,
    SflowSession, SflowSettings,
};
use flow_replay::generate::{Exporter, Protocol, Settings};

const START_MS: u64 = 1_700_000_000_000;
const AGENT: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 10);
/// Datagrams in a ring: enough that records and sequence numbers vary.
const RING: usize = 256;

fn session(protocol: Protocol) -> Box<dyn ExporterSession> {
    match protocol {
        Protocol::Sflow => Box::new(SflowSession::new(&SflowSettings::default())),
        _ => Box::new(NetflowSession::new(&NetflowSettings {
            max_templates: 2_000,
            max_template_fields: 10_000,
            pending: None,
            sampling: SamplingPolicy::default(),
        })),
    }
}

/// One exporter's first datagram (with its templates, if any) and the ring after it.
struct Stream {
    first: Vec<u8>,
    ring: Vec<Vec<u8>>,
    records: u64,
}

fn stream(protocol: Protocol, records: u16) -> Stream {
    let mut settings = Settings::new(protocol);
    settings.records = records;
    settings.template_every = None;
    settings.template_interval = None;
    let mut exporter = match Exporter::new(&settings, 0, AGENT, START_MS) {
        Ok(exporter) => exporter,
        Err(e) => panic!("generator settings: {e}"),
    };
    let mut datagrams: Vec<Vec<u8>> = (0..=RING as u64)
        .map(|i| {
            let mut buf = Vec::new();
            exporter.next_datagram(START_MS + i, &mut buf);
            buf
        })
        .collect();
    let first = datagrams.remove(0);
    Stream { first, ring: datagrams, records: u64::from(records) }
}

fn source() -> SocketAddr {
    SocketAddr::new(IpAddr::V4(AGENT), 2055)
}

fn decode(session: &mut dyn ExporterSession, payload: &[u8], out: &mut FlowBuffer) -> usize {
    let datagram = Datagram { source: source(), received_ns: START_MS * 1_000_000, payload };
    session.decode(datagram, out).flows
}

/// A session that has decoded the stream's first datagram, checked to decode the whole
/// ring twice over with every record a flow.
fn warmed(protocol: Protocol, stream: &Stream) -> Box<dyn ExporterSession> {
    let mut session = session(protocol);
    let mut out = FlowBuffer::new();
    decode(session.as_mut(), &stream.first, &mut out);
    for _ in 0..2 {
        for payload in &stream.ring {
            out.clear();
            let flows = decode(session.as_mut(), payload, &mut out) as u64;
            assert_eq!(flows, stream.records, "{protocol}: every record decodes");
        }
    }
    session
}

fn bench_protocol(c: &mut Criterion, protocol: Protocol) {
    let mut group = c.benchmark_group(protocol.name());
    for records in [protocol.default_records(), 1] {
        let stream = stream(protocol, records);
        let mut session = warmed(protocol, &stream);
        let mut out = FlowBuffer::new();
        let mut next = 0;
        group.throughput(Throughput::Elements(stream.records));
        group.bench_function(format!("datagram_of_{records}_records"), |b| {
            b.iter(|| {
                out.clear();
                let payload = &stream.ring[next % RING];
                next += 1;
                black_box(decode(session.as_mut(), black_box(payload), &mut out))
            })
        });
    }
    // A first datagram: templates learned by a fresh session (v9/IPFIX), or a new
    // exporter's first datagram (v5/sFlow).
    let stream = stream(protocol, protocol.default_records());
    group.throughput(Throughput::Elements(stream.records));
    group.bench_function("first_datagram_fresh_session", |b| {
        b.iter_batched_ref(
            || (session(protocol), FlowBuffer::new()),
            |(session, out)| black_box(decode(session.as_mut(), black_box(&stream.first), out)),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

fn decoders(c: &mut Criterion) {
    for protocol in Protocol::ALL {
        bench_protocol(c, protocol);
    }
}

/// Times the instruction-count mode decodes the ring.
const ROUNDS: usize = 20;

/// Decodes every datagram of the ring [`ROUNDS`] times: the loop
/// `bench/instructions.sh` counts. Returns the records decoded.
#[inline(never)]
fn decode_rounds(session: &mut dyn ExporterSession, stream: &Stream, out: &mut FlowBuffer) -> u64 {
    let mut records = 0;
    for _ in 0..ROUNDS {
        for payload in &stream.ring {
            out.clear();
            records += decode(session, black_box(payload), out) as u64;
        }
    }
    records
}

/// The instruction-count mode: decodes `name`'s full datagrams and prints how many
/// records that was.
fn count_records(name: &str) -> Result<(), String> {
    let protocol: Protocol =
        name.parse().map_err(|error| format!("DECODE_INSTRUCTIONS={name}: {error}"))?;
    let stream = stream(protocol, protocol.default_records());
    let mut session = warmed(protocol, &stream);
    let records = decode_rounds(session.as_mut(), &stream, &mut FlowBuffer::new());
    println!("{protocol} records {records}");
    Ok(())
}

criterion_group!(benches, decoders);

fn main() {
    match std::env::var("DECODE_INSTRUCTIONS") {
        Ok(name) => {
            if let Err(error) = count_records(&name) {
                eprintln!("{error}");
                std::process::exit(2);
            }
        }
        Err(_) => {
            benches();
            Criterion::default().configure_from_args().final_summary();
        }
    }
}
