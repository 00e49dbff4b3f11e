//! The collector binary publishing the shared captures to a real nats-server: the stream
//! holds exactly what `--stdout` prints, SIGTERM under load leaves everything in the
//! stream and exits 0, NATS coming up late loses nothing, a wrong CA is fatal and named.

mod jetstream_support;
#[path = "../publish/tests/support/mod.rs"]
mod nats;
mod support;

use std::net::SocketAddr;
use std::time::Duration;

use jetstream_support::*;
use prost::Message;
use serde_json::json;

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Replays the captures `loops` times from a blocking thread.
async fn replay_captures(addr: SocketAddr, loops: u32, pps: u32) -> u64 {
    let datagrams = shared_datagrams();
    tokio::task::spawn_blocking(move || replay(addr, &datagrams, loops, pps))
        .await
        .expect("replay thread")
}

/// After exit 0 with a clean drain: every decoded flow was published, none dropped,
/// and the stream holds exactly the published ones.
async fn assert_all_published(exited: &Exited, url: &str) -> u64 {
    assert!(exited.status.success(), "exit {:?}:\n{}", exited.status, exited.log_text());
    let counters = exited.final_counters();
    assert_eq!(counters.get("drained_cleanly").map(String::as_str), Some("true"), "{counters:?}");
    let decoded = exited.counter("flows_decoded");
    assert!(decoded > 0, "{counters:?}");
    assert_eq!(exited.counter("flows_published"), decoded, "{counters:?}");
    assert_eq!(exited.counter("flows_dropped"), 0, "{counters:?}");
    assert_eq!(stream_len(url).await, decoded, "the stream holds what was published, once");
    decoded
}

/// The captures through the same binary and config forced to `--stdout`: the flows, in
/// comparable form, sorted.
async fn stdout_reference(config: &serde_json::Value, addr: SocketAddr) -> Vec<String> {
    let printer = Running::start(config, &["--stdout"]);
    replay_captures(addr, 1, 5_000).await;
    let mut seen = 0;
    while seen == 0 || printer.stdout_lines() != seen {
        seen = printer.stdout_lines();
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let printed = printer.stop();
    assert!(printed.status.success(), "{}", printed.log_text());
    let mut expected: Vec<String> = printed.stdout.iter().map(|l| comparable(l)).collect();
    expected.sort();
    expected
}

/// `--discard-flows` (the benchmark's null sink) decodes and counts every flow of the
/// captures, as many as `--stdout` prints, and neither publishes nor prints one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discard_flows_counts_every_flow_and_publishes_and_prints_none() {
    let (_server, url) = nats_server();
    let addr = local(free_udp_port());
    let printed = stdout_reference(&jetstream_config(&url, addr), addr).await.len() as u64;

    let (addr, metrics_addr) = (local(free_udp_port()), local(support::http::free_tcp_port()));
    let mut config = jetstream_config(&url, addr);
    config["metrics_addr"] = json!(metrics_addr.to_string());
    let discarding = Running::start(&config, &["--discard-flows"]);
    replay_captures(addr, 1, 5_000).await;
    let decoded = || {
        let scrape = support::http::metrics(metrics_addr);
        support::http::sum_with_label(&scrape, "flow_collector_flows_decoded_total", "")
    };
    let mut last = 0;
    for _ in 0..60 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = decoded();
        if now == printed || (now == last && now > 0) {
            break;
        }
        last = now;
    }
    let exited = discarding.stop();
    assert!(exited.status.success(), "exit {:?}:\n{}", exited.status, exited.log_text());
    assert!(exited.log_text().contains("flows are decoded and counted, then discarded"));
    assert_eq!(exited.counter("flows_decoded"), printed, "{:?}", exited.final_counters());
    assert_eq!(exited.counter("flows_published"), printed, "counted as published");
    assert_eq!(exited.counter("flows_dropped"), 0);
    assert!(exited.stdout.is_empty(), "printed {} lines", exited.stdout.len());
    assert_eq!(stream_len(&url).await, 0, "--discard-flows must not publish");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_holds_exactly_what_stdout_prints_for_the_captures() {
    let (_server, url) = nats_server();
    let addr = local(free_udp_port());
    let expected = stdout_reference(&jetstream_config(&url, addr), addr).await;
    assert_eq!(stream_len(&url).await, 0, "--stdout must not publish");

    let addr = local(free_udp_port());
    let publisher = Running::start(&jetstream_config(&url, addr), &[]);
    replay_captures(addr, 1, 5_000).await;
    let stored = wait_stream_len(&url, expected.len() as u64).await;
    let exited = publisher.stop();
    assert_all_published(&exited, &url).await;
    assert_eq!(stored, expected.len() as u64);
    let in_stream = stream_as_json(&url).await;
    assert_eq!(in_stream.len(), expected.len());
    for (got, want) in in_stream.iter().zip(&expected) {
        assert_eq!(got, want, "the stream and stdout disagree");
    }
    let encoded: usize = stored_flows(&url).await.iter().map(|(f, n)| f.encoded_len() * n).sum();
    eprintln!(
        "{} flows, {} encoded bytes each on average",
        expected.len(),
        encoded / expected.len()
    );
}

