//! The JetStream sink in the real supervision tree against a real nats-server: every flow
//! reaches the stream once, the publisher's buffer is bounded and counted, a restarted
//! publisher and the shutdown drain lose nothing.

mod common;
mod jetstream_support;
#[path = "../../publish/tests/support/mod.rs"]
mod nats;

use std::time::Duration;

use common::{assert_accounted, listener0};
use flow_actors::Fault;
use flow_actors::sink::{BUFFER_FULL, JetStreamLink, LinkStatus};
use jetstream_support::*;
use nats::NatsServer;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_flow_reaches_the_stream_exactly_once() {
    let server = NatsServer::start();
    let link = JetStreamLink::new();
    let collector = start_collector(&link, Publishing::default()).await;
    connect_in_background(&link, &server.url());
    let to = collector.local_addrs()[0];

    let mut sent = Vec::new();
    for from in 2..=5 {
        sent.extend(send_paced(from, to, 0..500).await);
    }
    wait_published(&collector, 2000).await;
    assert!(link.is_connected());
    let report = collector.shutdown().await.expect("shutdown");
    assert!(report.drained_cleanly);
    assert_accounted(&report.counters);
    let c = listener0(&report.counters);
    assert_eq!((c.datagrams_received, c.flows_decoded), (2000, 2000));
    let publisher = &report.counters.publishers[0].counters;
    assert_eq!(publisher.flows_published, 2000);
    assert_eq!(publisher.flows_dropped_total(), 0, "{publisher:?}");
    assert!(publisher.batches_published >= 40, "batches of at most 50: {publisher:?}");
    assert_stream_holds_exactly(&server.url(), &sent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_buffer_drops_newest_as_buffer_full_and_keeps_the_rest() {
    let port = nats::free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let link = JetStreamLink::new();
    let publishing = Publishing { batch_size: 10, buffer_flows: 50, batches_in_flight: 4 };
    let collector = start_collector(&link, publishing).await;
    connect_in_background(&link, &url);
    let to = collector.local_addrs()[0];

    // NATS is not there: one flow at a time, so each arrives in a batch of its own.
    let socket = common::sender(2).await;
    for seq in 0..200 {
        socket.send_to(&common::payload(1, seq), to).await.expect("send");
        common::wait_until("the flow is decoded", || {
            listener0(&collector.counters()).flows_decoded == u64::from(seq) + 1
        })
        .await;
    }
    common::wait_until("every flow is buffered or dropped", || {
        let counters = collector.counters();
        counters.publishers[0].counters.flows_dropped.get(BUFFER_FULL) == Some(&150)
    })
    .await;
    let during = collector.counters();
    let c = listener0(&during);
    assert_eq!(c.datagrams_in_flight, 0, "buffered flows gave their budget back");
    assert_eq!(c.dropped_channel_full, 0);
    assert_eq!(during.flows_published(), 0);
    assert!(matches!(link.status(), LinkStatus::Connecting));

    let server = NatsServer::start_on(port, "");
    wait_published(&collector, 50).await;
    let report = collector.shutdown().await.expect("shutdown");
    assert!(report.drained_cleanly);
    assert_accounted(&report.counters);
    let publisher = &report.counters.publishers[0].counters;
    assert_eq!(publisher.flows_published, 50);
    assert_eq!(publisher.flows_dropped.get(BUFFER_FULL), Some(&150));
    assert_eq!(publisher.flows_dropped_total(), 150);
    // Drop-newest: the buffer kept the first fifty.
    let kept: Vec<FlowKey> = (0..50).map(|seq| (common::ip(2), seq)).collect();
    assert_stream_holds_exactly(&server.url(), &kept).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_publishes_everything_buffered_before_it_returns() {
    // Frozen server: the next flows are buffered and in flight, unacknowledged.
    let (server, collector, sent) = buffered_behind_a_frozen_server(3, 0..900).await;
    assert!(collector.counters().flows_published() < 1000);
    let shutdown = tokio::spawn(collector.shutdown());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!shutdown.is_finished(), "the drain waits for the buffered flows");
    server.resume();
    let report = shutdown.await.expect("join").expect("shutdown");

    assert!(report.drained_cleanly);
    assert_accounted(&report.counters);
    let publisher = &report.counters.publishers[0].counters;
    assert_eq!(publisher.flows_published, 1000);
    assert_eq!(publisher.flows_dropped_total(), 0, "{publisher:?}");
    assert_stream_holds_exactly(&server.url(), &sent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_publisher_loses_nothing_in_its_buffer_or_in_flight() {
    let (server, collector, sent) = buffered_behind_a_frozen_server(2, 100..600).await;
    assert!(collector.inject_fault(Fault::Publisher(0)).await.expect("inject"));
    common::wait_until("the publisher is restarted", || {
        collector.counters().publishers[0].counters.publisher_restarts == 1
    })
    .await;
    server.resume();
    wait_published(&collector, 600).await;

    let report = collector.shutdown().await.expect("shutdown");
    assert_accounted(&report.counters);
    let publisher = &report.counters.publishers[0].counters;
    assert_eq!(publisher.flows_published, 600);
    assert_eq!(publisher.flows_dropped_total(), 0, "{publisher:?}");
    assert_stream_holds_exactly(&server.url(), &sent).await;
}

/// A collector that published 100 flows from 127.0.0.2, then, with the server frozen
/// (SIGSTOP), decoded `more` flows from `127.0.0.<from>` that wait buffered and in
/// flight. Returns the server, the collector and every flow sent.
async fn buffered_behind_a_frozen_server(
    from: u8,
    more: std::ops::Range<u32>,
) -> (NatsServer, flow_actors::Collector, Vec<FlowKey>) {
    let server = NatsServer::start();
    let link = JetStreamLink::new();
    let collector = start_collector(&link, Publishing::default()).await;
    connect_in_background(&link, &server.url());
    let to = collector.local_addrs()[0];
    let mut sent = send_paced(2, to, 0..100).await;
    wait_published(&collector, 100).await;
    server.stop();
    sent.extend(send_paced(from, to, more).await);
    let total = u64::try_from(sent.len()).unwrap_or(u64::MAX);
    common::wait_until("the flows are decoded", || {
        listener0(&collector.counters()).flows_decoded == total
    })
    .await;
    (server, collector, sent)
}
