//! The root supervisor: start-up failures are reported, failed listeners and publishers
//! are restarted, and a restarted publisher keeps the flows it had accepted.

mod common;

use std::sync::Arc;

use common::*;
use flow_actors::{Collector, CollectorError, Fault};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_listener_that_cannot_bind_fails_start_up_naming_the_address() {
    let recorder = Recorder::open();
    let mut bad = listener("flows.a");
    bad.listen_addr = "192.0.2.1:2055".parse().unwrap(); // TEST-NET-1: never local
    let result = Collector::start_with(
        settings(vec![listener("flows.a"), bad]),
        echo_sessions(Arc::default()),
        &recorder.factory(),
    )
    .await;
    let Err(error) = result else { panic!("start-up succeeded with an unbindable address") };
    assert!(matches!(error, CollectorError::Bind(_)), "{error:?}");
    let text = error.to_string();
    assert!(text.contains("192.0.2.1:2055") && text.contains("os error"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_listener_is_restarted_on_the_same_address() {
    let recorder = Recorder::open();
    let collector = start(settings(vec![listener("flows.a")]), &recorder, Arc::default()).await;
    let to = collector.local_addrs()[0];
    let from = sender(2).await;
    send(&from, to, 1, 0..5).await;
    wait_until("the first flows are published", || recorder.len() == 5).await;

    assert!(collector.inject_fault(Fault::Listener(0)).await.unwrap());
    wait_until("the listener is restarted", || {
        listener0(&collector.counters()).listener_restarts == 1
    })
    .await;
    // The old socket may linger an instant after the restart; send until one lands.
    let mut seq = 5;
    while recorder.len() == 5 {
        send(&from, to, 1, [seq]).await;
        seq += 1;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(seq < 1000, "the restarted listener never received");
    }
    let report = collector.shutdown().await.unwrap();
    assert_accounted(&report.counters);
    let c = listener0(&report.counters);
    assert_eq!(c.listener_restarts, 1);
    assert_eq!(c.exporters_live, 0);
    assert_eq!(report.counters.listeners[0].local_addr, to);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_publisher_loses_no_accepted_flow() {
    let recorder = Recorder::shut();
    let mut s = settings(vec![listener("flows.a")]);
    s.batch_size = 1000;
    let collector = start(s, &recorder, Arc::default()).await;
    let to = collector.local_addrs()[0];
    let from = sender(2).await;

    // The first flow's linger flush blocks in the sink; four more queue behind it, then
    // the failure.
    send(&from, to, 1, [0]).await;
    wait_until("the sink is blocked", || recorder.publishes_started() == 1).await;
    send(&from, to, 1, 1..5).await;
    wait_until("the exporter sent every flow", || {
        listener0(&collector.counters()).flows_decoded == 5
    })
    .await;
    assert!(collector.inject_fault(Fault::Publisher(0)).await.unwrap());

    // Released, the publisher takes the four into its batch, then fails: the batch lives
    // in the slot, and the restarted publisher publishes it.
    recorder.release();
    wait_until("the publisher is restarted", || {
        collector.counters().publishers[0].counters.publisher_restarts == 1
    })
    .await;
    wait_until("the held flows are published", || recorder.len() >= 5).await;

    let report = collector.shutdown().await.unwrap();
    assert_accounted(&report.counters);
    let publisher = &report.counters.publishers[0].counters;
    assert_eq!(publisher.flows_published, 5);
    assert_eq!(publisher.flows_dropped_total(), 0);
    assert_eq!(recorder.by_source()[&("flows.a".to_owned(), ip(2))], (0..5).collect::<Vec<u32>>());
}
