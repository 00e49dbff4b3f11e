//! With the OTLP collector unreachable and a tiny span queue, the pipeline still
//! decodes and publishes every flow: spans beyond the queue are dropped, never waited
//! for, and shutting export down still finishes. Its own test binary: it installs the
//! process-wide subscriber.

mod support;

use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use flow_telemetry::{OtelConfig, TelemetrySettings};
use support::netflow::{self, EXPORT_SECS, V9_FIELDS};
use support::pipeline;
use support::wait_until;

/// Datagrams sent, each announcing a new template (one span each) with one record.
const DATAGRAMS: u16 = 200;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_collector_costs_spans_not_flows() {
    let closed =
        TcpListener::bind("127.0.0.1:0").expect("bind a port").local_addr().expect("its address");
    // Nothing listens there once the listener is dropped: every export is refused.
    let settings = TelemetrySettings {
        otel: OtelConfig {
            enabled: true,
            endpoint: Some(format!("http://{closed}")),
            max_queue_size: Some(8),
            timeout_ms: Some(500),
            ..OtelConfig::default()
        },
        ..TelemetrySettings::default()
    };
    let guard = flow_telemetry::init(&settings).expect("telemetry starts");

    let flows = Arc::new(AtomicU64::new(0));
    let collector = pipeline::start(Arc::clone(&flows)).await;
    let to = collector.local_addrs()[0];
    let exporter = pipeline::exporter().await;
    for i in 0..DATAGRAMS {
        let template = 256 + i;
        let sets = [
            netflow::template_set(0, &[(template, V9_FIELDS)]),
            netflow::set(template, &netflow::v9_record([10, 0, 0, 1], 1000, 1000, 2000)),
        ];
        let payload = netflow::v9_packet(1_000_000, EXPORT_SECS, u32::from(i) + 1, 0, &sets);
        exporter.send_to(&payload, to).await.expect("send a datagram");
    }
    wait_until("every flow is published", || flows.load(Ordering::Relaxed) == u64::from(DATAGRAMS))
        .await;
    let counters = collector.counters();
    let learned = counters.listeners[0].counters.lifecycle_events.get("template_learned").copied();
    assert_eq!(learned, Some(u64::from(DATAGRAMS)));

    drop(collector);
    // The export result is a failure (nothing listens); what matters is that it ends.
    let shutdown = tokio::time::timeout(Duration::from_secs(60), guard.shutdown()).await;
    assert!(shutdown.is_ok(), "shutting export down did not finish");
}
