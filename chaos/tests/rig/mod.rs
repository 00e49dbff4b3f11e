//! The scenarios' rig around the real binary: the collector process of
//! `tests/jetstream_support` (started through the launcher of `chaos/build.rs`, in a
//! network namespace when asked), a real nats-server from `publish/tests/support`, the
//! collector's `/metrics`, its peak RSS, and the standard end-of-run checks.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use flow_chaos::exporter::{Ledger, Protocol, TrafficPlan};
use flow_chaos::metrics::{Metrics, RssWatch};
use flow_chaos::netns::Netns;
use flow_chaos::verdict::{Audit, Verdict};
use flow_chaos::{Mode, collector_binary, wait_for_async};
use flowpb::FlowMessage;
use prost::Message;
use serde_json::{Value, json};

use crate::jetstream_support::{self, Exited, Running};

/// The memory a collector may reach in any scenario (its buffers are bounded well
/// below: `publish_buffer_flows` below is about 40 MB when full).
pub const RSS_BOUND_MIB: u64 = 128;
/// Flows each subject's publisher may buffer in these runs.
pub const PUBLISH_BUFFER_FLOWS: u64 = 200_000;

pub fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

pub fn mode() -> Mode {
    Mode::from_env()
}

/// Where a collector listens and answers.
#[derive(Debug, Clone, Copy)]
pub struct Addrs {
    pub udp: SocketAddr,
    pub metrics: SocketAddr,
}

impl Addrs {
    /// Free ports on `ip` (127.0.0.1, or a namespace's address: every port is free there).
    pub fn on(ip: IpAddr) -> Addrs {
        Addrs {
            udp: SocketAddr::new(ip, jetstream_support::free_udp_port()),
            metrics: SocketAddr::new(ip, crate::nats::free_port()),
        }
    }

    pub fn loopback() -> Addrs {
        Addrs::on(IpAddr::from([127, 0, 0, 1]))
    }
}

/// The chaos config: `tests/jetstream_support`'s (one NetFlow listener, 1 s publish
/// timeout, 256 MiB stream) with `/metrics` and a bounded publish buffer.
pub fn config(nats_url: &str, addrs: Addrs) -> Value {
    let mut config = jetstream_support::jetstream_config(nats_url, addrs.udp);
    config["metrics_addr"] = json!(addrs.metrics.to_string());
    config["publish_buffer_flows"] = json!(PUBLISH_BUFFER_FLOWS);
    config
}

/// A steady exporter: `records` flows per datagram, `rate` datagrams a second, the
/// template every 20 datagrams.
pub fn plan(to: SocketAddr, protocol: Protocol, records: u32, rate: u32) -> TrafficPlan {
    TrafficPlan {
        to,
        from: IpAddr::from([127, 0, 0, 2]),
        protocol,
        records,
        rate,
        template_every: 20,
        first_id: 1,
        max_datagrams: None,
    }
}

/// A running collector binary.
pub struct Collector {
    pub running: Running,
    pub addrs: Addrs,
    rss: RssWatch,
}

/// What a stopped collector left.
pub struct Stopped {
    pub exited: Exited,
    /// The last `/metrics` scrape, taken just before SIGTERM.
    pub last: Metrics,
    pub peak_rss_kib: u64,
}

impl Collector {
    /// Starts the binary on `config` (inside `netns` when given) and waits until its
    /// listener is bound.
    pub fn start(config: &Value, addrs: Addrs, netns: Option<&Netns>) -> Collector {
        collector_binary();
        let args: Vec<&str> = match netns {
            Some(ns) => vec!["--chaos-netns", ns.name.as_str()],
            None => Vec::new(),
        };
        let running = Running::start(config, &args);
        let rss = RssWatch::start(running.pid().as_raw() as u32);
        Collector { running, addrs, rss }
    }

    /// Waits until the collector logged its JetStream stream ready.
    pub fn wait_stream_ready(&self) {
        self.running.wait_log("JetStream stream ready");
    }

    pub fn metrics(&self) -> Metrics {
        Metrics::scrape(self.addrs.metrics)
            .unwrap_or_else(|| panic!("no /metrics at {}:\n{}", self.addrs.metrics, self.logs()))
    }

    pub fn logs(&self) -> String {
        self.running.log_text()
    }

    pub fn peak_rss_kib(&self) -> u64 {
        self.rss.peak_kib()
    }

    /// Waits until at least `n` flows are published.
    pub async fn wait_published(&self, n: u64, timeout: Duration) {
        let reached = wait_for_async(timeout, || async { self.metrics().flows_published() >= n });
        assert!(reached.await.is_some(), "fewer than {n} flows published:\n{:?}", self.metrics());
    }

    /// Recovery after a fault is lifted: how long until every flow decoded by now is
    /// published (the backlog the fault built is gone). `None` past `bound`.
    pub async fn recovery(&self, bound: Duration) -> Option<Duration> {
        let lifted = Instant::now();
        let target = self.metrics().flows_decoded();
        let done = wait_for_async(bound, || async { self.metrics().flows_published() >= target });
        done.await.map(|_| lifted.elapsed())
    }

