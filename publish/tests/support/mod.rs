//! A real `nats-server -js` per test: its own free port and store directory, killed when
//! the guard drops. Plus test certificates (rcgen) and helpers to read a stream back.
#![allow(dead_code)]

use std::collections::HashMap;
use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use bytes::Bytes;
use flow_publish::{Backoff, JetStreamSettings, OutboundMessage, StreamSettings};
use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use tempfile::TempDir;

/// The server binary: `$NATS_SERVER_BIN`, else `nats-server` from `PATH` (Debian's is
/// `/usr/sbin/nats-server`).
fn server_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("NATS_SERVER_BIN") {
        return PathBuf::from(bin);
    }
    let debian = Path::new("/usr/sbin/nats-server");
    if debian.exists() { debian.to_path_buf() } else { PathBuf::from("nats-server") }
}

pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("ephemeral port address").port()
}

/// A running `nats-server` with JetStream, on 127.0.0.1.
pub struct NatsServer {
    child: Option<Child>,
    pub port: u16,
    pub dir: TempDir,
    config: PathBuf,
}

impl NatsServer {
    /// A plain JetStream server.
    pub fn start() -> Self {
        Self::start_with("")
    }

    /// A JetStream server with extra config blocks (`tls { ... }`, `authorization { ... }`).
    pub fn start_with(extra: &str) -> Self {
        Self::start_on(free_port(), extra)
    }

    /// On a given port (e.g. one a client is already retrying).
    pub fn start_on(port: u16, extra: &str) -> Self {
        Self::start_configured(port, true, extra)
    }

    /// A server with JetStream disabled (core NATS only).
    pub fn start_without_jetstream() -> Self {
        Self::start_configured(free_port(), false, "")
    }

