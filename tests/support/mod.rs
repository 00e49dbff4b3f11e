//! Test harness: runs the real collector binary with a temporary config and the stdout
//! sink, waits until its listeners are bound, collects its JSON flow lines, and stops it
//! with SIGTERM.
//!
//! Each integration test binary uses a subset of these helpers.
#![allow(dead_code)]

pub mod http;
pub mod traffic;
pub mod tshark;

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, UdpSocket};
use std::num::NonZeroU32;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Barrier, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use flow_replay::{Replayer, SourcePlan, UdpDatagram};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::{Value, json};

/// How long the collector may take to bind its listeners.
pub const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long the collector may take to drain and exit after SIGTERM.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);
/// Kernel receive buffer asked for in test configs, so bursts on loopback are not lost.
pub const TEST_BUFFER_SIZE: usize = 8 * 1024 * 1024;

/// The shared router captures beside the checkout; panics when they are missing.
pub fn shared_pcaps() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/pcaps");
    assert!(dir.is_dir(), "shared captures missing: {}", dir.display());
    dir
}

/// Sends the datagrams of a shared capture (`capture`: its path below the captures
/// folder) from `source` (a 127.x address) to `to`, 2 ms apart; returns how many.
pub fn send_capture_from(capture: &str, source: &str, to: SocketAddr) -> usize {
    let path = shared_pcaps().join(capture);
    let datagrams = flow_replay::read_file(&path).unwrap_or_else(|e| panic!("{e}")).datagrams;
    let socket = UdpSocket::bind((source, 0)).unwrap_or_else(|e| panic!("bind {source}: {e}"));
    for datagram in &datagrams {
        socket.send_to(&datagram.payload, to).unwrap_or_else(|e| panic!("send: {e}"));
        thread::sleep(Duration::from_millis(2));
    }
    datagrams.len()
}

