//! IPFIX over TCP and over TLS through the real binary, configured from a file: every
//! IPFIX capture sent over TCP (one connection per original exporter, from its own
//! loopback address) gives exactly NetGauze's reference flows; over TLS a good client
//! certificate names the exporter in the logs and in `/metrics`, an unknown one is
//! refused, logged with the peer address and counted; a real exporter (softflowd
//! `-P tcp`) gives the same flows over TCP as over UDP; a bad certificate path in the
//! config is an error naming the key, before anything is bound.

mod support;

#[path = "../decode/tests/support/reference.rs"]
mod reference;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use flow_replay::read_file;
use reference::{ExpectedFlow, ReferenceStream, compare, to_object};
use serde_json::{Value, json};
use support::http::{free_tcp_port, metrics, sample};
use support::{Collector, collector_binary, free_udp_port, have, shared_pcaps, traffic};
use tokio::io::AsyncWriteExt;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::crypto::ring;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

/// How long the collector may take to print every expected flow.
const FLOW_TIMEOUT: Duration = Duration::from_secs(60);
/// Quiet time after the last expected flow, to catch extra ones.
const SETTLE: Duration = Duration::from_millis(750);

/// One original exporter of an IPFIX capture: its messages and reference flows, in order.
struct ExporterStream {
    name: String,
    messages: Vec<Vec<u8>>,
    expected: Vec<ExpectedFlow>,
}

/// Every exporter (capture, source address and port) of the captures named IPFIX.
fn ipfix_exporters() -> Vec<ExporterStream> {
    let mut captures: Vec<PathBuf> = std::fs::read_dir(shared_pcaps())
        .unwrap_or_else(|e| panic!("{e}"))
        .flatten()
        .filter(|d| d.file_name().to_string_lossy().contains("IPFIX"))
        .flat_map(|d| std::fs::read_dir(d.path()).unwrap_or_else(|e| panic!("{e}")).flatten())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "pcap"))
        .collect();
    captures.sort();
    captures.iter().flat_map(|pcap| capture_exporters(pcap)).collect()
}

fn capture_exporters(pcap: &Path) -> Vec<ExporterStream> {
    let datagrams = read_file(pcap).unwrap_or_else(|e| panic!("{}: {e}", pcap.display())).datagrams;
    let stem = pcap.file_stem().and_then(|s| s.to_str()).unwrap_or_default();
    let reference_path = pcap.with_file_name(format!("{stem}-flow.json"));
    let reference = std::fs::read_to_string(&reference_path)
        .unwrap_or_else(|e| panic!("{}: {e}", reference_path.display()));
    let mut stream = ReferenceStream::default();
    let mut exporters: BTreeMap<SocketAddr, ExporterStream> = BTreeMap::new();
    for (datagram, line) in datagrams.iter().zip(reference.lines()) {
        let flows = stream
            .next_packet(&datagram.source.ip().to_string(), line)
            .unwrap_or_else(|e| panic!("{}: {e}", reference_path.display()));
        if !datagram.payload.starts_with(&[0, 10]) {
            continue; // NetFlow v9 of a mixed capture: UDP only.
        }
        let exporter = exporters.entry(datagram.source).or_insert_with(|| ExporterStream {
            name: format!("{} from {}", pcap.display(), datagram.source),
            messages: Vec::new(),
            expected: Vec::new(),
        });
        exporter.messages.push(datagram.payload.clone());
        exporter.expected.extend(flows);
    }
    exporters.into_values().collect()
}

/// Compares one exporter's flows with its reference flows (any order within it).
fn check(name: &str, expected: &[ExpectedFlow], flows: &[&Value]) -> Vec<String> {
    let mut problems = Vec::new();
    if flows.len() != expected.len() {
        problems.push(format!("{name}: {} flows, reference has {}", flows.len(), expected.len()));
    }
    let mut used = vec![false; flows.len()];
    for want in expected {
        match (0..flows.len()).find(|&i| !used[i] && compare(want, flows[i]).is_ok()) {
            Some(i) => used[i] = true,
            None => problems.push(format!("{name}: no flow matches {}", to_object(want))),
        }
    }
    problems
}

/// A CA and certificates it signs, as PEM files.
struct Pki {
    ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    ca_file: PathBuf,
}

