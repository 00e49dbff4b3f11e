//! The `run` entry point with the embedded defaults: real decoders, stdout sink.

mod common;

use common::*;
use flow_actors::{CollectorError, run};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_drains_and_reports_when_shutdown_resolves() {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(run(settings(vec![listener("flows.raw.sflow")]), async move {
        let _ = stopped.await;
    }));
    stop.send(()).unwrap();
    let report = running.await.unwrap().unwrap();
    assert!(report.drained_cleanly);
    assert_eq!(report.counters.listeners.len(), 1);
    assert_ne!(report.counters.listeners[0].local_addr.port(), 0);
    assert_eq!(report.counters.publishers[0].subject, "flows.raw.sflow");
    assert_accounted(&report.counters);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_fails_fast_on_an_unbindable_address() {
    let mut bad = listener("flows.raw.sflow");
    bad.listen_addr = "192.0.2.1:6343".parse().unwrap();
    let result = run(settings(vec![bad]), std::future::pending()).await;
    assert!(
        matches!(result, Err(CollectorError::Bind(ref e)) if e.addr == bad_addr()),
        "{result:?}"
    );
}

fn bad_addr() -> std::net::SocketAddr {
    "192.0.2.1:6343".parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_settings_are_refused() {
    let mut s = settings(vec![listener("flows.a")]);
    s.channel_size = 0;
    let result = run(s, std::future::pending()).await;
    assert!(matches!(result, Err(CollectorError::InvalidSettings(_))), "{result:?}");
    let result = run(settings(Vec::new()), std::future::pending()).await;
    assert!(matches!(result, Err(CollectorError::InvalidSettings(_))), "{result:?}");
}
