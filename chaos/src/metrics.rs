//! Reading a running collector from outside: its `/metrics` (Prometheus text) and its
//! peak resident memory (`VmHWM` in `/proc/PID/status`).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// One scrape of `/metrics`.
#[derive(Debug, Clone, Default)]
pub struct Metrics {
    samples: Vec<Sample>,
}

#[derive(Debug, Clone)]
struct Sample {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

impl Metrics {
    /// GETs `/metrics` from `addr`; `None` when it does not answer.
    pub fn scrape(addr: SocketAddr) -> Option<Metrics> {
        let text = http_get(addr, "/metrics")?;
        Some(Metrics::parse(&text))
    }

    /// Parses the Prometheus text format (comments skipped).
    pub fn parse(text: &str) -> Metrics {
        let samples = text
            .lines()
            .filter(|line| !line.starts_with('#') && !line.trim().is_empty())
            .filter_map(parse_sample)
            .collect();
        Metrics { samples }
    }

    /// The sum of every sample of `name` whose labels include `labels`.
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> u64 {
        self.samples
            .iter()
            .filter(|s| s.name == name)
            .filter(|s| labels.iter().all(|(k, v)| s.labels.iter().any(|(l, w)| l == k && w == v)))
            .map(|s| s.value as u64)
            .sum()
    }

    /// `name` summed per value of `label` (values whose sum is 0 left out).
    pub fn by_label(&self, name: &str, label: &str) -> BTreeMap<String, u64> {
        let mut out = BTreeMap::new();
        for sample in self.samples.iter().filter(|s| s.name == name) {
            if let Some((_, value)) = sample.labels.iter().find(|(l, _)| l == label) {
                *out.entry(value.clone()).or_insert(0) += sample.value as u64;
            }
        }
        out.retain(|_, n| *n > 0);
        out
    }

    pub fn datagrams_received(&self) -> u64 {
        self.sum("flow_collector_datagrams_received_total", &[])
    }

    pub fn datagrams_decoded(&self) -> u64 {
        self.sum("flow_collector_datagrams_decoded_total", &[])
    }

    pub fn flows_decoded(&self) -> u64 {
        self.sum("flow_collector_flows_decoded_total", &[])
    }

    pub fn flows_published(&self) -> u64 {
        self.sum("flow_collector_flows_published_total", &[])
    }

    /// Datagrams dropped before decoding, by reason (`kernel` included where reported).
    pub fn datagrams_dropped(&self) -> BTreeMap<String, u64> {
        self.by_label("flow_collector_datagrams_dropped_total", "reason")
    }

    /// Flows the publisher gave up, by reason.
    pub fn flows_dropped(&self) -> BTreeMap<String, u64> {
        self.by_label("flow_collector_flows_dropped_total", "reason")
    }

    /// Lifecycle events by kind (`exporter_restarted`, `missing_template`, ...).
    pub fn lifecycle_events(&self) -> BTreeMap<String, u64> {
        self.by_label("flow_collector_lifecycle_events_total", "event")
    }

    /// What the exporters' sequence numbers show lost upstream, in `unit`
    /// (`datagrams` for v9, `records` for IPFIX).
    pub fn sequence_lost(&self, unit: &str) -> u64 {
        self.sum("flow_collector_sequence_lost_total", &[("unit", unit)])
    }

    /// Observations of histogram `name` above `seconds`, at the resolution of its
    /// buckets (those above the smallest bucket bound at or over `seconds`).
    pub fn histogram_above(&self, name: &str, seconds: f64) -> u64 {
        let count = self.sum(&format!("{name}_count"), &[]);
        let bucket = format!("{name}_bucket");
        let bound = self
            .samples
            .iter()
            .filter(|s| s.name == bucket)
            .filter_map(|s| s.labels.iter().find(|(l, _)| l == "le")?.1.parse::<f64>().ok())
            .filter(|le| *le >= seconds)
            .fold(f64::INFINITY, f64::min);
        let within: u64 = self
            .samples
            .iter()
            .filter(|s| s.name == bucket)
            .filter(|s| {
                s.labels.iter().any(|(l, v)| l == "le" && v.parse::<f64>().ok() == Some(bound))
            })
            .map(|s| s.value as u64)
            .sum();
        count.saturating_sub(within)
    }

    /// Whether every decoded flow has been published or dropped (nothing buffered) and
    /// every received datagram decoded or dropped.
    pub fn idle(&self) -> bool {
        let dropped: u64 = self.flows_dropped().values().sum();
        let in_flight = self.sum("flow_collector_datagrams_in_flight", &[]);
        in_flight == 0 && self.flows_published() + dropped == self.flows_decoded()
    }
}

fn parse_sample(line: &str) -> Option<Sample> {
    let (head, value) = line.rsplit_once(' ')?;
    let value: f64 = value.trim().parse().ok()?;
    let (name, labels) = match head.split_once('{') {
        Some((name, rest)) => (name, parse_labels(rest.strip_suffix('}')?)),
        None => (head, Vec::new()),
    };
    Some(Sample { name: name.to_owned(), labels, value })
}

/// `a="x",b="y"` (no escaped quotes in this collector's label values).
fn parse_labels(text: &str) -> Vec<(String, String)> {
    text.split("\",")
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            Some((key.trim().to_owned(), value.trim_matches('"').to_owned()))
        })
        .collect()
}

/// A plain HTTP/1.0 GET; the body on a 2xx answer.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let status_and_body = http_request(addr, path)?;
    (200..300).contains(&status_and_body.0).then_some(status_and_body.1)
}

/// A plain HTTP/1.0 GET: status code and body.
pub fn http_request(addr: SocketAddr, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}

/// The peak resident set (`VmHWM`) of a process, in KiB.
pub fn vm_hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Follows a process's peak resident set until it exits (the drain included).
pub struct RssWatch {
    peak_kib: Arc<AtomicU64>,
    handle: Option<JoinHandle<()>>,
}

impl RssWatch {
    pub fn start(pid: u32) -> RssWatch {
        let peak_kib = Arc::new(AtomicU64::new(0));
        let peak = Arc::clone(&peak_kib);
        let handle = std::thread::spawn(move || {
            while let Some(kib) = vm_hwm_kib(pid) {
                peak.fetch_max(kib, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        RssWatch { peak_kib, handle: Some(handle) }
    }

    /// The highest VmHWM seen so far, in KiB.
    pub fn peak_kib(&self) -> u64 {
        self.peak_kib.load(Ordering::Relaxed)
    }

    /// Waits for the process to be gone (call after it exited) and returns its peak.
    pub fn finish(mut self) -> u64 {
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
        self.peak_kib()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_labeled_counters() {
        let text = "# HELP x y\n\
            flow_collector_datagrams_dropped_total{listener=\"netflow@127.0.0.1:1\",reason=\"channel_full\"} 7\n\
            flow_collector_datagrams_dropped_total{listener=\"netflow@127.0.0.1:1\",reason=\"kernel\"} 3\n\
            flow_collector_flows_published_total{subject=\"flows.raw.netflow\"} 12\n";
        let m = Metrics::parse(text);
        assert_eq!(m.flows_published(), 12);
        assert_eq!(m.datagrams_dropped().get("channel_full"), Some(&7));
        assert_eq!(m.sum("flow_collector_datagrams_dropped_total", &[("reason", "kernel")]), 3);
    }

    #[test]
    fn reads_its_own_peak_rss() {
        assert!(vm_hwm_kib(std::process::id()).is_some_and(|kib| kib > 0));
    }
}