/// Every `*.pcap` one level below the shared captures folder, sorted; panics when
/// there is none.
pub fn shared_captures() -> Vec<PathBuf> {
    let root = shared_pcaps();
    let mut files: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap_or_else(|e| panic!("{}: {e}", root.display()))
        .flatten()
        .filter_map(|dir| std::fs::read_dir(dir.path()).ok())
        .flat_map(|entries| entries.flatten().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "pcap"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no capture under {}", root.display());
    files
}

/// Replays every job (a source plan and its datagrams, in order) to `target` at the
/// same time, one thread each, at most `pps` datagrams per second per job. Returns the
/// replayers, which know which local address stood in for each original exporter.
pub fn replay_concurrently(
    target: SocketAddr,
    jobs: Vec<(SourcePlan, &[UdpDatagram])>,
    pps: u32,
) -> Vec<Replayer> {
    let start = Arc::new(Barrier::new(jobs.len()));
    thread::scope(|scope| {
        let handles: Vec<_> = jobs
            .into_iter()
            .map(|(plan, datagrams)| {
                let start = Arc::clone(&start);
                scope.spawn(move || {
                    let mut replayer = Replayer::new(target, plan, NonZeroU32::new(pps))
                        .unwrap_or_else(|e| panic!("replayer: {e}"));
                    start.wait();
                    for datagram in datagrams {
                        replayer.send(datagram).unwrap_or_else(|e| panic!("replay: {e}"));
                    }
                    replayer
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| panic!("a replay thread panicked")))
            .collect()
    })
}

/// Whether `tool` is on PATH.
pub fn have(tool: &str) -> bool {
    Command::new("which").arg(tool).output().is_ok_and(|o| o.status.success())
}

/// The collector binary under test: this build's, or `FLOW_COLLECTOR_TEST_BIN` (e.g. a
/// release build or an installed package) when set.
pub fn collector_binary() -> PathBuf {
    std::env::var_os("FLOW_COLLECTOR_TEST_BIN").map_or_else(
        || PathBuf::from(env!("CARGO_BIN_EXE_serviceradar-flow-collector")),
        PathBuf::from,
    )
}

/// A UDP port on 127.0.0.1 that was free a moment ago.
pub fn free_udp_port() -> u16 {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("bind port 0: {e}"));
    socket.local_addr().unwrap_or_else(|e| panic!("local_addr: {e}")).port()
}

/// A config with one NetFlow listener on `addr`, flows to stdout.
pub fn netflow_config(addr: SocketAddr) -> Value {
    json!({
        "listeners": [{
            "protocol": "netflow",
            "listen_addr": addr.to_string(),
            "subject": "flows.raw.netflow",
            "buffer_size": TEST_BUFFER_SIZE,
        }]
    })
}

/// Lines read from one of the child's pipes, shared with the reader thread.
type Lines = Arc<Mutex<Vec<String>>>;

/// What a stopped collector left behind.
#[derive(Debug)]
pub struct Finished {
    /// How the process ended.
    pub status: ExitStatus,
    /// Every stdout line, parsed as JSON (a line that is not JSON fails the test).
    pub flows: Vec<Value>,
    /// Every stderr line (logs).
    pub logs: Vec<String>,
}

/// A running collector process.
pub struct Collector {
    child: Child,
    stdout: Lines,
    stderr: Lines,
    readers: Vec<JoinHandle<()>>,
    /// The stdout pipe's read end when nothing reads it.
    _unread: Option<ChildStdout>,
    /// The addresses its listeners were told to bind.
    pub listen: Vec<SocketAddr>,
    _dir: tempfile::TempDir,
}

impl Collector {
    /// Starts a collector with one NetFlow listener on a free port of 127.0.0.1.
    pub fn start_netflow() -> Collector {
        let addr = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
        Collector::start(&netflow_config(addr), vec![addr])
    }

    /// Writes `config`, starts the binary with `--stdout`, and waits until each address
    /// in `listen` is reported bound on stderr.
    pub fn start(config: &Value, listen: Vec<SocketAddr>) -> Collector {
        Collector::start_reading(config, listen, true, None)
    }

    /// As [`Collector::start`], but nothing ever reads the stdout pipe (a stalled log
    /// reader): it is kept open until the collector stops, and `Finished::flows` is empty.
    /// The collector runs one runtime thread, so a write that blocked it would stop
    /// everything, `/metrics` and the drain deadline included; with `uid` (the test runs
    /// as root) it runs as that user, which the pipe, made by the test, does not belong to.
    pub fn start_unread(config: &Value, listen: Vec<SocketAddr>, uid: Option<u32>) -> Collector {
        Collector::start_reading(config, listen, false, uid)
    }

    fn start_reading(
        config: &Value,
        listen: Vec<SocketAddr>,
        read_stdout: bool,
        uid: Option<u32>,
    ) -> Collector {
        let runtime_threads = if read_stdout { None } else { Some("1") };
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let path = dir.path().join("flow-collector.json");
        std::fs::write(&path, config.to_string()).unwrap_or_else(|e| panic!("write config: {e}"));
        let mut command = Command::new(collector_binary());
        if let Some(uid) = uid {
            for (file, mode) in [(dir.path(), 0o755), (path.as_path(), 0o644)] {
                std::fs::set_permissions(file, std::fs::Permissions::from_mode(mode))
                    .unwrap_or_else(|e| panic!("chmod {}: {e}", file.display()));
            }
            command.uid(uid).gid(uid);
        }
        let mut child = command
            .arg("--config")
            .arg(&path)
            .arg("--stdout")
            .env("NO_COLOR", "1")
            .env("RUST_LOG", "info")
            .envs(runtime_threads.map(|n| ("TOKIO_WORKER_THREADS", n)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn collector: {e}"));
        let (stderr, stderr_reader, logged) = read_lines(child.stderr.take(), "stderr");
        let mut readers = vec![stderr_reader];
        let mut unread = None;
        let stdout = if read_stdout {
            let (stdout, stdout_reader, _) = read_lines(child.stdout.take(), "stdout");
            readers.push(stdout_reader);
            stdout
        } else {
            unread = child.stdout.take();
            Lines::default()
        };
        let mut collector =
            Collector { child, stdout, stderr, readers, _unread: unread, listen, _dir: dir };
        collector.wait_until_bound(&logged);
        collector
    }

    /// The first listener's address.
    pub fn addr(&self) -> SocketAddr {
        self.listen[0]
    }

    /// The process's peak resident memory so far (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .unwrap_or_else(|e| panic!("read the collector's /proc status: {e}"));
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("no VmHWM in:\n{status}"))
    }

    /// Blocks until every listener is logged as bound; panics on exit or time-out.
    fn wait_until_bound(&mut self, logged: &Receiver<String>) {
        let deadline = Instant::now() + START_TIMEOUT;
        let mut waiting: Vec<SocketAddr> = self.listen.clone();
        while !waiting.is_empty() {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("collector exited with {status} before binding:\n{}", self.logs());
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "collector did not bind {waiting:?} in time:\n{}",
                self.logs()
            );
            if let Ok(line) = logged.recv_timeout(left.min(Duration::from_millis(200))) {
                waiting.retain(|addr| !is_bound_line(&line, *addr));
            }
        }
    }

    /// The number of stdout lines so far.
    pub fn line_count(&self) -> usize {
        self.stdout.lock().map_or(0, |lines| lines.len())
    }

    /// Waits until at least `n` stdout lines arrived, or `timeout` passed, then a further
    /// `settle` with no new line (so extra, unexpected lines are seen too). Returns the count.
    pub fn wait_for_lines(&self, n: usize, timeout: Duration, settle: Duration) -> usize {
        let deadline = Instant::now() + timeout;
        while self.line_count() < n && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
        }
        let mut seen = self.line_count();
        loop {
            thread::sleep(settle);
            let now = self.line_count();
            if now == seen {
                return now;
            }
            seen = now;
        }
    }

    /// All stderr lines so far, joined.
    pub fn logs(&self) -> String {
        self.stderr.lock().map(|lines| lines.join("\n")).unwrap_or_default()
    }

    /// Sends SIGTERM, waits for the process to exit and its pipes to close.
    pub fn stop(mut self) -> Finished {
        let status = self.terminate();
        for reader in self.readers.drain(..) {
            // A reader thread only ends at EOF; a panic in it already failed the line read.
            let _ = reader.join();
        }
        let logs = take(&self.stderr);
        let flows = take(&self.stdout)
            .iter()
            .map(|line| {
                serde_json::from_str(line).unwrap_or_else(|e| panic!("stdout line {line:?}: {e}"))
            })
            .collect();
        Finished { status, flows, logs }
    }

    /// SIGTERM, then a bounded wait; SIGKILL and panic when it does not exit.
    fn terminate(&mut self) -> ExitStatus {
        let pid = Pid::from_raw(i32::try_from(self.child.id()).unwrap_or(i32::MAX));
        kill(pid, Signal::SIGTERM).unwrap_or_else(|e| panic!("SIGTERM: {e}"));
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return status,
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(50)),
                Ok(None) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    panic!("collector did not exit within {STOP_TIMEOUT:?} of SIGTERM");
                }
                Err(e) => panic!("waiting for the collector: {e}"),
            }
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        // Only reached when a test panicked before `stop`: do not leave the process behind.
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Whether a log line says the listener on `addr` is bound.
fn is_bound_line(line: &str, addr: SocketAddr) -> bool {
    line.contains("listener bound") && line.contains(&format!(":{}", addr.port()))
}

/// Moves the lines out of a shared buffer.
fn take(lines: &Lines) -> Vec<String> {
    lines.lock().map(|mut l| std::mem::take(&mut *l)).unwrap_or_default()
}

/// Spawns a thread reading `pipe` line by line into a shared buffer; each line is also
/// sent on the returned channel.
fn read_lines<R: Read + Send + 'static>(
    pipe: Option<R>,
    name: &'static str,
) -> (Lines, JoinHandle<()>, Receiver<String>) {
    let pipe = pipe.unwrap_or_else(|| panic!("collector {name} is not piped"));
    let lines: Lines = Arc::default();
    let (tx, rx) = mpsc::channel();
    let shared = Arc::clone(&lines);
    let handle = thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            let _ = tx.send(line.clone());
            if let Ok(mut lines) = shared.lock() {
                lines.push(line);
            }
        }
    });
    (lines, handle, rx)
}