impl Pki {
    fn new(dir: &Path, name: &str) -> Pki {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, format!("{name} CA"));
        let ca = rcgen::CertifiedIssuer::self_signed(params, rcgen::KeyPair::generate().unwrap())
            .unwrap();
        let ca_file = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&ca_file, ca.pem()).unwrap();
        Pki { ca, ca_file }
    }

    /// `<name>.pem` and `<name>-key.pem`: a server certificate for 127.0.0.1, or a client
    /// certificate with common name `name`.
    fn issue(&self, dir: &Path, name: &str, server: bool) -> (PathBuf, PathBuf) {
        let sans = if server { vec!["127.0.0.1".to_owned()] } else { Vec::new() };
        let mut params = rcgen::CertificateParams::new(sans).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let files = (dir.join(format!("{name}.pem")), dir.join(format!("{name}-key.pem")));
        std::fs::write(&files.0, cert.pem()).unwrap();
        std::fs::write(&files.1, key.serialize_pem()).unwrap();
        files
    }
}

fn client_config(server_ca: &Path, client: &(PathBuf, PathBuf)) -> Arc<ClientConfig> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_file_iter(server_ca).unwrap() {
        roots.add(cert.unwrap()).unwrap();
    }
    let chain: Vec<_> =
        CertificateDer::pem_file_iter(&client.0).unwrap().map(Result::unwrap).collect();
    let key = PrivateKeyDer::from_pem_file(&client.1).unwrap();
    let config = ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    Arc::new(config)
}

/// Sends `bytes` over TCP from `local` to `to`, in uneven pieces, and closes.
async fn send_tcp(local: IpAddr, to: SocketAddr, bytes: &[u8]) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(local, 0)).unwrap();
    let mut conn = socket.connect(to).await.unwrap();
    for piece in bytes.chunks(997) {
        conn.write_all(piece).await.unwrap();
    }
    conn.shutdown().await.unwrap();
}

type TlsConn = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// Sends `bytes` over TLS to `to` as the holder of `config`'s client certificate and
/// returns the connection, still open.
async fn send_tls(
    to: SocketAddr,
    config: Arc<ClientConfig>,
    bytes: &[u8],
) -> std::io::Result<TlsConn> {
    let tcp = tokio::net::TcpStream::connect(to).await?;
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let mut conn = TlsConnector::from(config).connect(name, tcp).await?;
    conn.write_all(bytes).await?;
    conn.flush().await?;
    Ok(conn)
}

/// Whether the collector closed `conn` (a refused TLS 1.3 client learns it when it reads).
async fn closed_by_collector(conn: &mut TlsConn) -> bool {
    let mut buf = [0u8; 16];
    let read = tokio::io::AsyncReadExt::read(conn, &mut buf);
    matches!(tokio::time::timeout(Duration::from_secs(10), read).await, Ok(Ok(0) | Err(_)))
}

