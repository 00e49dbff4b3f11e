//! `/readyz` over real HTTP: 503 naming the failing check while the publisher cannot
//! publish, 200 once it can. Once with a flag flipped by the test, once with the real
//! JetStream connection state while a real nats-server is killed and started again.

mod support;

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use flow_actors::CountersSnapshot;
use flow_actors::sink::{
    Backoff, ConnectionState, JetStreamLink, JetStreamSettings, StreamSettings,
};
use flow_telemetry::{Metrics, Readiness, TelemetryServer, WatchCheck};
use hyper::StatusCode;
use support::http;
use support::wait_until;
use tokio::sync::watch;

async fn serve(readiness: Readiness) -> TelemetryServer {
    let metrics = Arc::new(Metrics::new(CountersSnapshot::default));
    TelemetryServer::start("127.0.0.1:0".parse().unwrap(), metrics, readiness)
        .await
        .expect("the endpoint starts")
}

/// Polls `/readyz` until it answers `status`; returns the body.
async fn readyz_becomes(addr: SocketAddr, status: StatusCode) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let reply = http::get(addr, "/readyz").await;
        if reply.status == status {
            return reply.body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "/readyz stayed {} ({})",
            reply.status,
            reply.body
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn readyz_follows_the_checks_and_healthz_does_not() {
    let (publisher_up, publisher) = watch::channel(false);
    let readiness = Readiness::new()
        .with_check("listeners", || true)
        .with_check("publisher", WatchCheck::new(publisher, |up| *up));
    let server = serve(readiness).await;
    let addr = server.local_addr();

    let down = http::get(addr, "/readyz").await;
    assert_eq!(
        (down.status, down.body.as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, "not ready: publisher\n")
    );
    assert_eq!(http::get(addr, "/healthz").await.status, StatusCode::OK);
    publisher_up.send_replace(true);
    let up = http::get(addr, "/readyz").await;
    assert_eq!((up.status, up.body.as_str()), (StatusCode::OK, "ready\n"));
    publisher_up.send_replace(false);
    assert_eq!(http::get(addr, "/readyz").await.status, StatusCode::SERVICE_UNAVAILABLE);
    server.shutdown().await;
}

/// A `nats-server -js` on a fixed port, killed on drop.
struct Nats {
    child: Child,
}

impl Nats {
    fn start(port: u16, store: &Path) -> Self {
        let binary = std::env::var_os("NATS_SERVER_BIN").unwrap_or_else(|| {
            let debian = Path::new("/usr/sbin/nats-server");
            if debian.exists() { debian.into() } else { "nats-server".into() }
        });
        let child = Command::new(binary)
            .args(["-a", "127.0.0.1", "-p", &port.to_string(), "-js", "-sd"])
            .arg(store)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nats-server (apt-get install nats-server)");
        Nats { child }
    }
}

impl Drop for Nats {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral port");
    listener.local_addr().expect("its address").port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_is_503_while_nats_is_down_and_200_once_it_is_back() {
    let store = std::env::temp_dir().join(format!("flow-telemetry-readyz-{}", std::process::id()));
    let port = free_port();
    let link = JetStreamLink::new();
    let readiness = Readiness::new().with_check(
        "publisher",
        WatchCheck::new(link.connection_state(), |state| *state == ConnectionState::Connected),
    );
    let server = serve(readiness).await;
    let addr = server.local_addr();
    assert!(readyz_becomes(addr, StatusCode::SERVICE_UNAVAILABLE).await.contains("publisher"));

    let nats = Nats::start(port, &store);
    let url = format!("nats://127.0.0.1:{port}");
    let mut stream = StreamSettings::new("READYZ", vec!["readyz.>".to_owned()]);
    // The default 10 GiB reservation may exceed what the server's disk allows.
    stream.max_bytes = 64 << 20;
    let mut settings = JetStreamSettings::new(url, stream);
    // A loaded machine may start nats-server slowly: retry often, not every 30 s.
    settings.connect_backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
    let connecting = link.clone();
    tokio::spawn(async move { connecting.connect(settings).await });
    if let Err(why) = link.ready().await {
        panic!("the link did not connect: {why}");
    }
    readyz_becomes(addr, StatusCode::OK).await;

    drop(nats);
    assert_eq!(
        readyz_becomes(addr, StatusCode::SERVICE_UNAVAILABLE).await,
        "not ready: publisher\n"
    );
    let nats = Nats::start(port, &store);
    readyz_becomes(addr, StatusCode::OK).await;
    wait_until("the link reports connected", || link.is_connected()).await;

    drop(nats);
    server.shutdown().await;
    let _ = std::fs::remove_dir_all(&store);
}
