//! `/metrics` over real HTTP: after real NetFlow datagrams go through the real actors,
//! the scraped counters match what was sent. Also `/healthz`, 404 and 405.

mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use flow_actors::{Collector, CountersSnapshot};
use flow_telemetry::{CONTENT_TYPE, Metrics, Readiness, TelemetryServer};
use hyper::{Method, StatusCode};
use support::http::{self, sample};
use support::netflow::EXPORT_SECS;
use support::pipeline::{self, SUBJECT};
use support::wait_until;

const DATAGRAMS: u32 = 5;
const RECORDS: usize = 3;
const LISTENER: &str = r#"listener="netflow@127.0.0.1:0""#;

fn series(name: &str, labels: &str) -> String {
    format!("{name}{{{labels}}}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scraped_counters_match_the_datagrams_sent() {
    // The metrics exist before the collector (the publisher needs their handle), so the
    // counters are read through a slot filled once the collector has started.
    let slot: Arc<OnceLock<Collector>> = Arc::new(OnceLock::new());
    let reader = Arc::clone(&slot);
    let metrics =
        Arc::new(Metrics::new(move || reader.get().map(Collector::counters).unwrap_or_default()));
    let flows = Arc::new(AtomicU64::new(0));
    let collector = pipeline::start(Arc::clone(&flows), Some(metrics.publish())).await;
    let to = collector.local_addrs()[0];
    assert!(slot.set(collector).is_ok());
    let server = TelemetryServer::start(
        "127.0.0.1:0".parse().unwrap(),
        Arc::clone(&metrics),
        Readiness::new(),
    )
    .await
    .expect("the endpoint starts");
    let addr = server.local_addr();

    let exporter = pipeline::exporter().await;
    let mut bytes = 0;
    for sequence in 1..=DATAGRAMS {
        let payload = pipeline::template_and_data(
            sequence,
            1_000_000 + sequence * 1000,
            EXPORT_SECS + sequence,
            RECORDS,
        );
        bytes += payload.len();
        exporter.send_to(&payload, to).await.expect("send a datagram");
    }
    let garbage = [0u8, 9, 0];
    bytes += garbage.len();
    exporter.send_to(&garbage, to).await.expect("send a datagram");
    let expected_flows = u64::from(DATAGRAMS) * RECORDS as u64;
    wait_until("every flow is published", || flows.load(Ordering::Relaxed) == expected_flows).await;
    let snapshot = || slot.get().map(Collector::counters).unwrap_or_default();
    wait_until("the publisher has counted every flow and the bad datagram is counted", || {
        let c = snapshot();
        c.flows_published() == expected_flows
            && c.listeners[0].counters.decode_errors.values().sum::<u64>() == 1
    })
    .await;
    let counters = snapshot();

    let scrape = http::get(addr, "/metrics").await;
    assert_eq!(scrape.status, StatusCode::OK);
    assert_eq!(scrape.content_type, CONTENT_TYPE);
    let text = &scrape.body;
    let value = |name: &str, labels: &str| sample(text, &series(name, labels));
    assert_eq!(
        value("flow_collector_datagrams_received_total", LISTENER),
        Some(f64::from(DATAGRAMS + 1)),
        "{text}"
    );
    assert_eq!(value("flow_collector_bytes_received_total", LISTENER), Some(bytes as f64));
    assert_eq!(value("flow_collector_flows_decoded_total", LISTENER), Some(expected_flows as f64));
    assert_eq!(value("flow_collector_exporters", LISTENER), Some(1.0));
    let learned = format!(r#"{LISTENER},event="template_learned""#);
    assert_eq!(value("flow_collector_lifecycle_events_total", &learned), Some(1.0));
    let errors: f64 = text
        .lines()
        .filter(|l| {
            l.starts_with(&format!("flow_collector_decode_errors_total{{{LISTENER},reason="))
        })
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    assert_eq!(errors, 1.0, "{text}");
    let channel_full = format!(r#"{LISTENER},reason="channel_full""#);
    assert_eq!(value("flow_collector_datagrams_dropped_total", &channel_full), Some(0.0));
    if std::path::Path::new("/proc/net/udp").exists() {
        let kernel = format!(r#"{LISTENER},reason="kernel""#);
        assert_eq!(value("flow_collector_datagrams_dropped_total", &kernel), Some(0.0), "{text}");
    }
    let subject = format!(r#"subject="{SUBJECT}""#);
    assert_eq!(
        value("flow_collector_flows_published_total", &subject),
        Some(expected_flows as f64)
    );
    let batches = published_batches(&counters);
    assert!(batches >= 1);
    assert_eq!(
        value("flow_collector_publish_latency_seconds_count", &subject),
        Some(batches as f64),
        "{text}"
    );
    assert_eq!(value("flow_collector_publish_in_flight_acks", &subject), Some(0.0));

    let health = http::get(addr, "/healthz").await;
    assert_eq!((health.status, health.body.as_str()), (StatusCode::OK, "ok\n"));
    assert_eq!(http::get(addr, "/nope").await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        http::request(addr, Method::POST, "/metrics").await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    server.shutdown().await;
}

fn published_batches(counters: &CountersSnapshot) -> u64 {
    counters.publisher(SUBJECT).map_or(0, |p| p.counters.batches_published)
}
