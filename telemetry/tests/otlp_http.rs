//! The HTTP/protobuf transport: a template learned through the real actors reaches an
//! OTLP/HTTP collector at `<endpoint>/v1/traces`. Its own test binary: it installs the
//! process-wide subscriber.

mod support;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use flow_telemetry::{OtelConfig, OtlpProtocol, TelemetrySettings};
use support::netflow::EXPORT_SECS;
use support::otlp::{self, int, text};
use support::pipeline::{self, PARTITION, TEMPLATE};
use support::wait_until;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_learned_span_arrives_over_otlp_http() {
    let (receiver, received) = otlp::http_receiver().await;
    let settings = TelemetrySettings {
        otel: OtelConfig {
            enabled: true,
            protocol: Some(OtlpProtocol::HttpProtobuf),
            endpoint: Some(format!("http://{receiver}")),
            service_name: Some("flow-collector-http-test".to_owned()),
            ..OtelConfig::default()
        },
        partition: PARTITION.to_owned(),
        ..TelemetrySettings::default()
    };
    let guard = flow_telemetry::init(&settings).expect("telemetry starts");

    let collector = pipeline::start(Arc::new(AtomicU64::new(0))).await;
    let exporter = pipeline::exporter().await;
    let payload = pipeline::template_and_data(1, 1_000_000, EXPORT_SECS, 1);
    exporter.send_to(&payload, collector.local_addrs()[0]).await.expect("send a datagram");
    wait_until("the template is learned", || {
        collector.counters().listeners[0].counters.lifecycle_events.get("template_learned")
            == Some(&1)
    })
    .await;
    guard.force_flush().await.expect("spans are flushed");

    wait_until("the span arrives", || !received.named("template.learned").is_empty()).await;
    let span = &received.named("template.learned")[0];
    assert_eq!(int(span.attribute("template_id")), Some(i64::from(TEMPLATE)));
    assert_eq!(
        text(span.attribute("exporter")),
        Some(exporter.local_addr().unwrap().to_string().as_str())
    );
    assert_eq!(text(span.resource_attribute("service.name")), Some("flow-collector-http-test"));
    drop(collector);
    guard.shutdown().await.expect("export shuts down");
}
