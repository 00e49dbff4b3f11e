//! IPFIX over TCP (RFC 7011 §10.4) through the supervision tree, over real sockets: the
//! shared captures decode exactly as over UDP, templates belong to their session, limits
//! and timeouts close sessions and are counted, a broken stream closes only its own
//! session, a stuck pipeline stops reading instead of dropping, and supervision and
//! drain work as for UDP listeners.

mod common;
mod stream_support;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use flow_actors::counters::{close, refusal};
use flow_actors::{Fault, Transport};
use flowpb::FlowMessage;
use stream_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream, UdpSocket};

/// Every IPFIX message of the shared captures whose name says IPFIX, one list per
/// original exporter (capture, source address and port), in capture order.
fn ipfix_streams() -> Vec<(String, Vec<Vec<u8>>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/pcaps");
    let mut captures: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("shared captures missing at {}: {e}", root.display()))
        .flatten()
        .filter(|dir| dir.file_name().to_string_lossy().contains("IPFIX"))
        .flat_map(|dir| std::fs::read_dir(dir.path()).unwrap().flatten().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "pcap"))
        .collect();
    captures.sort();
    let mut streams = Vec::new();
    for capture in captures {
        let datagrams = flow_replay::read_file(&capture).unwrap().datagrams;
        let mut by_source: BTreeMap<SocketAddr, Vec<Vec<u8>>> = BTreeMap::new();
        for datagram in datagrams.into_iter().filter(|d| d.payload.starts_with(&[0, 10])) {
            by_source.entry(datagram.source).or_default().push(datagram.payload);
        }
        for (source, messages) in by_source {
            streams.push((format!("{} from {source}", capture.display()), messages));
        }
    }
    streams
}

/// A flow without what depends on how and when it was received.
fn received_anyhow(mut flow: FlowMessage) -> FlowMessage {
    flow.sampler_address.clear();
    flow.time_received_ns = 0;
    flow
}

/// The flows of `subject` whose sampler address is `from`, in arrival order.
fn flows_from(recorder: &Recorder, subject: &str, from: IpAddr) -> Vec<FlowMessage> {
    let from = flow_decode::address_bytes(from);
    recorder
        .flows()
        .into_iter()
        .filter(|(s, f)| s == subject && f.sampler_address == from)
        .map(|(_, f)| received_anyhow(f))
        .collect()
}

/// Reads until the collector closes the connection (EOF or reset); panics if it does not
/// within a few seconds.
async fn assert_closed_by_collector(conn: &mut TcpStream) {
    let mut buf = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(10), conn.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0) | Err(_))), "connection still open: {read:?}");
}

fn tcp() -> Transport {
    Transport::Stream(stream(None))
}

fn template(sequence: u32, layout: &[(u16, u16)]) -> Vec<u8> {
    message(sequence, &[template_set(256, layout)])
}