/// `publish_framing: "delimited"`: many length-delimited flows per message; the flows
/// read back out of the frames are exactly what stdout prints, and far fewer messages
/// carry them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delimited_framing_carries_the_same_flows_in_fewer_messages() {
    let (_server, url) = nats_server();
    let addr = local(free_udp_port());
    let mut config = jetstream_config(&url, addr);
    config["publish_framing"] = json!("delimited");
    let expected = stdout_reference(&config, addr).await;

    let addr = local(free_udp_port());
    config["listeners"][0]["listen_addr"] = json!(addr.to_string());
    let publisher = Running::start(&config, &[]);
    replay_captures(addr, 1, 5_000).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while stream_len(&url).await == 0 || stored_delimited_flows(&url).await.len() < expected.len() {
        assert!(tokio::time::Instant::now() < deadline, "the flows never all arrived");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let exited = publisher.stop();
    assert!(exited.status.success(), "exit {:?}:\n{}", exited.status, exited.log_text());
    assert_eq!(exited.counter("flows_published"), expected.len() as u64);
    assert_eq!(exited.counter("flows_dropped"), 0);
    let mut got: Vec<String> = stored_delimited_flows(&url)
        .await
        .iter()
        .map(|flow| comparable(&flowpb::json::to_json_line(flow)))
        .collect();
    got.sort();
    assert_eq!(got, expected, "the frames and stdout disagree");
    let messages = stream_len(&url).await;
    assert!(messages < expected.len() as u64 / 2, "{messages} messages for {} flows", got.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_publishes_everything_buffered_and_exits_0() {
    let (_server, url) = nats_server();
    let addr = local(free_udp_port());
    let collector = Running::start(&jetstream_config(&url, addr), &[]);
    collector.wait_log("JetStream stream ready");

    let load = tokio::spawn(replay_captures(addr, 200, 20_000));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let exited = collector.stop();
    let sent = load.await.expect("load");
    assert!(sent > 0);
    let published = assert_all_published(&exited, &url).await;
    let log = exited.log_text();
    assert!(log.contains("SIGTERM received"), "{log}");
    eprintln!("{published} flows published before exit, {sent} datagrams sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flows_received_while_nats_is_down_at_start_up_are_delivered_when_it_comes_up() {
    let port = nats::free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let addr = local(free_udp_port());
    let collector = Running::start(&jetstream_config(&url, addr), &[]);
    collector.wait_log("NATS not reachable");
    replay_captures(addr, 1, 5_000).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let _server = nats::NatsServer::start_on(port, "");
    collector.wait_log("JetStream stream ready");
    wait_stream_len(&url, 1).await;
    let exited = collector.stop();
    assert_all_published(&exited, &url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_cannot_be_drained_is_counted_and_the_exit_is_still_0() {
    let url = format!("nats://127.0.0.1:{}", nats::free_port());
    let addr = local(free_udp_port());
    let collector = Running::start(&jetstream_config(&url, addr), &[]);
    replay_captures(addr, 1, 5_000).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let exited = collector.stop();

    assert!(exited.status.success(), "{}", exited.log_text());
    let decoded = exited.counter("flows_decoded");
    assert!(decoded > 0);
    assert_eq!(exited.counter("flows_published"), 0);
    assert_eq!(exited.counter("flows_dropped"), decoded, "every undelivered flow is counted");
    let log = exited.log_text();
    assert!(log.contains("Drain timed out, dropping pending flows"), "{log}");
    assert!(log.contains("drain_timeout"), "{log}");
}

/// A server requiring TLS with client certificates, and a collector config for it whose
/// files (relative names) live in the certificate directory.
struct Mtls {
    certs: tempfile::TempDir,
    server: nats::NatsServer,
}

impl Mtls {
    fn start() -> Mtls {
        let certs = tempfile::tempdir().expect("cert dir");
        let trusted = nats::TestPki::new(certs.path(), "trusted");
        nats::TestPki::new(certs.path(), "other");
        let (server_cert, server_key) = trusted.issue(certs.path(), "server", true);
        trusted.issue(certs.path(), "collector", false);
        let tls = format!(
            "tls {{\n  cert_file: \"{}\"\n  key_file: \"{}\"\n  ca_file: \"{}\"\n  verify: true\n  timeout: 2\n}}",
            server_cert.display(),
            server_key.display(),
            trusted.ca_file.display()
        );
        Mtls { server: nats::NatsServer::start_with(&tls), certs }
    }

    fn config(&self, addr: SocketAddr, ca_file: &str) -> serde_json::Value {
        let mut config = jetstream_config(&format!("tls://127.0.0.1:{}", self.server.port), addr);
        config["security"] = json!({
            "mode": "mtls",
            "cert_dir": self.certs.path(),
            "tls": { "cert_file": "collector.pem", "key_file": "collector-key.pem", "ca_file": ca_file },
        });
        config
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mtls_with_files_under_cert_dir_publishes() {
    let mtls = Mtls::start();
    let addr = local(free_udp_port());
    let collector = Running::start(&mtls.config(addr, "trusted-ca.pem"), &[]);
    collector.wait_log("JetStream stream ready");
    replay_captures(addr, 1, 5_000).await;
    let url = mtls.server.url();
    let inspector = async_nats::ConnectOptions::new()
        .add_root_certificates(mtls.certs.path().join("trusted-ca.pem"))
        .add_client_certificate(
            mtls.certs.path().join("collector.pem"),
            mtls.certs.path().join("collector-key.pem"),
        )
        .require_tls(true)
        .connect(url.as_str())
        .await
        .expect("inspector connects with mTLS");
    let js = async_nats::jetstream::new(inspector);
    let deadline = tokio::time::Instant::now() + DELIVERY_TIMEOUT;
    let count = loop {
        let mut stream = js.get_stream(STREAM).await.expect("stream exists");
        let count = stream.info().await.expect("stream info").state.messages;
        if count > 0 || tokio::time::Instant::now() > deadline {
            break count;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let exited = collector.stop();
    assert!(exited.status.success(), "{}", exited.log_text());
    let mut stream = js.get_stream(STREAM).await.expect("stream exists");
    let stored = stream.info().await.expect("stream info").state.messages;
    assert!(count > 0);
    assert_eq!(stored, exited.counter("flows_decoded"));
    assert_eq!(exited.counter("flows_published"), stored);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_ca_exits_1_naming_the_ca_file() {
    let mtls = Mtls::start();
    let addr = local(free_udp_port());
    let exited = Running::spawn(&mtls.config(addr, "other-ca.pem"), &[]).wait_exit();

    assert_eq!(exited.status.code(), Some(1), "{}", exited.log_text());
    let log = exited.log_text();
    let bound = log.find("listener bound").expect("listeners bound before connecting");
    let ca = mtls.certs.path().join("other-ca.pem");
    let refused = log
        .find(&format!("is not trusted by CA file {}", ca.display()))
        .unwrap_or_else(|| panic!("the CA is not named:\n{log}"));
    assert!(bound < refused, "{log}");
    assert!(log.contains("security.tls.ca_file"), "the fix is named:\n{log}");
}
