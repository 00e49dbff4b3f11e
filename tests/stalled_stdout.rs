//! Standard output that nobody reads (a log pipe whose reader stalled): the collector
//! keeps decoding and answering `/metrics`, and SIGTERM still ends it within the drain
//! deadline with every decoded flow accounted for as published or dropped; also when it
//! runs as a user the pipe does not belong to.

mod support;

use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use flow_replay::generate::{Protocol, Settings};
use flow_replay::load::{self, LoadPlan, Stop};
use serde_json::json;
use support::http::{free_tcp_port, metrics, sample};
use support::{Collector, TEST_BUFFER_SIZE, free_udp_port};

/// The value of `key=` in the log line containing `message`.
fn logged_count(logs: &str, message: &str, key: &str) -> u64 {
    logs.lines()
        .find(|line| line.contains(message))
        .and_then(|line| line.split_once(&format!("{key}="))?.1.split_whitespace().next())
        .and_then(|value| value.parse().ok())
        .unwrap_or_else(|| panic!("no {key}= on a {message:?} line:\n{logs}"))
}

#[test]
fn a_stdout_nobody_reads_holds_up_neither_decoding_nor_metrics_nor_shutdown() {
    assert_a_stalled_stdout_holds_nothing_up(None);
}

/// A collector running as a user the pipe does not belong to (a container runtime made
/// it; the collector runs as non-root) may not reopen it, and makes it non-blocking
/// where it is. The build before this test stopped on the scrape and never exited.
#[test]
fn a_stdout_pipe_of_another_user_nobody_reads_holds_nothing_up_either() {
    if std::fs::metadata("/proc/self").map(|m| m.uid()).ok() != Some(0) {
        eprintln!("skipped: running the collector as another user needs root");
        return;
    }
    assert_a_stalled_stdout_holds_nothing_up(Some(NOBODY));
}

/// The uid of `nobody` on Debian.
const NOBODY: u32 = 65534;

/// Sends 1,000 datagrams to a collector whose stdout is never read, then checks that it
/// decoded them all, answered `/metrics`, and ended on SIGTERM within the drain deadline
/// with every flow accounted for.
fn assert_a_stalled_stdout_holds_nothing_up(uid: Option<u32>) {
    let udp = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    let http = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
    let config = json!({
        "metrics_addr": http.to_string(),
        "listeners": [{
            "protocol": "netflow",
            "listen_addr": udp.to_string(),
            "buffer_size": TEST_BUFFER_SIZE,
        }],
    });
    let collector = Collector::start_unread(&config, vec![udp], uid);
    // 28 flows a datagram, about 1 KiB of JSON each: 30 MB against a pipe of 1 MiB at most.
    let sent = load::run(&LoadPlan {
        target: udp,
        exporters: 2,
        settings: Settings::new(Protocol::V9),
        rate: Some(2_000.0),
        stop: Stop::Count(1_000),
        burst: 1,
        threads: 1,
    })
    .unwrap_or_else(|e| panic!("load: {e}"));

    let listener = format!("{{listener=\"netflow@{udp}\",partition=\"default\"}}");
    let decoded_series = format!("flow_collector_flows_decoded_total{listener}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while sample(&metrics(http), &decoded_series) < sent.records && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    let scrape = metrics(http);
    assert_eq!(
        sample(&scrape, &format!("flow_collector_datagrams_received_total{listener}")),
        sent.datagrams
    );
    assert_eq!(sample(&scrape, &decoded_series), sent.records, "decoding went on");
    let published = sample(
        &scrape,
        "flow_collector_flows_published_total{subject=\"flows.raw.netflow\",partition=\"default\"}",
    );
    assert!(published < sent.records, "a pipe of 1 MiB cannot hold {} flows", sent.records);

    let stopping = Instant::now();
    let finished = collector.stop();
    let took = stopping.elapsed();
    let logs = finished.logs.join("\n");
    assert!(finished.status.success(), "{:?}:\n{logs}", finished.status);
    assert!(
        took < flow_actors::DRAIN_TIMEOUT + Duration::from_secs(5),
        "SIGTERM took {took:?} to end the collector:\n{logs}"
    );
    let decoded = logged_count(&logs, "Collector stopped", "flows_decoded");
    let dropped = logged_count(&logs, "Collector stopped", "flows_dropped");
    assert_eq!(decoded, sent.records);
    assert_eq!(logged_count(&logs, "Collector stopped", "flows_published") + dropped, decoded);
    assert!(dropped > 0, "what the pipe did not take is counted as dropped:\n{logs}");
    assert!(logs.contains("Drain timed out"), "{logs}");
}
