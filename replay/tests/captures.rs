//! The reader against the shared router captures (cross-checked with tshark), and the
//! `flow-replay` binary sending them over real UDP.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use flow_replay::{UdpDatagram, capture_files, read_file};

fn shared_pcaps() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/pcaps")
}

/// Every `*.pcap` under the shared captures folder, sorted.
fn captures() -> Vec<PathBuf> {
    let root = shared_pcaps();
    let files = capture_files(&root).unwrap_or_else(|e| panic!("{}: {e}", root.display()));
    assert!(!files.is_empty(), "no captures under {}", root.display());
    files
}

fn have(tool: &str) -> bool {
    Command::new("which").arg(tool).output().is_ok_and(|o| o.status.success())
}

/// (source, payload hex) of every UDP datagram, and the frame count, as tshark sees them.
fn tshark_udp(path: &Path) -> (Vec<(SocketAddr, String)>, usize) {
    let out = Command::new("tshark")
        .args(["-r"])
        .arg(path)
        .args(["-T", "fields", "-E", "occurrence=f"])
        .args(["-e", "ip.src", "-e", "ipv6.src", "-e", "udp.srcport", "-e", "udp.payload"])
        .output()
        .unwrap_or_else(|e| panic!("tshark: {e}"));
    assert!(out.status.success(), "tshark failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    let udp = lines
        .iter()
        .filter_map(|line| {
            let cols: Vec<&str> = line.split('\t').collect();
            let ip: IpAddr = format!("{}{}", cols.first()?, cols.get(1)?).parse().ok()?;
            let port: u16 = cols.get(2)?.parse().ok()?;
            Some((SocketAddr::new(ip, port), cols.get(3)?.to_string()))
        })
        .collect();
    (udp, lines.len())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn shared_captures_read_the_same_as_tshark() {
    if !have("tshark") {
        eprintln!("SKIP: tshark not installed");
        return;
    }
    for path in captures() {
        let capture = read_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let ours: Vec<(SocketAddr, String)> =
            capture.datagrams.iter().map(|d| (d.source, hex(&d.payload))).collect();
        let (theirs, frames) = tshark_udp(&path);
        assert_eq!(ours.len(), theirs.len(), "{}: datagram count", path.display());
        assert!(ours == theirs, "{}: datagrams differ from tshark's", path.display());
        let total = capture.datagrams.len() as u64 + capture.skipped.total();
        assert_eq!(total, frames as u64, "{}: every frame yields or is counted", path.display());
    }
}

#[test]
fn bgp_frames_in_a_flow_capture_are_counted_as_not_udp() {
    let path = shared_pcaps().join("500-IPFIXv10-BGP-CISCO-SRv6/traffic-00.pcap");
    let capture = read_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(capture.datagrams.len(), 40);
    assert_eq!(capture.skipped.not_udp, 3);
    assert_eq!(capture.skipped.total(), 3);
}

#[test]
fn cli_gives_each_exporter_its_own_source_address() {
    let dir = shared_pcaps().join("111-IPFIXv10-NFv9-IPv6-IPv4-mix_sources");
    let files = [dir.join("traffic-00.pcap"), dir.join("traffic-01.pcap")];
    let expected: Vec<UdpDatagram> = files
        .iter()
        .flat_map(|f| read_file(f).unwrap_or_else(|e| panic!("{}: {e}", f.display())).datagrams)
        .collect();
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
    socket.set_read_timeout(Some(Duration::from_secs(10))).unwrap_or_else(|e| panic!("{e}"));
    let target = socket.local_addr().unwrap_or_else(|e| panic!("{e}"));

    let out = Command::new(env!("CARGO_BIN_EXE_flow-replay"))
        .args(["--to", &target.to_string(), "--source-per-exporter", "--pps", "2000"])
        .args(&files)
        .output()
        .unwrap_or_else(|e| panic!("flow-replay: {e}"));
    assert!(out.status.success(), "flow-replay failed: {}", String::from_utf8_lossy(&out.stderr));

    let mut buf = vec![0u8; 65_535];
    let mut by_source: BTreeMap<IpAddr, Vec<Vec<u8>>> = BTreeMap::new();
    for _ in 0..expected.len() {
        let (len, from) = socket.recv_from(&mut buf).unwrap_or_else(|e| panic!("recv: {e}"));
        by_source.entry(from.ip()).or_default().push(buf[..len].to_vec());
    }
    let v4_exporter: Vec<Vec<u8>> = expected[..11].iter().map(|d| d.payload.clone()).collect();
    let v6_exporter: Vec<Vec<u8>> = expected[11..].iter().map(|d| d.payload.clone()).collect();
    let first: IpAddr = "127.0.0.10".parse().unwrap_or_else(|e| panic!("{e}"));
    let second: IpAddr = "127.0.0.11".parse().unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(by_source.len(), 2, "two exporters, two source addresses");
    assert!(by_source.get(&first) == Some(&v4_exporter), "IPv4 exporter from 127.0.0.10, in order");
    assert!(
        by_source.get(&second) == Some(&v6_exporter),
        "IPv6 exporter from 127.0.0.11, in order"
    );

    let stdout = String::from_utf8_lossy(&out.stdout);
    let bytes: usize = expected.iter().map(|d| d.payload.len()).sum();
    let total = format!("total: {} datagrams, {bytes} bytes", expected.len());
    assert!(stdout.lines().any(|l| l == total), "summary {stdout:?} lacks {total:?}");
    assert!(stdout.contains("138.187.57.55:43853 -> 127.0.0.10:"), "per-source line: {stdout}");
}

#[test]
fn cli_reports_a_missing_file() {
    let out = Command::new(env!("CARGO_BIN_EXE_flow-replay"))
        .args(["--to", "127.0.0.1:9", "/nonexistent/capture.pcap"])
        .output()
        .unwrap_or_else(|e| panic!("flow-replay: {e}"));
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/capture.pcap"));
}
