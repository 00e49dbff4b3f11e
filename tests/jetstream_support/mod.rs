//! The JetStream end-to-end tests' rig: the real collector binary with a temporary
//! config (JetStream or `--stdout`), the shared captures replayed over real UDP, and what
//! a real nats-server's stream (publish/tests/support) holds afterwards.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, UdpSocket};
use std::num::NonZeroU32;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use flow_replay::{Replayer, SourcePlan, UdpDatagram};
use flowpb::FlowMessage;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use prost::Message;
use serde_json::{Value, json};

use crate::nats;

pub const STREAM: &str = "events";
pub const SUBJECT: &str = "flows.raw.netflow";
/// How long the collector may take to bind, or to exit after SIGTERM (its drain is
/// bounded at 10 s, plus 5 s of grace).
pub const PROCESS_TIMEOUT: Duration = Duration::from_secs(40);
/// Generous: these tests assert outcomes, not speed.
pub const DELIVERY_TIMEOUT: Duration = Duration::from_secs(90);

/// Every shared capture's datagrams, files in name order, each file in capture order.
pub fn shared_datagrams() -> Vec<UdpDatagram> {
    crate::support::shared_captures()
        .iter()
        .flat_map(|path| {
            flow_replay::read_file(path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
                .datagrams
        })
        .collect()
}

/// Replays `datagrams` `loops` times to `target`, each original exporter from its own
/// 127.0.0.x (as `flow-replay --source-per-exporter --loop N`), at most `pps` a second.
/// Send errors after the collector is gone are expected and ignored; returns how many
/// datagrams were sent.
pub fn replay(target: SocketAddr, datagrams: &[UdpDatagram], loops: u32, pps: u32) -> u64 {
    let mut replayer = Replayer::new(target, SourcePlan::PerExporter, NonZeroU32::new(pps))
        .unwrap_or_else(|e| panic!("replayer: {e}"));
    let mut sent = 0;
    for _ in 0..loops {
        for datagram in datagrams {
            if replayer.send(datagram).is_ok() {
                sent += 1;
            }
        }
    }
    sent
}

/// A UDP port on 127.0.0.1 that was free a moment ago.
pub fn free_udp_port() -> u16 {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind: {e}"));
    socket.local_addr().unwrap_or_else(|e| panic!("local_addr: {e}")).port()
}

/// A config with one NetFlow listener on `addr` publishing to JetStream at `url`, with a
/// 1 s publish timeout and a 256 MiB stream.
pub fn jetstream_config(url: &str, addr: SocketAddr) -> Value {
    json!({
        "nats_url": url,
        "stream_name": STREAM,
        "stream_subjects": [SUBJECT],
        // The test server's file store is 1 GB; the default 10 GiB stream would not fit.
        "stream_max_bytes": 256 * 1024 * 1024,
        "publish_timeout_ms": 1000,
        "listeners": [{
            "protocol": "netflow",
            "listen_addr": addr.to_string(),
            "subject": SUBJECT,
            "buffer_size": 8 * 1024 * 1024,
        }]
    })
}

type Lines = Arc<Mutex<Vec<String>>>;

/// A running collector process.
pub struct Running {
    child: Child,
    stdout: Lines,
    stderr: Lines,
    readers: Vec<JoinHandle<()>>,
    _dir: tempfile::TempDir,
}

/// What a collector process left behind.
#[derive(Debug)]
pub struct Exited {
    pub status: ExitStatus,
    pub stdout: Vec<String>,
    pub logs: Vec<String>,
}

impl Exited {
    /// The `key=value` fields of the "Collector stopped" line (the final counters).
    pub fn final_counters(&self) -> BTreeMap<String, String> {
        let line = self
            .logs
            .iter()
            .find(|l| l.contains("Collector stopped"))
            .unwrap_or_else(|| panic!("no final counters logged:\n{}", self.logs.join("\n")));
        line.split_whitespace()
            .filter_map(|field| field.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect()
    }

    /// One final counter as a number.
    pub fn counter(&self, name: &str) -> u64 {
        let counters = self.final_counters();
        let value = counters.get(name).unwrap_or_else(|| panic!("no {name} in {counters:?}"));
        value.parse().unwrap_or_else(|e| panic!("{name}={value}: {e}"))
    }

    pub fn log_text(&self) -> String {
        self.logs.join("\n")
    }
}

impl Running {
    /// Writes `config` and starts the binary on it with `args`.
    pub fn spawn(config: &Value, args: &[&str]) -> Running {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let path = dir.path().join("flow-collector.json");
        std::fs::write(&path, config.to_string()).unwrap_or_else(|e| panic!("config: {e}"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_serviceradar-flow-collector"))
            .arg("--config")
            .arg(&path)
            .args(args)
            .env_clear()
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn collector: {e}"));
        let (stdout, out_reader) = read_lines(child.stdout.take());
        let (stderr, err_reader) = read_lines(child.stderr.take());
        Running { child, stdout, stderr, readers: vec![out_reader, err_reader], _dir: dir }
    }

    /// Starts the binary and waits until its listener is bound.
    pub fn start(config: &Value, args: &[&str]) -> Running {
        let running = Running::spawn(config, args);
        running.wait_log("listener bound");
        running
    }

    /// Waits until a log line contains `needle`; panics when the process exits first or
    /// the time runs out.
    pub fn wait_log(&self, needle: &str) {
        let deadline = Instant::now() + PROCESS_TIMEOUT;
        while !self.logs().iter().any(|l| l.contains(needle)) {
            assert!(Instant::now() < deadline, "no {needle:?} logged:\n{}", self.log_text());
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn logs(&self) -> Vec<String> {
        self.stderr.lock().map(|l| l.clone()).unwrap_or_default()
    }

    pub fn log_text(&self) -> String {
        self.logs().join("\n")
    }

    pub fn stdout_lines(&self) -> usize {
        self.stdout.lock().map_or(0, |l| l.len())
    }

    pub fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id()).unwrap_or(i32::MAX))
    }

    /// Sends SIGTERM.
    pub fn sigterm(&self) {
        kill(self.pid(), Signal::SIGTERM).unwrap_or_else(|e| panic!("SIGTERM: {e}"));
    }

    /// Waits for the process to exit on its own (bounded) and collects its output.
    pub fn wait_exit(mut self) -> Exited {
        let deadline = Instant::now() + PROCESS_TIMEOUT;
        let status = loop {
            match self.child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                Ok(None) | Err(_) => {
                    let _ = self.child.kill();
                    panic!("collector did not exit in time:\n{}", self.log_text());
                }
            }
        };
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        let take = |lines: &Lines| lines.lock().map(|l| l.clone()).unwrap_or_default();
        Exited { status, stdout: take(&self.stdout), logs: take(&self.stderr) }
    }

    /// SIGTERM, then [`Running::wait_exit`].
    pub fn stop(self) -> Exited {
        self.sigterm();
        self.wait_exit()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn read_lines(pipe: Option<impl Read + Send + 'static>) -> (Lines, JoinHandle<()>) {
    let lines: Lines = Arc::default();
    let sink = Arc::clone(&lines);
    let reader = thread::spawn(move || {
        let Some(pipe) = pipe else { return };
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if let Ok(mut lines) = sink.lock() {
                lines.push(line);
            }
        }
    });
    (lines, reader)
}

/// How many messages the stream holds now (0 while it does not exist yet).
pub async fn stream_len(url: &str) -> u64 {
    let js = nats::inspector(url).await;
    match js.get_stream(STREAM).await {
        Ok(mut stream) => stream.info().await.map_or(0, |info| info.state.messages),
        Err(_) => 0,
    }
}

/// Waits until the stream holds at least `n` messages, then a further second with no
/// change (so extra messages are seen too); returns the count.
pub async fn wait_stream_len(url: &str, n: u64) -> u64 {
    let deadline = tokio::time::Instant::now() + DELIVERY_TIMEOUT;
    while stream_len(url).await < n {
        assert!(tokio::time::Instant::now() < deadline, "the stream never reached {n} messages");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut seen = stream_len(url).await;
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = stream_len(url).await;
        if now == seen {
            return now;
        }
        seen = now;
    }
}

/// Every stored message, decoded, with how many times its exact bytes are stored.
pub async fn stored_flows(url: &str) -> Vec<(FlowMessage, usize)> {
    let js = nats::inspector(url).await;
    nats::stored_payloads(&js, STREAM)
        .await
        .into_iter()
        .map(|(payload, copies)| {
            let flow = FlowMessage::decode(payload).expect("every message is one FlowMessage");
            (flow, copies)
        })
        .collect()
}

/// Every flow of every stored message read as length-delimited frames (a message stored
/// twice counts twice).
pub async fn stored_delimited_flows(url: &str) -> Vec<FlowMessage> {
    let js = nats::inspector(url).await;
    let mut flows = Vec::new();
    for (mut frame, copies) in nats::stored_payloads(&js, STREAM).await {
        let mut in_frame = Vec::new();
        while !frame.is_empty() {
            let flow = FlowMessage::decode_length_delimited(&mut frame)
                .unwrap_or_else(|e| panic!("a frame holds whole length-delimited flows: {e}"));
            in_frame.push(flow);
        }
        for _ in 0..copies {
            flows.extend(in_frame.iter().cloned());
        }
    }
    flows
}

/// A flow as JSON with the receive time (the one field that differs between runs)
/// removed, keys sorted: comparable across runs.
pub fn comparable(json_line: &str) -> String {
    let mut value: Value = serde_json::from_str(json_line)
        .unwrap_or_else(|e| panic!("not a JSON flow line {json_line:?}: {e}"));
    if let Some(object) = value.as_object_mut() {
        object.remove("time_received_ns");
    }
    value.to_string()
}

/// The comparable form of every message in the stream (a message stored twice appears
/// twice), sorted.
pub async fn stream_as_json(url: &str) -> Vec<String> {
    let mut lines = Vec::new();
    for (flow, copies) in stored_flows(url).await {
        let line = comparable(&flowpb::json::to_json_line(&flow));
        lines.extend(std::iter::repeat_n(line, copies));
    }
    lines.sort();
    lines
}

/// Starts a nats-server (publish/tests/support) and returns it with its URL.
pub fn nats_server() -> (nats::NatsServer, String) {
    let server = nats::NatsServer::start();
    let url = server.url();
    (server, url)
}
