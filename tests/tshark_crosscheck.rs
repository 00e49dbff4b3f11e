//! Real exporters against the real collector, with tshark as an independent decoder.
//!
//! softflowd (and pmacct) meter a generated traffic capture and export NetFlow v5, v9
//! and IPFIX to a UDP socket owned by this test. The recorded datagrams are written
//! into a pcap that tshark decodes, then replayed to one running collector, each
//! exporter run from its own loopback address at the same time. Every field tshark
//! decoded must match the collector's JSON for the same flow. The shared router
//! captures get the same treatment.

mod support;

use std::fs::File;
use std::net::{IpAddr, Ipv4Addr, UdpSocket};
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use flow_replay::write::write_pcap_file;
use flow_replay::{SourcePlan, UdpDatagram, read_file};
use serde_json::{Value, json};
use support::tshark::{self, Expect, Options, Record};
use support::{Collector, have, replay_concurrently, shared_captures, shared_pcaps, traffic};

/// Replay pace per exporter: fast enough, gentle on the collector's socket buffer.
const PPS: u32 = 1_000;
/// How long the collector may take to print every expected flow.
const FLOW_TIMEOUT: Duration = Duration::from_secs(60);
/// Quiet time after the last expected flow, to catch extra ones.
const SETTLE: Duration = Duration::from_millis(750);
/// How long an exporter may take to meter the traffic capture.
const TOOL_TIMEOUT: Duration = Duration::from_secs(60);

/// One exporter's datagrams, what tshark made of them, and where they are replayed from.
struct Job {
    name: String,
    datagrams: Vec<UdpDatagram>,
    records: Vec<Record>,
    source: IpAddr,
}

/// A softflowd configuration to run.
struct Variant {
    name: &'static str,
    args: &'static [&'static str],
    biflow: bool,
}

/// No sampled v9: softflowd 1.1.0 then writes a header count below the records it sends,
/// and tshark stops decoding at the count (the collector, rightly, decodes by length).
const SOFTFLOWD: &[Variant] = &[
    Variant { name: "v5", args: &["-v", "5", "-a"], biflow: false },
    Variant { name: "v5-sampled", args: &["-v", "5", "-s", "4", "-a"], biflow: false },
    Variant { name: "v9", args: &["-v", "9", "-a"], biflow: false },
    Variant { name: "ipfix-uptime", args: &["-v", "10", "-a"], biflow: false },
    Variant { name: "ipfix-sampled", args: &["-v", "10", "-s", "4", "-a"], biflow: false },
    Variant { name: "ipfix-milli", args: &["-v", "10", "-A", "milli"], biflow: false },
    Variant { name: "ipfix-micro", args: &["-v", "10", "-A", "micro"], biflow: false },
    Variant { name: "ipfix-nano", args: &["-v", "10", "-A", "nano"], biflow: false },
    Variant { name: "ipfix-biflow", args: &["-v", "10", "-b", "-a"], biflow: true },
];

