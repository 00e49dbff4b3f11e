//! Lifecycle spans reach an OTLP/gRPC collector with their attributes: a template
//! learned, a missing template (rate-limited) and an exporter reboot, driven through the
//! real actors and decoders with real UDP datagrams. Its own test binary: it installs the
//! process-wide subscriber.

mod support;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use flow_telemetry::{OtelConfig, TelemetrySettings};
use support::netflow::EXPORT_SECS;
use support::otlp::{self, Received, ReceivedSpan, int, text};
use support::pipeline::{self, PARTITION, TEMPLATE, UNKNOWN_TEMPLATE, UPTIME_BEFORE_REBOOT_MS};
use support::wait_until;

fn telemetry(endpoint: String) -> TelemetrySettings {
    TelemetrySettings {
        otel: OtelConfig {
            enabled: true,
            endpoint: Some(endpoint),
            resource_attributes: [("deployment.environment".to_owned(), "test".to_owned())].into(),
            ..OtelConfig::default()
        },
        service_version: "9.9.9".to_owned(),
        partition: PARTITION.to_owned(),
        host_name: Some("collector-test".to_owned()),
        ..TelemetrySettings::default()
    }
}

/// The one span named `name`, once it has arrived.
async fn one_span(received: &Received, name: &str) -> ReceivedSpan {
    wait_until(&format!("a {name} span arrives"), || !received.named(name).is_empty()).await;
    let spans = received.named(name);
    assert_eq!(spans.len(), 1, "{name}: {spans:#?}");
    spans.into_iter().next().expect("one span")
}

fn assert_scope(span: &ReceivedSpan, exporter: &str, template: Option<u16>) {
    let name = &span.span.name;
    assert_eq!(text(span.attribute("exporter")), Some(exporter), "{name}");
    assert_eq!(int(span.attribute("domain")), Some(0), "{name}: domain is an i64");
    assert_eq!(int(span.attribute("template_id")), template.map(i64::from), "{name}: template_id");
    assert_eq!(text(span.attribute("protocol")), Some("V9"), "{name}");
    assert_eq!(text(span.attribute("partition")), Some(PARTITION), "{name}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle_spans_arrive_over_otlp_grpc_with_their_attributes() {
    let (receiver, received) = otlp::grpc_receiver().await;
    let guard =
        flow_telemetry::init(&telemetry(format!("http://{receiver}"))).expect("telemetry starts");
    assert!(guard.tracing_enabled());

    let collector = pipeline::start(Arc::new(AtomicU64::new(0))).await;
    let to = collector.local_addrs()[0];
    let exporter = pipeline::exporter().await;
    let source = exporter.local_addr().unwrap().to_string();
    let send = |payload: Vec<u8>| {
        let exporter = &exporter;
        async move { exporter.send_to(&payload, to).await.expect("send a datagram") }
    };

    send(pipeline::template_and_data(1, UPTIME_BEFORE_REBOOT_MS, EXPORT_SECS, 2)).await;
    for sequence in 2..5 {
        send(pipeline::data_without_template(sequence, UPTIME_BEFORE_REBOOT_MS + sequence)).await;
    }
    send(pipeline::after_reboot(5)).await;
    wait_until("the reboot is decoded", || {
        let counters = collector.counters();
        let events = &counters.listeners[0].counters.lifecycle_events;
        events.get("exporter_restarted") == Some(&1) && events.get("template_learned") == Some(&2)
    })
    .await;
    let counters = collector.counters();
    let missing = counters.listeners[0].counters.lifecycle_events.get("missing_template").copied();
    assert!(missing.is_some_and(|n| n >= 1), "{counters:?}");
    guard.force_flush().await.expect("spans are flushed");

    let learned = received.named("template.learned");
    assert!(!learned.is_empty(), "no template.learned span; got {:?}", received.names());
    assert_scope(&learned[0], &source, Some(TEMPLATE));
    assert_eq!(
        text(learned[0].resource_attribute("service.name")),
        Some("serviceradar-flow-collector")
    );
    assert_eq!(text(learned[0].resource_attribute("service.version")), Some("9.9.9"));
    assert_eq!(text(learned[0].resource_attribute("partition")), Some(PARTITION));
    assert_eq!(text(learned[0].resource_attribute("host.name")), Some("collector-test"));
    assert_eq!(text(learned[0].resource_attribute("deployment.environment")), Some("test"));
    // Its log line rides along as a span event with the line's own fields.
    let event = learned[0].span.events.first().expect("the log line as a span event");
    assert!(event.name.starts_with("Template learned - ID: 256"), "{event:?}");

    // Three datagrams without their template: one span, as one log line.
    let missing = one_span(&received, "template.missing").await;
    assert_scope(&missing, &source, Some(UNKNOWN_TEMPLATE));

    let restarted = one_span(&received, "exporter.restarted").await;
    assert_scope(&restarted, &source, None);
    // The template is learned again after the reboot: a second span.
    wait_until("the template is learned again", || received.named("template.learned").len() == 2)
        .await;

    // A lifecycle line outside any span becomes a span of its own.
    let started = one_span(&received, "listener.started").await;
    assert_eq!(text(started.attribute("listener")), Some("netflow@127.0.0.1:0"));
    // The exporter's first datagram starts its actor: one span naming it.
    let added = one_span(&received, "exporter.added").await;
    let exporter_ip = source.rsplit_once(':').map(|(ip, _)| ip);
    assert_eq!(text(added.attribute("exporter")), exporter_ip);
    assert_eq!(text(added.attribute("partition")), Some(PARTITION));

    drop(collector);
    guard.shutdown().await.expect("export shuts down");
}
