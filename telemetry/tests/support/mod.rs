//! Shared by the telemetry tests: a collector with the real decoders and a counting
//! sink, NetFlow v9 datagrams built by hand, OTLP receivers (gRPC and HTTP), and a
//! plain HTTP/1.1 client for the metrics endpoint.
#![allow(dead_code)]

#[path = "../../../decode/tests/support/netflow.rs"]
pub mod netflow;

pub mod http;
pub mod otlp;
pub mod pipeline;

use std::time::Duration;

/// Waits (up to a generous deadline: this is not a speed test) until `condition` holds.
pub async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
