//! `/metrics` over real HTTP: after real NetFlow datagrams go through the real actors,
//! the scraped counters match what was sent — per listener, per exporter (with the
//! cardinality cap), per publisher. Also `/healthz`, 404 and 405.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use flow_actors::{Collector, CountersSnapshot};
use flow_telemetry::{CONTENT_TYPE, Metrics, Readiness, TelemetryServer};
use hyper::{Method, StatusCode};
use support::http::{self, sample};
use support::netflow::EXPORT_SECS;
use support::pipeline::{self, PARTITION, SUBJECT};
use support::wait_until;
use tokio::net::UdpSocket;

const DATAGRAMS: u32 = 5;
const RECORDS: usize = 3;
/// A listener's labels: its name and its own partition (the install's, `PARTITION`).
const LISTENER: &str = r#"listener="netflow@127.0.0.1:0",partition="test""#;

fn series(name: &str, labels: &str) -> String {
    format!("{name}{{{labels}}}")
}

/// The endpoint serving `collector`'s counters.
async fn serve(collector: &Collector) -> TelemetryServer {
    let handle = collector.counters_handle();
    let metrics = Arc::new(Metrics::new(move || handle.snapshot()));
    TelemetryServer::start("127.0.0.1:0".parse().unwrap(), metrics, Readiness::new())
        .await
        .expect("the endpoint starts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scraped_counters_match_the_datagrams_sent() {
    let flows = Arc::new(AtomicU64::new(0));
    let collector = pipeline::start(Arc::clone(&flows)).await;
    let to = collector.local_addrs()[0];
    let server = serve(&collector).await;
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
    let snapshot = || collector.counters();
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
    let partition_flows = value("flow_collector_partition_flows_total", LISTENER);
    assert_eq!(partition_flows, Some(expected_flows as f64), "the partition's running total");
    let subject = format!(r#"subject="{SUBJECT}",partition="{PARTITION}""#);
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
    assert_eq!(
        value("flow_collector_flow_latency_seconds_count", &subject),
        Some(expected_flows as f64),
        "one receipt-to-delivery observation per flow: {text}"
    );
    assert_eq!(value("flow_collector_publish_in_flight_acks", &subject), Some(0.0));
    assert_eq!(value("flow_collector_publish_buffered_messages", &subject), Some(0.0));
    let inf_bucket = format!(r#"le="+Inf",{subject}"#);
    assert_eq!(
        value("flow_collector_publish_latency_seconds_bucket", &inf_bucket),
        Some(batches as f64),
        "{text}"
    );

    // The exporter's own series, and the template cache as the listener sums it.
    let exporter = format!(r#"{LISTENER},exporter="127.0.0.1""#);
    let per_exporter = |name: &str| value(name, &exporter);
    assert_eq!(
        per_exporter("flow_collector_exporter_datagrams_total"),
        Some(f64::from(DATAGRAMS + 1)),
        "{text}"
    );
    assert_eq!(per_exporter("flow_collector_exporter_flows_total"), Some(expected_flows as f64));
    assert_eq!(per_exporter("flow_collector_exporter_decode_errors_total"), Some(1.0));
    assert_eq!(per_exporter("flow_collector_exporter_bytes_total"), Some(bytes as f64));
    assert_eq!(per_exporter("flow_collector_exporter_templates"), Some(1.0));
    assert_eq!(per_exporter("flow_collector_exporter_pending_flows"), Some(0.0));
    assert_eq!(value("flow_collector_templates", LISTENER), Some(1.0));
    // Every data set of the five datagrams found its template in the cache.
    assert_eq!(value("flow_collector_template_cache_hits_total", LISTENER), Some(5.0));
    assert_eq!(value("flow_collector_template_cache_misses_total", LISTENER), Some(0.0));

    let health = http::get(addr, "/healthz").await;
    assert_eq!((health.status, health.body.as_str()), (StatusCode::OK, "ok\n"));
    assert_eq!(http::get(addr, "/nope").await.status, StatusCode::NOT_FOUND);
    assert_eq!(
        http::request(addr, Method::POST, "/metrics").await.status,
        StatusCode::METHOD_NOT_ALLOWED
    );
    server.shutdown().await;
}

/// Past `metrics_max_exporters`, exporters share one `other` series; their figures are
/// all there, and the series count stays at the cap plus one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exporters_past_the_series_cap_share_the_other_series() {
    const EXPORTERS: u8 = 5;
    const MAX_SERIES: usize = 2;
    let mut settings = pipeline::settings();
    settings.exporters.max_series = MAX_SERIES;
    let flows = Arc::new(AtomicU64::new(0));
    let collector = pipeline::start_with(settings, Arc::clone(&flows)).await;
    let to = collector.local_addrs()[0];
    let server = serve(&collector).await;

    for n in 1..=EXPORTERS {
        let source = SocketAddr::from(([127, 0, 0, n], 0));
        let exporter = UdpSocket::bind(source).await.expect("bind a loopback source");
        let payload = pipeline::template_and_data(1, 1_000_000, EXPORT_SECS, RECORDS);
        exporter.send_to(&payload, to).await.expect("send a datagram");
    }
    let expected = u64::from(EXPORTERS) * RECORDS as u64;
    wait_until("every flow is published", || flows.load(Ordering::Relaxed) == expected).await;
    wait_until("every exporter has reported", || {
        let table = &collector.counters().listeners[0].counters.exporters;
        table.exporters.len() == MAX_SERIES && table.other_total().datagrams == 3
    })
    .await;

    let text = http::get(server.local_addr(), "/metrics").await.body;
    let datagram_series: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("flow_collector_exporter_datagrams_total{"))
        .collect();
    assert_eq!(datagram_series.len(), MAX_SERIES + 1, "{text}");
    let other = format!(r#"{LISTENER},exporter="other""#);
    let value = |name: &str| sample(&text, &series(name, &other));
    assert_eq!(value("flow_collector_exporter_datagrams_total"), Some(3.0), "{text}");
    assert_eq!(value("flow_collector_exporter_flows_total"), Some(3.0 * RECORDS as f64));
    assert_eq!(value("flow_collector_exporter_templates"), Some(3.0));
    let total: f64 = ["flow_collector_templates"]
        .iter()
        .filter_map(|name| sample(&text, &series(name, LISTENER)))
        .sum();
    assert_eq!(total, f64::from(EXPORTERS), "the listener total covers every exporter");
    server.shutdown().await;
}

fn published_batches(counters: &CountersSnapshot) -> u64 {
    counters.publisher(SUBJECT).map_or(0, |p| p.counters.batches_published)
}