fn addresses(sequence: u32, octets: u64) -> Vec<u8> {
    message(sequence, &[data_set(256, &[address_record([10, 0, 0, 1], [10, 0, 0, 2], octets)])])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_captures_over_tcp_decode_exactly_as_over_udp() {
    let streams = ipfix_streams();
    assert!(streams.len() >= 5, "expected the IPFIX captures, found {}", streams.len());
    let recorder = Recorder::open();
    let s = settings(vec![
        netflow_listener("flows.udp", Transport::Udp),
        netflow_listener("flows.tcp", tcp()),
    ]);
    let collector = start_real(s, &recorder).await;
    let [udp, tcp] = collector.local_addrs()[..] else { panic!("two listeners") };

    let mut messages = 0u64;
    for (k, (_, stream)) in streams.iter().enumerate() {
        let n = u8::try_from(k + 1).unwrap();
        let from = UdpSocket::bind((Ipv4Addr::new(127, 0, 1, n), 0)).await.unwrap();
        for (i, m) in stream.iter().enumerate() {
            from.send_to(m, udp).await.unwrap();
            if i % 8 == 7 {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        let mut conn = connect_from(IpAddr::from([127, 0, 2, n]), tcp).await;
        write_split(&mut conn, &stream.concat()).await;
        conn.shutdown().await.unwrap();
        messages += stream.len() as u64;
    }
    wait_until("both listeners decoded every message", || {
        let c = collector.counters();
        c.listeners.iter().all(|l| l.counters.datagrams_decoded == messages)
    })
    .await;
    wait_until("every session is closed", || {
        collector.counters().listeners[1].counters.sessions.closed(close::PEER_CLOSED)
            == streams.len() as u64
    })
    .await;
    let report = collector.shutdown().await.unwrap();
    assert!(report.drained_cleanly);
    assert_accounted(&report.counters);

    let mut total = 0;
    for (k, (name, _)) in streams.iter().enumerate() {
        let n = u8::try_from(k + 1).unwrap();
        let over_udp = flows_from(&recorder, "flows.udp", IpAddr::from([127, 0, 1, n]));
        let over_tcp = flows_from(&recorder, "flows.tcp", IpAddr::from([127, 0, 2, n]));
        assert_eq!(over_tcp.len(), over_udp.len(), "{name}: flow count");
        assert!(over_tcp == over_udp, "{name}: flows over TCP differ from flows over UDP");
        total += over_tcp.len();
    }
    assert!(total > 0, "the IPFIX captures produced no flow");
    let (u, t) = (&report.counters.listeners[0].counters, &report.counters.listeners[1].counters);
    assert_eq!((t.datagrams_received, t.bytes_received), (u.datagrams_received, u.bytes_received));
    assert_eq!(t.flows_decoded, u.flows_decoded);
    assert_eq!(t.decode_errors, u.decode_errors);
    assert_eq!(t.sessions.accepted, streams.len() as u64);
    assert_eq!(t.exporters_added, streams.len() as u64);
    assert_eq!(report.counters.listeners[1].name, "netflow-tcp@127.0.0.1:0", "as configured");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_sessions_from_one_address_keep_their_own_templates() {
    let recorder = Recorder::open();
    let collector =
        start_real(settings(vec![netflow_listener("flows.tcp", tcp())]), &recorder).await;
    let to = collector.local_addrs()[0];
    let local = IpAddr::from([127, 0, 0, 1]);
    let mut a = connect_from(local, to).await;
    let mut b = connect_from(local, to).await;

    // Same template id, different layouts, from the same address.
    a.write_all(&template(0, ADDRESSES)).await.unwrap();
    b.write_all(&template(0, PORTS)).await.unwrap();
    wait_until("both templates are learned", || {
        listener0(&collector.counters()).lifecycle_events.get("template_learned") == Some(&2)
    })
    .await;
    a.write_all(&addresses(1, 1000)).await.unwrap();
    b.write_all(&message(1, &[data_set(256, &[port_record(1111, 2222, 7)])])).await.unwrap();
    wait_until("both flows are published", || recorder.len() == 2).await;
    assert_eq!(listener0(&collector.counters()).exporters_live, 2);

    drop((a, b));
    let report = collector.shutdown().await.unwrap();
    assert_accounted(&report.counters);
    let c = listener0(&report.counters);
    assert_eq!(c.lifecycle_events.get("template_collision"), None, "{:?}", c.lifecycle_events);
    let flows: Vec<FlowMessage> = recorder.flows().into_iter().map(|(_, f)| f).collect();
    let by_addresses = flows.iter().find(|f| f.src_addr == [10, 0, 0, 1]).expect("session a");
    assert_eq!((by_addresses.bytes, by_addresses.src_port), (1000, 0));
    let by_ports = flows.iter().find(|f| f.src_port == 1111).expect("session b");
    assert_eq!((by_ports.dst_port, by_ports.packets), (2222, 7));
    assert!(by_ports.src_addr.is_empty(), "{by_ports:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn max_sessions_and_the_idle_timeout_close_sessions_and_count() {
    let recorder = Recorder::open();
    let mut limits = stream(None);
    limits.max_sessions = 2;
    limits.idle_timeout = Duration::from_millis(800);
    let s = settings(vec![netflow_listener("flows.tcp", Transport::Stream(limits))]);
    let collector = start_real(s, &recorder).await;
    let to = collector.local_addrs()[0];

    let mut a = TcpStream::connect(to).await.unwrap();
    let mut b = TcpStream::connect(to).await.unwrap();
    wait_until("two sessions are open", || listener0(&collector.counters()).sessions.live == 2)
        .await;
    let mut c = TcpStream::connect(to).await.unwrap();
    wait_until("the third is refused", || {
        listener0(&collector.counters()).sessions.refused.get(refusal::MAX_SESSIONS) == Some(&1)
    })
    .await;
    assert_closed_by_collector(&mut c).await;

    // Silent sessions are closed after the idle timeout, and their slots come free.
    assert_closed_by_collector(&mut a).await;
    assert_closed_by_collector(&mut b).await;
    wait_until("both idle sessions are counted", || {
        listener0(&collector.counters()).sessions.closed(close::IDLE_TIMEOUT) == 2
    })
    .await;
    let mut d = TcpStream::connect(to).await.unwrap();
    d.write_all(&[template(0, ADDRESSES), addresses(1, 5)].concat()).await.unwrap();
    wait_until("a new session delivers", || recorder.len() == 1).await;

    let report = collector.shutdown().await.unwrap();
    assert_accounted(&report.counters);
    let c = listener0(&report.counters);
    assert_eq!(c.sessions.accepted, 3);
    assert_eq!(c.sessions.refused_total(), 1);
    assert_eq!(c.sessions.live, 0);
    assert_eq!(c.sessions.closed(close::SHUTDOWN), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_broken_stream_closes_only_its_own_session() {
    let recorder = Recorder::open();
    let collector =
        start_real(settings(vec![netflow_listener("flows.tcp", tcp())]), &recorder).await;
    let to = collector.local_addrs()[0];
    let good_ip = IpAddr::from([127, 0, 0, 2]);
    let mut good = connect_from(good_ip, to).await;
    good.write_all(&template(0, ADDRESSES)).await.unwrap();

    // A header whose length is shorter than the header itself.
    let mut short = connect_from(IpAddr::from([127, 0, 0, 3]), to).await;
    let mut header = template(0, ADDRESSES);
    header.extend_from_slice(&[0, 10, 0, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    short.write_all(&header).await.unwrap();
    // NetFlow v9 is not IPFIX; garbage after a good message is not a message boundary.
    let mut v9 = connect_from(IpAddr::from([127, 0, 0, 4]), to).await;
    v9.write_all(&[0, 9, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]).await.unwrap();
    let mut noise = connect_from(IpAddr::from([127, 0, 0, 5]), to).await;
    let mut bytes = addresses(0, 1);
    bytes.extend(std::iter::repeat_n(0xAB, 70_000));
    noise.write_all(&bytes).await.unwrap();
    // A message cut off by the end of the connection.
    let mut cut = connect_from(IpAddr::from([127, 0, 0, 6]), to).await;
    cut.write_all(&template(0, ADDRESSES)[..20]).await.unwrap();
    cut.shutdown().await.unwrap();

    for conn in [&mut short, &mut v9, &mut noise] {
        assert_closed_by_collector(conn).await;
    }
    wait_until("the broken sessions are counted", || {
        let s = listener0(&collector.counters()).sessions.clone();
        s.closed(close::FRAMING_ERROR) == 3 && s.closed(close::TRUNCATED) == 1
    })
    .await;
    good.write_all(&addresses(1, 42)).await.unwrap();
    wait_until("the good session still delivers", || recorder.len() == 1).await;

    let report = collector.shutdown().await.unwrap();
    assert_accounted(&report.counters);
    let flows = recorder.flows();
    assert_eq!(flows[0].1.sampler_address, flow_decode::address_bytes(good_ip));
    assert_eq!(flows[0].1.bytes, 42);
    let c = listener0(&report.counters);
    // good: 2, short: 1 template, noise: 1 data message before the noise.
    assert_eq!(c.datagrams_received, 4);
    assert_eq!(c.sessions.closed(close::SHUTDOWN), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stuck_pipeline_stops_reading_instead_of_dropping() {
    const CHANNEL: u64 = 8;
    const MESSAGES: u32 = 1_000;
    const RECORDS: u64 = 20;
    let recorder = Recorder::shut();
    let mut tiny = netflow_listener("flows.tcp", tcp());
    tiny.buffer_size = 1024;
    let mut s = settings(vec![tiny]);
    s.channel_size = CHANNEL as usize;
    let collector = start_real(s, &recorder).await;
    let to = collector.local_addrs()[0];

    let socket = TcpSocket::new_v4().unwrap();
    socket.set_send_buffer_size(4096).unwrap();
    let mut conn = socket.connect(to).await.unwrap();
    let records: Vec<Vec<u8>> =
        (0..RECORDS).map(|i| address_record([10, 0, 0, 1], [10, 0, 0, 2], i)).collect();
    let mut bytes = template(0, ADDRESSES);
    for sequence in 1..=MESSAGES {
        bytes.extend(message(sequence, &[data_set(256, &records)]));
    }
    let total_bytes = bytes.len();
    let writer = tokio::spawn(async move {
        conn.write_all(&bytes).await.unwrap();
        conn
    });

    wait_until("the pipeline is full", || {
        listener0(&collector.counters()).datagrams_in_flight == CHANNEL
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let stuck = collector.counters();
    let c = listener0(&stuck);
    assert!(
        !writer.is_finished(),
        "the exporter could write {total_bytes} bytes: nothing held it back"
    );
    assert_eq!(c.datagrams_in_flight, CHANNEL);
    assert!(c.datagrams_received < u64::from(MESSAGES), "{c:?}");
    assert_eq!(c.datagrams_dropped(), 0);

    recorder.release();
    let mut conn = tokio::time::timeout(Duration::from_secs(60), writer).await.unwrap().unwrap();
    let want = u64::from(MESSAGES) * RECORDS;
    wait_until("every flow is published", || recorder.len() as u64 == want).await;
    conn.shutdown().await.unwrap();
    let report = collector.shutdown().await.unwrap();
    assert_accounted(&report.counters);
    let c = listener0(&report.counters);
    assert_eq!(c.datagrams_received, u64::from(MESSAGES) + 1);
    assert_eq!(c.datagrams_dropped(), 0);
    assert_eq!(report.counters.publishers[0].counters.flows_published, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_session_is_closed_and_a_failed_listener_rebinds() {
    let recorder = Recorder::open();
    let collector =
        start_real(settings(vec![netflow_listener("flows.tcp", tcp())]), &recorder).await;
    let to = collector.local_addrs()[0];
    let ip = IpAddr::from([127, 0, 0, 2]);
    let mut a = connect_from(ip, to).await;
    a.write_all(&template(0, ADDRESSES)).await.unwrap();
    wait_until("the session is open", || listener0(&collector.counters()).exporters_live == 1)
        .await;

    assert!(collector.inject_fault(Fault::Exporter { listener: 0, exporter: ip }).await.unwrap());
    assert_closed_by_collector(&mut a).await;
    wait_until("the failed session is counted", || {
        listener0(&collector.counters()).sessions.closed(close::SESSION_FAILED) == 1
    })
    .await;

    assert!(collector.inject_fault(Fault::Listener(0)).await.unwrap());
    wait_until("the listener is restarted", || {
        listener0(&collector.counters()).listener_restarts == 1
    })
    .await;
    let mut b = loop {
        if let Ok(conn) = TcpStream::connect(to).await {
            break conn;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    b.write_all(&[template(0, ADDRESSES), addresses(1, 9)].concat()).await.unwrap();
    wait_until("the rebound listener delivers", || recorder.len() == 1).await;

    let report = collector.shutdown().await.unwrap();
    assert_accounted(&report.counters);
    assert_eq!(listener0(&report.counters).sessions.closed(close::SHUTDOWN), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_hands_on_what_sessions_read_then_closes_them() {
    const MESSAGES: u32 = 50;
    let recorder = Recorder::open();
    let collector =
        start_real(settings(vec![netflow_listener("flows.tcp", tcp())]), &recorder).await;
    let to = collector.local_addrs()[0];
    let mut conn = TcpStream::connect(to).await.unwrap();
    let mut bytes = template(0, ADDRESSES);
    for sequence in 1..=MESSAGES {
        bytes.extend(addresses(sequence, u64::from(sequence)));
    }
    conn.write_all(&bytes).await.unwrap();
    wait_until("every message is received", || {
        listener0(&collector.counters()).datagrams_received == u64::from(MESSAGES) + 1
    })
    .await;

    let report = collector.shutdown().await.unwrap();
    assert!(report.drained_cleanly);
    assert_accounted(&report.counters);
    assert_eq!(recorder.len(), MESSAGES as usize);
    assert_eq!(listener0(&report.counters).sessions.closed(close::SHUTDOWN), 1);
    assert_closed_by_collector(&mut conn).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn denied_peers_are_refused_at_accept() {
    let recorder = Recorder::open();
    let mut denying = netflow_listener("flows.tcp", tcp());
    denying.sources.deny = vec![flow_decode::prefix::parse_prefix("127.0.0.3").unwrap()];
    let collector = start_real(settings(vec![denying]), &recorder).await;
    let to = collector.local_addrs()[0];

    let mut denied = connect_from(IpAddr::from([127, 0, 0, 3]), to).await;
    let _ = denied.write_all(&[template(0, ADDRESSES), addresses(1, 1)].concat()).await;
    assert_closed_by_collector(&mut denied).await;
    let mut allowed = connect_from(IpAddr::from([127, 0, 0, 2]), to).await;
    allowed.write_all(&[template(0, ADDRESSES), addresses(1, 2)].concat()).await.unwrap();
    wait_until("the allowed peer delivers", || recorder.len() == 1).await;

    let report = collector.shutdown().await.unwrap();
    assert_accounted(&report.counters);
    let c = listener0(&report.counters);
    assert_eq!(c.sessions.refused.get(refusal::SOURCE_DENIED), Some(&1));
    assert_eq!((c.sessions.accepted, c.datagrams_received), (1, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partition_exporter_cap_also_bounds_its_sessions() {
    let recorder = Recorder::open();
    let mut s = settings(vec![netflow_listener("flows.tcp", tcp())]);
    s.registry = flow_actors::tenancy::Registry::new(vec![flow_actors::tenancy::RegistryEntry {
        prefix: flow_decode::prefix::parse_prefix("127.0.0.0/28").expect("a prefix"),
        partition: Some("acme".into()),
        ..Default::default()
    }]);
    let acme = flow_actors::PartitionLimits { max_exporters: Some(1), max_pps: None };
    s.partition_limits = [("acme".to_owned(), acme)].into();
    let collector = start_real(s, &recorder).await;
    let to = collector.local_addrs()[0];

    let _first = connect_from(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)), to).await;
    wait_until("acme's session is open", || listener0(&collector.counters()).sessions.live == 1)
        .await;
    let mut second = connect_from(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)), to).await;
    assert_closed_by_collector(&mut second).await;
    let refused = listener0(&collector.counters()).sessions.refused.clone();
    assert_eq!(refused.get(refusal::PARTITION_EXPORTER_CAP), Some(&1), "{refused:?}");
    let mut other = connect_from(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 40)), to).await;
    other.write_all(&[template(0, ADDRESSES), addresses(1, 5)].concat()).await.unwrap();
    wait_until("another partition's session still flows", || recorder.len() == 1).await;
    assert_eq!(collector.counters().partitions[0].exporters_live, 1);
}
