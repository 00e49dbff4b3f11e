//! NATS going away while flows keep arriving: killed and restarted, frozen past the
//! publish timeout, or not there at start-up. Every flow received ends up in the stream
//! exactly once (the buffer holds them meanwhile; retries reuse their Nats-Msg-Id).

mod common;
mod jetstream_support;
#[path = "../../publish/tests/support/mod.rs"]
mod nats;

use std::net::SocketAddr;
use std::time::Duration;

use common::{assert_accounted, listener0};
use flow_actors::Collector;
use flow_actors::sink::{ConnectionState, JetStreamLink};
use jetstream_support::*;
use nats::NatsServer;
use tokio::task::JoinHandle;

/// Sends `count` flows from 127.0.0.`from`, about one per millisecond, in the background.
fn keep_sending(from: u8, to: SocketAddr, count: u32) -> JoinHandle<Vec<FlowKey>> {
    tokio::spawn(async move {
        let mut sent = Vec::new();
        for start in (0..count).step_by(50) {
            sent.extend(send_paced(from, to, start..(start + 50).min(count)).await);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        sent
    })
}

/// Shuts the collector down once everything sent is published, and checks the books:
/// nothing lost on the way in, nothing dropped, nothing published twice.
async fn finish(collector: Collector, sent: &[FlowKey]) {
    let total = sent.len() as u64;
    wait_published(&collector, total).await;
    let report = collector.shutdown().await.expect("shutdown");
    assert!(report.drained_cleanly);
    assert_accounted(&report.counters);
    let c = listener0(&report.counters);
    assert_eq!(c.datagrams_received, total, "a datagram was lost on loopback: {c:?}");
    let publisher = &report.counters.publishers[0].counters;
    assert_eq!(publisher.flows_published, total);
    assert_eq!(publisher.flows_dropped_total(), 0, "{publisher:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_killed_and_restarted_twice_mid_stream_loses_and_duplicates_nothing() {
    let mut server = NatsServer::start();
    let link = JetStreamLink::new();
    let collector = start_collector(&link, Publishing::default()).await;
    connect_in_background(&link, &server.url());
    let to = collector.local_addrs()[0];
    let sender = keep_sending(2, to, 4000);

    for round in 1..=2 {
        wait_published(&collector, 800 * round).await;
        server.kill();
        // Down longer than the publish timeout: batches in flight must be re-sent.
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(!link.is_connected(), "the link sees the server gone");
        server.restart();
    }
    let sent = sender.await.expect("sender");
    finish(collector, &sent).await;
    assert_stream_holds_exactly(&server.url(), &sent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_server_frozen_past_the_publish_timeout_loses_and_duplicates_nothing() {
    let server = NatsServer::start();
    let link = JetStreamLink::new();
    let collector = start_collector(&link, Publishing::default()).await;
    connect_in_background(&link, &server.url());
    let to = collector.local_addrs()[0];
    let sender = keep_sending(2, to, 3000);

    wait_published(&collector, 500).await;
    server.stop();
    // Three publish timeouts (1 s each) while flows keep arriving into the buffer.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(collector.counters().flows_published() < 3000);
    server.resume();
    let sent = sender.await.expect("sender");
    finish(collector, &sent).await;
    assert_stream_holds_exactly(&server.url(), &sent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn flows_received_before_nats_comes_up_are_delivered() {
    let port = nats::free_port();
    let url = format!("nats://127.0.0.1:{port}");
    let link = JetStreamLink::new();
    let collector = start_collector(&link, Publishing::default()).await;
    let connecting = connect_in_background(&link, &url);
    let state = link.connection_state();
    let to = collector.local_addrs()[0];

    let sent = send_paced(2, to, 0..1500).await;
    common::wait_until("every flow is decoded", || {
        listener0(&collector.counters()).flows_decoded == 1500
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(collector.counters().flows_published(), 0);
    assert_eq!(*state.borrow(), ConnectionState::Disconnected);

    let server = NatsServer::start_on(port, "");
    connecting.await.expect("the link connects once NATS is up");
    assert!(link.is_connected());
    finish(collector, &sent).await;
    assert_stream_holds_exactly(&server.url(), &sent).await;
}
