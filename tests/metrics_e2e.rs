//! The metrics and health endpoint of the real binary: `/metrics` counts exactly the
//! datagrams and flows of a replayed capture, `/healthz` and `/readyz` answer 200 while
//! the collector runs.

mod support;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use flow_replay::read_file;
use serde_json::json;
use support::http::{free_tcp_port, get, sample};
use support::{Collector, free_udp_port, shared_pcaps};

#[test]
fn metrics_count_exactly_what_was_sent_and_health_answers() {
    let capture = read_file(&shared_pcaps().join("100-IPFIXv10-CISCO/traffic-00.pcap"))
        .unwrap_or_else(|e| panic!("{e}"));
    let udp = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    let http = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
    let config = json!({
        "metrics_addr": http.to_string(),
        "listeners": [{ "protocol": "netflow", "listen_addr": udp.to_string() }],
    });
    let collector = Collector::start(&config, vec![udp]);
    let sender = UdpSocket::bind("127.0.0.81:0").unwrap_or_else(|e| panic!("bind: {e}"));
    let mut bytes = 0;
    for datagram in &capture.datagrams {
        bytes += sender.send_to(&datagram.payload, udp).unwrap_or_else(|e| panic!("send: {e}"));
        std::thread::sleep(Duration::from_millis(2));
    }
    let flows = collector.wait_for_lines(1, Duration::from_secs(20), Duration::from_millis(500));

    assert_eq!(get(http, "/healthz").0, 200);
    assert_eq!(get(http, "/readyz").0, 200);
    assert_eq!(get(http, "/nowhere").0, 404);
    let (status, metrics) = get(http, "/metrics");
    assert_eq!(status, 200);
    let listener = format!("{{listener=\"netflow@{udp}\",partition=\"default\"}}");
    let sent = capture.datagrams.len() as u64;
    assert_eq!(
        sample(&metrics, &format!("flow_collector_datagrams_received_total{listener}")),
        sent
    );
    assert_eq!(
        sample(&metrics, &format!("flow_collector_bytes_received_total{listener}")),
        bytes as u64
    );
    assert_eq!(
        sample(&metrics, &format!("flow_collector_flows_decoded_total{listener}")),
        flows as u64
    );
    assert_eq!(
        sample(
            &metrics,
            "flow_collector_flows_published_total{subject=\"flows.raw.netflow\",partition=\"default\"}"
        ),
        flows as u64
    );
    assert_eq!(sample(&metrics, &format!("flow_collector_exporters{listener}")), 1);
    // The router's own series, and its template cache as the listener sums it.
    let exporter =
        format!("{{listener=\"netflow@{udp}\",partition=\"default\",exporter=\"127.0.0.81\"}}");
    assert_eq!(
        sample(&metrics, &format!("flow_collector_exporter_datagrams_total{exporter}")),
        sent
    );
    assert_eq!(
        sample(&metrics, &format!("flow_collector_exporter_flows_total{exporter}")),
        flows as u64
    );
    let templates = sample(&metrics, &format!("flow_collector_exporter_templates{exporter}"));
    assert!(templates > 0, "the capture's templates are cached:\n{metrics}");
    assert_eq!(sample(&metrics, &format!("flow_collector_templates{listener}")), templates);
    assert!(sample(&metrics, &format!("flow_collector_template_cache_hits_total{listener}")) > 0);
    let subject = "{subject=\"flows.raw.netflow\",partition=\"default\"}";
    assert!(
        sample(&metrics, &format!("flow_collector_publish_latency_seconds_count{subject}")) > 0
    );
    assert_eq!(sample(&metrics, &format!("flow_collector_publish_in_flight_acks{subject}")), 0);
    let finished = collector.stop();
    assert!(finished.status.success(), "collector exit {}", finished.status);
    assert_eq!(finished.flows.len(), flows);
}