#[test]
fn ipfix_over_tcp_and_tls_match_the_reference_and_tls_names_the_exporter() {
    let exporters = ipfix_exporters();
    assert!(exporters.len() >= 5, "expected the IPFIX captures, found {}", exporters.len());
    let dir = tempfile::tempdir().unwrap();
    let servers = Pki::new(dir.path(), "servers");
    let routers = Pki::new(dir.path(), "routers");
    let strangers = Pki::new(dir.path(), "strangers");
    servers.issue(dir.path(), "collector", true);
    let good = routers.issue(dir.path(), "edge-router-1", false);
    // The same name, from a CA the collector does not trust (its own directory).
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    let stranger = strangers.issue(&elsewhere, "edge-router-1", false);

    let udp = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    let tcp = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
    let tls = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
    let http = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
    let config = json!({
        "metrics_addr": http.to_string(),
        // mode "none": no NATS here; cert_dir is where the listener's relative names resolve.
        "security": { "mode": "none", "cert_dir": dir.path() },
        "listeners": [
            { "protocol": "netflow", "listen_addr": udp.to_string() },
            { "protocol": "netflow", "listen_addr": tcp.to_string(), "transport": "tcp" },
            {
                "protocol": "netflow", "listen_addr": tls.to_string(), "transport": "tls",
                "max_sessions": 10, "handshake_timeout_secs": 5, "idle_timeout_secs": 60,
                "tls": {
                    "cert_file": "collector.pem",
                    "key_file": "collector-key.pem",
                    "client_ca_file": "routers-ca.pem",
                },
            },
        ],
    });
    let collector = Collector::start(&config, vec![udp, tcp, tls]);
    let runtime = tokio::runtime::Runtime::new().unwrap();

    // Each original exporter over its own TCP connection, from its own address.
    let mut sources = Vec::new();
    for (k, exporter) in exporters.iter().enumerate() {
        let local = IpAddr::V4(Ipv4Addr::new(127, 0, 3, u8::try_from(k + 1).unwrap()));
        runtime.block_on(send_tcp(local, tcp, &exporter.messages.concat()));
        sources.push(local);
    }
    // The first capture once more, over TLS, as the holder of a good certificate; and
    // refused from a certificate of another CA.
    let first = &exporters[0];
    let stream = first.messages.concat();
    let sent = runtime.block_on(send_tls(tls, client_config(&servers.ca_file, &good), &stream));
    // Kept open until /metrics is read: a session's series ends with it.
    let mut session = sent.unwrap_or_else(|e| panic!("the good TLS client was refused: {e}"));
    let refused = runtime.block_on(async {
        match send_tls(tls, client_config(&servers.ca_file, &stranger), &stream).await {
            Ok(mut conn) => closed_by_collector(&mut conn).await,
            Err(_) => true,
        }
    });
    assert!(refused, "a certificate of an unknown CA was accepted");

    let expected_total: usize =
        exporters.iter().map(|e| e.expected.len()).sum::<usize>() + first.expected.len();
    collector.wait_for_lines(expected_total, FLOW_TIMEOUT, SETTLE);
    let tls_listener = format!("netflow-tls@{tls}");
    let scraped = metrics(http);
    runtime.block_on(session.shutdown()).unwrap_or_else(|e| panic!("close: {e}"));
    let finished = collector.stop();
    assert!(finished.status.success(), "exit {}:\n{}", finished.status, finished.logs.join("\n"));

    let mut problems = Vec::new();
    for (exporter, local) in exporters.iter().zip(&sources) {
        let local = local.to_string();
        let flows: Vec<&Value> =
            finished.flows.iter().filter(|f| f["sampler_address"] == local.as_str()).collect();
        problems.extend(check(&exporter.name, &exporter.expected, &flows));
    }
    let over_tls: Vec<&Value> =
        finished.flows.iter().filter(|f| f["sampler_address"] == "127.0.0.1").collect();
    problems.extend(check(&format!("{} over TLS", first.name), &first.expected, &over_tls));
    assert_eq!(finished.flows.len(), expected_total, "stray flows");
    assert!(problems.is_empty(), "collector vs reference:\n{}", problems.join("\n"));

    // The TLS exporter is named by its certificate in the logs and in /metrics.
    let opened = finished
        .logs
        .iter()
        .find(|l| l.contains("Exporter session opened") && l.contains(&tls_listener));
    let opened = opened.unwrap_or_else(|| panic!("no session log:\n{}", finished.logs.join("\n")));
    assert!(opened.contains("exporter=edge-router-1"), "{opened}");
    let refusal = finished.logs.iter().find(|l| l.contains("TLS handshake failed"));
    let refusal =
        refusal.unwrap_or_else(|| panic!("no refusal log:\n{}", finished.logs.join("\n")));
    assert!(
        refusal.contains("peer=127.0.0.1:") && refusal.contains("certificate_rejected"),
        "{refusal}"
    );
    let series =
        format!("{{listener=\"{tls_listener}\",partition=\"default\",exporter=\"edge-router-1\"}}");
    let flows = sample(&scraped, &format!("flow_collector_exporter_flows_total{series}"));
    assert_eq!(flows, first.expected.len() as u64);
    let failures = format!(
        "flow_collector_tls_handshake_failures_total{{listener=\"{tls_listener}\",partition=\"default\",reason=\"certificate_rejected\"}}"
    );
    assert_eq!(sample(&scraped, &failures), 1);
    let accepted = format!(
        "flow_collector_sessions_accepted_total{{listener=\"netflow-tcp@{tcp}\",partition=\"default\"}}"
    );
    assert_eq!(sample(&scraped, &accepted), exporters.len() as u64);
}