#[test]
fn softflowd_exports_match_tshark() {
    if !have("tshark") || !have("softflowd") {
        eprintln!("SKIP: tshark or softflowd not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let traffic = dir.path().join("traffic.pcap");
    traffic::write_traffic_pcap(&traffic);
    let jobs: Vec<Job> = SOFTFLOWD
        .iter()
        .enumerate()
        .map(|(k, variant)| {
            let work = dir.path().join(variant.name);
            std::fs::create_dir(&work).unwrap_or_else(|e| panic!("{}: {e}", work.display()));
            let datagrams = record_exporter(|port| softflowd(&traffic, &work, port, variant.args));
            let options = Options { biflow: variant.biflow };
            let records = tshark_records(&work, &datagrams, options);
            assert!(!records.is_empty(), "{}: tshark decoded no flow", variant.name);
            Job {
                name: format!("softflowd {}", variant.name),
                datagrams,
                records,
                source: source_ip(1, k),
            }
        })
        .collect();
    let problems = replay_and_compare(jobs);
    assert!(problems.is_empty(), "collector vs tshark:\n{}", problems.join("\n"));
}

/// The test's own arithmetic (tshark field mapping, sysUpTime and absolute times)
/// against the generated traffic's known truth, before any collector is involved.
#[test]
fn tshark_records_of_softflowd_exports_match_the_generated_traffic() {
    if !have("tshark") || !have("softflowd") {
        eprintln!("SKIP: tshark or softflowd not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let traffic = dir.path().join("traffic.pcap");
    traffic::write_traffic_pcap(&traffic);
    // The HTTPS client's flow: 6 packets, 757 bytes, SYN|ACK|PSH|FIN, first packet at the
    // capture's start and the last 421.9 ms later (exporters keep milliseconds).
    let start_ns = traffic::START.as_nanos() as u64;
    let client = [
        ("src_addr", json!("10.1.0.1")),
        ("dst_addr", json!("10.2.0.1")),
        ("src_port", json!(40001)),
        ("dst_port", json!(443)),
        ("proto", json!(6)),
        ("bytes", json!(757)),
        ("packets", json!(6)),
        ("tcp_flags", json!(0x1B)),
    ];
    for args in [&["-v", "5", "-a"][..], &["-v", "10", "-a"], &["-v", "10", "-A", "milli"]] {
        let work = dir.path().join(args.join(""));
        std::fs::create_dir(&work).unwrap_or_else(|e| panic!("{}: {e}", work.display()));
        let datagrams = record_exporter(|port| softflowd(&traffic, &work, port, args));
        let records = tshark_records(&work, &datagrams, Options::default());
        let found = records.iter().find(|r| {
            client.iter().take(2).all(|(k, v)| r.fields.get(k) == Some(&Expect::Exact(v.clone())))
        });
        let record = found.unwrap_or_else(|| panic!("{args:?}: no record of the HTTPS client"));
        for (field, value) in &client {
            assert_eq!(
                record.fields.get(field),
                Some(&Expect::Exact(value.clone())),
                "{args:?} {field}"
            );
        }
        let near = |field: &str, want: u64| match record.fields.get(field) {
            Some(Expect::TimeNs(ns)) => ns.abs_diff(want) <= tshark::TIME_TOLERANCE_NS,
            _ => false,
        };
        assert!(near("time_flow_start_ns", start_ns), "{args:?}: {:?}", record.fields);
        assert!(near("time_flow_end_ns", start_ns + 421_000_000), "{args:?}: {:?}", record.fields);
    }
}

#[test]
fn pmacct_exports_match_tshark() {
    if !have("tshark") || !have("pmacctd") {
        eprintln!("SKIP: tshark or pmacctd not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
    let traffic = dir.path().join("traffic.pcap");
    traffic::write_traffic_pcap(&traffic);
    let jobs: Vec<Job> = ["5", "9", "10"]
        .iter()
        .enumerate()
        .map(|(k, version)| {
            let work = dir.path().join(format!("nfprobe-v{version}"));
            std::fs::create_dir(&work).unwrap_or_else(|e| panic!("{}: {e}", work.display()));
            let datagrams = record_exporter(|port| pmacctd(&traffic, &work, port, version));
            let records = tshark_records(&work, &datagrams, Options::default());
            assert!(!records.is_empty(), "pmacct v{version}: tshark decoded no flow");
            let name = format!("pmacct nfprobe v{version}");
            Job { name, datagrams, records, source: source_ip(3, k) }
        })
        .collect();
    let problems = replay_and_compare(jobs);
    assert!(problems.is_empty(), "collector vs tshark:\n{}", problems.join("\n"));
}

#[test]
fn shared_captures_match_tshark() {
    if !have("tshark") {
        eprintln!("SKIP: tshark not installed");
        return;
    }
    let jobs: Vec<Job> = shared_captures()
        .iter()
        .enumerate()
        .map(|(k, path)| {
            let capture = read_file(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let port = capture.datagrams.first().map_or(0, |d| d.destination.port());
            let records = tshark::decode(path, port, Options::default());
            let name = path.strip_prefix(shared_pcaps()).unwrap_or(path).display().to_string();
            Job { name, datagrams: capture.datagrams, records, source: source_ip(2, k) }
        })
        .collect();
    let problems = replay_and_compare(jobs);
    assert!(problems.is_empty(), "collector vs tshark:\n{}", problems.join("\n"));
}

/// The loopback source address of job `k` in test group `group`: 127.0.group.(k+1).
fn source_ip(group: u8, k: usize) -> IpAddr {
    let host = u8::try_from(k + 1).unwrap_or_else(|_| panic!("too many jobs"));
    IpAddr::V4(Ipv4Addr::new(127, 0, group, host))
}

/// Runs `export(port)` (an exporter sending to 127.0.0.1:port) and returns every
/// datagram that arrived on that port.
fn record_exporter(export: impl FnOnce(u16)) -> Vec<UdpDatagram> {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
    let local = socket.local_addr().unwrap_or_else(|e| panic!("local_addr: {e}"));
    export(local.port());
    socket.set_read_timeout(Some(Duration::from_millis(500))).unwrap_or_else(|e| panic!("{e}"));
    let mut buf = vec![0u8; 65_535];
    let mut datagrams = Vec::new();
    while let Ok((len, from)) = socket.recv_from(&mut buf) {
        datagrams.push(UdpDatagram {
            source: from,
            destination: local,
            timestamp: SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default(),
            payload: buf[..len].to_vec(),
        });
    }
    assert!(!datagrams.is_empty(), "the exporter sent nothing");
    datagrams
}

/// Runs softflowd over `traffic`, exporting to 127.0.0.1:`port`, until it exits.
fn softflowd(traffic: &Path, work: &Path, port: u16, args: &[&str]) {
    let mut command = Command::new("softflowd");
    command
        .arg("-r")
        .arg(traffic)
        // No control socket: in -r mode softflowd 1.1.0 reads its poll state
        // uninitialised and may block in accept() on it forever.
        .args(["-n", &format!("127.0.0.1:{port}"), "-P", "udp", "-d", "-c", "none"])
        .args(args);
    run_to_exit(command, &format!("softflowd {args:?}"), &work.join("softflowd.log"), None);
}

/// Runs pmacctd's nfprobe plugin over `traffic`, exporting NetFlow `version` to
/// 127.0.0.1:`port`, until it exits at the end of the file.
fn pmacctd(traffic: &Path, work: &Path, port: u16, version: &str) {
    let config = work.join("pmacctd.conf");
    let text = format!(
        "daemonize: false\npcap_savefile: {}\nplugins: nfprobe\n\
         nfprobe_receiver: 127.0.0.1:{port}\nnfprobe_version: {version}\n",
        traffic.display()
    );
    std::fs::write(&config, text).unwrap_or_else(|e| panic!("{}: {e}", config.display()));
    let mut command = Command::new("pmacctd");
    command.arg("-f").arg(&config);
    // pmacctd's core may see its plugin exit first and then exits 1, after the plugin
    // has flushed every flow: that is a finished run too.
    let flushed = "( default_nfprobe/nfprobe ): Shutting down on user request";
    let what = format!("pmacctd nfprobe v{version}");
    run_to_exit(command, &what, &work.join("pmacctd.log"), Some(flushed));
}

/// Runs `command` to its end (killing it after [`TOOL_TIMEOUT`]), its output going to
/// `log`, and asserts success, or that the log holds `done_line` when given.
fn run_to_exit(mut command: Command, what: &str, log: &Path, done_line: Option<&str>) {
    let file = File::create(log).unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    let file2 = file.try_clone().unwrap_or_else(|e| panic!("{}: {e}", log.display()));
    let mut child = command
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(file2)
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    let deadline = Instant::now() + TOOL_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(50)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{what} did not finish within {TOOL_TIMEOUT:?}");
            }
            Err(e) => panic!("{what}: {e}"),
        }
    };
    let output = std::fs::read_to_string(log).unwrap_or_default();
    let done = done_line.is_some_and(|line| output.contains(line));
    assert!(status.success() || done, "{what} failed ({status}): {output}");
}

/// Writes `datagrams` into a pcap under `work` and decodes it with tshark.
fn tshark_records(work: &Path, datagrams: &[UdpDatagram], options: Options) -> Vec<Record> {
    let pcap = work.join("export.pcap");
    write_pcap_file(&pcap, datagrams).unwrap_or_else(|e| panic!("{}: {e}", pcap.display()));
    let port = datagrams.first().map_or(0, |d| d.destination.port());
    tshark::decode(&pcap, port, options)
}

/// Replays every job at once to one collector, each from its own source address, and
/// returns every difference between the collector's flows and tshark's records.
fn replay_and_compare(mut jobs: Vec<Job>) -> Vec<String> {
    for job in &mut jobs {
        let exporter = Expect::Exact(json!(job.source.to_string()));
        for record in &mut job.records {
            record.fields.insert("sampler_address", exporter.clone());
        }
    }
    let collector = Collector::start_netflow();
    let plans = jobs.iter().map(|j| (SourcePlan::Addresses(vec![j.source]), &j.datagrams[..]));
    replay_concurrently(collector.addr(), plans.collect(), PPS);
    let expected: usize = jobs.iter().map(|j| j.records.len()).sum();
    collector.wait_for_lines(expected, FLOW_TIMEOUT, SETTLE);
    let finished = collector.stop();
    assert!(
        finished.status.success(),
        "collector exit {}:\n{}",
        finished.status,
        finished.logs.join("\n")
    );
    let mut problems = Vec::new();
    for job in &jobs {
        let source = json!(job.source.to_string());
        let flows: Vec<Value> =
            finished.flows.iter().filter(|f| f["sampler_address"] == source).cloned().collect();
        if flows.len() != job.records.len() {
            problems.push(format!(
                "{}: {} flows from {}, tshark decoded {}",
                job.name,
                flows.len(),
                job.source,
                job.records.len()
            ));
        }
        let found = tshark::match_all(&job.records, &flows);
        eprintln!(
            "{}: {} datagrams, {} records decoded by tshark, {} flows from the collector, {} problems",
            job.name,
            job.datagrams.len(),
            job.records.len(),
            flows.len(),
            found.len()
        );
        problems.extend(found.into_iter().map(|p| format!("{}: {p}", job.name)));
    }
    problems
}
