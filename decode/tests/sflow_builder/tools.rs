//! External tools for the sFlow tests: Wireshark's `tshark` as an independent sFlow
//! dissector, reading datagrams that `flow-replay` writes to a pcap.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use flow_replay::UdpDatagram;
use flow_replay::write::write_pcap_file;
use serde_json::Value;

/// `name` on the PATH or in the usual system directories.
pub fn find_tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"].map(PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// A fresh directory for one test's files.
pub fn scratch_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("{test}-{}", std::process::id()));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).expect("create scratch dir");
    dir
}

/// Capture timestamps for the frames of a pcap the sFlow tests write: one second apart
/// from 2023-11-14T22:13:20Z.
pub fn capture_times() -> impl Iterator<Item = Duration> {
    (1_700_000_000..).map(Duration::from_secs)
}

/// Writes `datagrams` (from 127.0.0.1:40000 to 127.0.0.1:`port`) to a pcap in `dir` and
/// returns tshark's sFlow layer of each.
pub fn tshark_sflow(tshark: &Path, dir: &Path, datagrams: &[Vec<u8>], port: u16) -> Vec<Value> {
    let pcap = dir.join("sflow.pcap");
    let records: Vec<UdpDatagram> = datagrams
        .iter()
        .zip(capture_times())
        .map(|(payload, timestamp)| UdpDatagram {
            source: SocketAddr::from((Ipv4Addr::LOCALHOST, 40_000)),
            destination: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
            timestamp,
            payload: payload.clone(),
        })
        .collect();
    write_pcap_file(&pcap, &records).expect("write sFlow pcap");
    let output = Command::new(tshark)
        .arg("-r")
        .arg(&pcap)
        .arg("-d")
        .arg(format!("udp.port=={port},sflow"))
        .args(["-T", "json", "--no-duplicate-keys"])
        .output()
        .expect("run tshark");
    assert!(output.status.success(), "tshark failed: {}", String::from_utf8_lossy(&output.stderr));
    let packets: Value = serde_json::from_slice(&output.stdout).expect("tshark JSON");
    let layers: Vec<Value> = packets
        .as_array()
        .expect("array of packets")
        .iter()
        .map(|p| p["_source"]["layers"]["sflow"].clone())
        .collect();
    assert_eq!(layers.len(), datagrams.len(), "tshark read every datagram");
    assert!(layers.iter().all(Value::is_object), "tshark dissected every datagram as sFlow");
    layers
}

/// The samples of one tshark sFlow datagram: (label, sample), ordered by sample
/// sequence number (JSON objects need not keep tshark's order; the tests number their
/// samples in ascending order).
pub fn samples_of(datagram: &Value) -> Vec<(String, Value)> {
    let mut samples = Vec::new();
    for (key, value) in datagram.as_object().expect("sflow object") {
        if key.starts_with("sflow") || !key.contains("sample") {
            continue;
        }
        match value {
            Value::Array(items) => samples.extend(items.iter().map(|v| (key.clone(), v.clone()))),
            other => samples.push((key.clone(), other.clone())),
        }
    }
    samples.sort_by_key(|(_, sample)| {
        ["sflow.flow_sample.sequence_number", "sflow.counters_sample.sequence_number"]
            .iter()
            .find_map(|field| sample.get(*field))
            .map(num)
            .unwrap_or(0)
    });
    samples
}

/// A tshark number ("42" or "0x2a").
pub fn num(value: &Value) -> u64 {
    let text = value.as_str().unwrap_or_else(|| panic!("not a tshark value: {value}"));
    match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).expect("hex"),
        None => text.parse().expect("number"),
    }
}

/// A tshark list of numbers (a single value or an array).
pub fn nums(value: &Value) -> Vec<u64> {
    match value {
        Value::Array(items) => items.iter().map(num).collect(),
        other => vec![num(other)],
    }
}

/// A tshark MAC ("00:11:22:33:44:55") in the contract's u64 form.
pub fn mac(value: &Value) -> u64 {
    let text = value.as_str().expect("mac string");
    text.split(':').fold(0, |acc, byte| (acc << 8) | u64::from_str_radix(byte, 16).expect("hex"))
}

/// A tshark IP address in the contract's byte form.
pub fn addr_bytes(value: &Value) -> Vec<u8> {
    let ip: std::net::IpAddr = value.as_str().expect("address").parse().expect("ip");
    flow_decode::address_bytes(ip)
}