    /// Waits until everything received is decoded and every decoded flow published or
    /// dropped, and the counts hold still for a moment; returns that scrape.
    pub async fn wait_idle(&self, timeout: Duration) -> Metrics {
        let deadline = Instant::now() + timeout;
        let mut last: Option<(u64, u64)> = None;
        loop {
            let m = self.metrics();
            let now = (m.datagrams_received(), m.flows_published());
            if m.idle() && last == Some(now) {
                return m;
            }
            assert!(Instant::now() < deadline, "the collector never went idle: {m:?}");
            last = Some(now);
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Scrapes `/metrics` a last time, sends SIGTERM and waits for the exit.
    pub fn stop(self) -> Stopped {
        let last = self.metrics();
        let exited = self.running.stop();
        let peak_rss_kib = self.rss.finish();
        Stopped { exited, last, peak_rss_kib }
    }
}

/// Reads the whole stream at `url` back and compares it with the ledger.
pub async fn audit(url: &str, ledger: &Ledger) -> Audit {
    Audit::of(&stored_flows(url).await, ledger)
}

/// Every stored message decoded, with how many times its exact bytes are stored: what
/// `tests/jetstream_support::stored_flows` returns, read with 32 requests in flight
/// instead of one (the scenarios read back up to a few hundred thousand messages).
pub async fn stored_flows(url: &str) -> Vec<(FlowMessage, usize)> {
    const LANES: u64 = 32;
    let js = crate::nats::inspector(url).await;
    let mut stream = js.get_stream(jetstream_support::STREAM).await.expect("the stream exists");
    let state = &stream.info().await.expect("stream info").state;
    if state.messages == 0 {
        return Vec::new();
    }
    let (first_sequence, last_sequence) = (state.first_sequence, state.last_sequence);
    let mut lanes = tokio::task::JoinSet::new();
    for lane in 0..LANES {
        let stream = stream.clone();
        let (first, last) = (first_sequence + lane, last_sequence);
        lanes.spawn(async move {
            let mut payloads = Vec::new();
            for sequence in (first..=last).step_by(LANES as usize) {
                let message = stream.get_raw_message(sequence).await;
                payloads
                    .push(message.unwrap_or_else(|e| panic!("message {sequence}: {e}")).payload);
            }
            payloads
        });
    }
    let mut copies: HashMap<bytes::Bytes, usize> = HashMap::new();
    while let Some(lane) = lanes.join_next().await {
        for payload in lane.expect("a reader lane") {
            *copies.entry(payload).or_default() += 1;
        }
    }
    copies
        .into_iter()
        .map(|(payload, n)| (FlowMessage::decode(payload).expect("one FlowMessage"), n))
        .collect()
}

/// The end of a binary run, common to every scenario:
/// - `sent` = records put on the wire; `published` = the collector's final count;
/// - counted drops: datagram drops (by reason, times `records_per_datagram`) and
///   publisher drops (by reason), from the last scrape; what the drain gave up at exit
///   (`at_exit`) from the final counters line;
/// - the process exited 0 with a clean drain; decoded = published + dropped;
/// - the stream holds every record sent exactly once except the counted drops
///   (`audit.missing` equals them), nothing unknown, corrupt or twice;
/// - the stream holds what the collector says it published;
/// - peak RSS under [`RSS_BOUND_MIB`].
pub fn standard_checks(
    v: &mut Verdict,
    ledger: &Ledger,
    audit: &Audit,
    stopped: &Stopped,
    records_per_datagram: u64,
) {
    let exited = &stopped.exited;
    v.sent = ledger.records_on_wire();
    v.published = exited.counter("flows_published");
    v.audit(audit);
    v.peak_rss_kib = Some(stopped.peak_rss_kib);
    for (reason, n) in stopped.last.datagrams_dropped() {
        v.drop_count(&reason, n * records_per_datagram);
    }
    let mut publisher_drops = 0;
    for (reason, n) in stopped.last.flows_dropped() {
        publisher_drops += n;
        v.drop_count(&reason, n);
    }
    let dropped_at_exit = exited.counter("flows_dropped").saturating_sub(publisher_drops);
    v.drop_count("at_exit", dropped_at_exit);
    let counted: u64 = v.dropped.values().sum();

    v.check(exited.status.success(), format!("exit status {:?}", exited.status));
    let counters = exited.final_counters();
    v.check(
        counters.get("drained_cleanly").map(String::as_str) == Some("true"),
        format!("drain not clean: {counters:?}"),
    );
    v.check(
        exited.counter("flows_decoded") == v.published + exited.counter("flows_dropped"),
        format!("decoded != published + dropped: {counters:?}"),
    );
    v.check(audit.clean(), format!("stream: {}", audit.problems()));
    v.check(
        audit.missing == counted,
        format!(
            "{} records missing from the stream, {counted} counted: {}",
            audit.missing,
            audit.problems()
        ),
    );
    v.check(
        audit.messages == v.published,
        format!(
            "the stream holds {} messages, the collector published {}",
            audit.messages, v.published
        ),
    );
    v.check(
        stopped.peak_rss_kib <= RSS_BOUND_MIB * 1024,
        format!("peak RSS {} KiB over {RSS_BOUND_MIB} MiB", stopped.peak_rss_kib),
    );
}

/// Checks a measured recovery against its bound and records it.
pub fn recovery_check(v: &mut Verdict, recovery: Option<Duration>, bound: Duration) {
    v.recovery = recovery;
    v.check(recovery.is_some(), format!("no recovery within {bound:?}"));
}