#[test]
fn a_bad_certificate_path_is_an_error_naming_the_key_and_nothing_is_bound() {
    let dir = tempfile::tempdir().unwrap();
    let tcp = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
    let config = json!({
        "listeners": [
            { "protocol": "netflow", "listen_addr": "127.0.0.1:0" },
            {
                "protocol": "netflow", "listen_addr": tcp.to_string(), "transport": "tls",
                "tls": {
                    "cert_file": dir.path().join("missing.pem"),
                    "key_file": "key.pem",
                    "client_ca_file": "ca.pem",
                },
            },
        ],
    });
    let path = dir.path().join("flow-collector.json");
    std::fs::write(&path, config.to_string()).unwrap();
    let check = Command::new(collector_binary())
        .args(["--check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&check.stdout);
    assert_eq!(check.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("config key `listeners[1].tls.cert_file`: cannot read")
            && stdout.contains("missing.pem"),
        "{stdout}"
    );

    let run = Command::new(collector_binary()).arg("--config").arg(&path).output().unwrap();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert_eq!(run.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("listeners[1].tls.cert_file"), "{stderr}");
    assert!(!stderr.contains("listener bound"), "{stderr}");
    assert!(TcpListener::bind(tcp).is_ok(), "the TLS port was bound");
}

/// The fields of a flow both exports of the same traffic must agree on.
fn metered(flow: &Value) -> String {
    let keys = [
        "type",
        "src_addr",
        "dst_addr",
        "src_port",
        "dst_port",
        "proto",
        "bytes",
        "packets",
        "time_flow_start_ns",
        "time_flow_end_ns",
        "tcp_flags",
    ];
    keys.iter().map(|k| format!("{k}={}", flow[*k])).collect::<Vec<_>>().join(" ")
}

#[test]
fn softflowd_over_tcp_gives_the_flows_it_gives_over_udp() {
    if !have("softflowd") {
        eprintln!("SKIP: softflowd not installed");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let traffic = dir.path().join("traffic.pcap");
    traffic::write_traffic_pcap(&traffic);
    let udp = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    let tcp = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
    let config = json!({
        "listeners": [
            { "protocol": "netflow", "listen_addr": udp.to_string(), "subject": "flows.udp",
              "buffer_size": support::TEST_BUFFER_SIZE },
            { "protocol": "netflow", "listen_addr": tcp.to_string(), "subject": "flows.tcp",
              "transport": "tcp" },
        ],
    });
    let collector = Collector::start(&config, vec![udp, tcp]);
    for (to, transport) in [(udp, "udp"), (tcp, "tcp")] {
        // Absolute millisecond times: both runs stamp the flows from the capture's clock.
        let status = Command::new("softflowd")
            .arg("-r")
            .arg(&traffic)
            .args(["-n", &to.to_string(), "-P", transport, "-v", "10", "-A", "milli"])
            .args(["-d", "-c", "none"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap_or_else(|e| panic!("softflowd: {e}"));
        assert!(status.success(), "softflowd -P {transport}: {status}");
        if transport == "udp" {
            collector.wait_for_lines(1, FLOW_TIMEOUT, SETTLE);
        }
    }
    let udp_flows = collector.line_count();
    eprintln!("softflowd: {udp_flows} flows over UDP");
    collector.wait_for_lines(udp_flows * 2, FLOW_TIMEOUT, SETTLE);
    let finished = collector.stop();
    assert!(finished.status.success(), "exit {}:\n{}", finished.status, finished.logs.join("\n"));

    // The UDP run had finished (and settled) before the TCP run started: stdout holds its
    // flows first.
    assert_eq!(finished.flows.len(), udp_flows * 2, "as many flows over TCP as over UDP");
    let sorted = |flows: &[Value]| {
        let mut flows: Vec<String> = flows.iter().map(metered).collect();
        flows.sort();
        flows
    };
    let (over_udp, over_tcp) = finished.flows.split_at(udp_flows);
    let (over_udp, over_tcp) = (sorted(over_udp), sorted(over_tcp));
    assert!(!over_udp.is_empty(), "softflowd exported nothing over UDP");
    assert_eq!(over_tcp, over_udp, "softflowd over TCP vs over UDP");
    assert!(
        finished
            .logs
            .iter()
            .any(|l| l.contains("Exporter session opened") && l.contains("netflow-tcp@")),
        "no TCP session was opened"
    );
}