    fn start_configured(port: u16, jetstream: bool, extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("temp dir for the server");
        let store = dir.path().join("store");
        let config = dir.path().join("server.conf");
        let jetstream_block = if jetstream {
            format!(
                "jetstream {{\n  store_dir: \"{}\"\n  max_memory_store: 64MB\n  max_file_store: 1GB\n}}",
                store.display()
            )
        } else {
            String::new()
        };
        let text = format!(
            "listen: 127.0.0.1:{port}\nserver_name: test_{port}\n{jetstream_block}\n{extra}\n"
        );
        std::fs::write(&config, text).expect("write server config");
        let mut server = NatsServer { child: None, port, dir, config };
        server.spawn();
        server
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("server.log"))
            .expect("server log file");
        let child = Command::new(server_binary())
            .arg("-c")
            .arg(&self.config)
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("start nats-server (install it: apt-get install nats-server)");
        self.child = Some(child);
        self.wait_ready();
    }

    /// Waits until the server accepts connections and sends its INFO line.
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                panic!("nats-server exited early ({status}); log:\n{}", self.log());
            }
            if let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
                let mut buf = [0u8; 4];
                if stream.read_exact(&mut buf).is_ok() && &buf == b"INFO" {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("nats-server did not come up on port {}; log:\n{}", self.port, self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    fn pid(&self) -> Pid {
        let child = self.child.as_ref().expect("server is running");
        Pid::from_raw(i32::try_from(child.id()).expect("pid fits i32"))
    }

    /// SIGKILL: no shutdown, no flush beyond what the kernel already has.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts again with the same config, port and store.
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    pub fn stop(&self) {
        signal::kill(self.pid(), Signal::SIGSTOP).expect("SIGSTOP nats-server");
    }

    pub fn resume(&self) {
        signal::kill(self.pid(), Signal::SIGCONT).expect("SIGCONT nats-server");
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_ref() {
            // A stopped process ignores nothing but SIGKILL; resume it anyway so it dies clean.
            let _ = signal::kill(Pid::from_raw(child.id() as i32), Signal::SIGCONT);
        }
        self.kill();
    }
}

/// Logs of the crate under test, shown for failing tests (`RUST_LOG` to change the level).
pub fn init_logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("flow_publish=info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
}

/// Settings tuned for tests: short timeouts and backoffs.
pub fn settings(url: &str, stream: &str, subjects: &[&str]) -> JetStreamSettings {
    init_logs();
    let mut stream = StreamSettings::new(stream, subjects.iter().map(|s| s.to_string()).collect());
    stream.max_bytes = 256 * 1024 * 1024;
    stream.duplicate_window = Duration::from_secs(60);
    let mut settings = JetStreamSettings::new(url, stream);
    settings.publish_timeout = Duration::from_secs(1);
    settings.retry_backoff = Backoff::new(Duration::from_millis(50), Duration::from_millis(500));
    settings.connect_backoff = Backoff::new(Duration::from_millis(50), Duration::from_millis(500));
    settings.max_in_flight = 1024;
    settings
}

/// `count` messages whose payload is `<tag>-<i>` and id `<tag>-id-<i>`.
pub fn messages(tag: &str, count: usize) -> Vec<OutboundMessage> {
    (0..count)
        .map(|i| OutboundMessage {
            msg_id: format!("{tag}-id-{i}"),
            payload: Bytes::from(format!("{tag}-{i}")),
        })
        .collect()
}

/// A plain client for inspecting the server from the test side.
pub async fn inspector(url: &str) -> jetstream::Context {
    let client = async_nats::connect(url).await.expect("inspector connects");
    jetstream::new(client)
}

/// Every message of the stream: payload → how many times it is stored.
pub async fn stored_payloads(js: &jetstream::Context, stream: &str) -> HashMap<Bytes, usize> {
    let mut handle = js.get_stream(stream).await.expect("stream exists");
    let info = handle.info().await.expect("stream info");
    let (first, last) = (info.state.first_sequence, info.state.last_sequence);
    let mut counts = HashMap::new();
    if info.state.messages == 0 {
        return counts;
    }
    for sequence in first..=last {
        let message = handle.get_raw_message(sequence).await.expect("stored message");
        *counts.entry(message.payload).or_insert(0) += 1;
    }
    counts
}

/// Asserts the stream holds each expected payload exactly once and nothing else.
pub async fn assert_exactly_once(js: &jetstream::Context, stream: &str, expected: &[Bytes]) {
    let stored = stored_payloads(js, stream).await;
    let twice: Vec<_> = stored.iter().filter(|(_, n)| **n > 1).map(|(p, _)| p).collect();
    assert!(twice.is_empty(), "stored more than once: {twice:?}");
    let missing: Vec<_> = expected.iter().filter(|p| !stored.contains_key(*p)).collect();
    assert!(missing.is_empty(), "{} messages missing, e.g. {:?}", missing.len(), missing.first());
    assert_eq!(stored.len(), expected.len(), "stream holds unexpected messages");
}

/// A CA and certificates it signs, written as PEM files.
pub struct TestPki {
    ca: rcgen::CertifiedIssuer<'static, rcgen::KeyPair>,
    pub ca_file: PathBuf,
}

impl TestPki {
    pub fn new(dir: &Path, name: &str) -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.distinguished_name.push(rcgen::DnType::CommonName, format!("{name} test CA"));
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::CrlSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().expect("CA key");
        let ca = rcgen::CertifiedIssuer::self_signed(params, key).expect("self-signed CA");
        let ca_file = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&ca_file, ca.pem()).expect("write CA");
        TestPki { ca, ca_file }
    }

    /// Writes `<name>.pem` and `<name>-key.pem`, signed by this CA; returns their paths.
    pub fn issue(&self, dir: &Path, name: &str, server: bool) -> (PathBuf, PathBuf) {
        let sans = if server { vec!["127.0.0.1".to_string(), "localhost".into()] } else { vec![] };
        let mut params = rcgen::CertificateParams::new(sans).expect("leaf params");
        params.distinguished_name.push(rcgen::DnType::CommonName, name);
        params.extended_key_usages = vec![if server {
            rcgen::ExtendedKeyUsagePurpose::ServerAuth
        } else {
            rcgen::ExtendedKeyUsagePurpose::ClientAuth
        }];
        let key = rcgen::KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.ca).expect("sign leaf");
        let cert_file = dir.join(format!("{name}.pem"));
        let key_file = dir.join(format!("{name}-key.pem"));
        std::fs::write(&cert_file, cert.pem()).expect("write cert");
        std::fs::write(&key_file, key.serialize_pem()).expect("write key");
        (cert_file, key_file)
    }
}
