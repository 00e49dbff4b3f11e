//! Shutdown drains what is queued, and a stuck sink cannot hold it forever.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use flow_actors::counters::flow_drop;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn shutdown_drains_everything_queued() {
    let recorder = Recorder::open();
    let gate = Arc::new(DecodeGate::default());
    let mut s = settings(vec![listener("flows.a")]);
    s.batch_size = 1000;
    let collector = start(s, &recorder, Arc::clone(&gate)).await;
    let to = collector.local_addrs()[0];

    // Exporter .2 blocks in its first decode; everything it is sent after queues up.
    let blocked = sender(2).await;
    send(&blocked, to, TAG_BLOCK, [1]).await;
    wait_until("exporter .2 is blocked", || gate.entered()).await;
    send(&blocked, to, 1, 2..=150).await;
    send(&sender(3).await, to, 1, 1..=100).await;
    wait_until("all datagrams are received", || {
        listener0(&collector.counters()).datagrams_received == 250
    })
    .await;
    assert!(recorder.len() <= 100, "exporter .2 published while blocked");

    let shutdown = tokio::spawn(collector.shutdown());
    tokio::time::sleep(Duration::from_millis(100)).await;
    gate.release();
    let report = shutdown.await.unwrap().unwrap();

    assert!(report.drained_cleanly);
    assert_accounted(&report.counters);
    assert_eq!(report.counters.flows_published(), 250);
    assert_eq!(listener0(&report.counters).datagrams_lost_in_restart, 0);
    let by_source = recorder.by_source();
    assert_eq!(by_source[&("flows.a".to_owned(), ip(2))], (1..=150).collect::<Vec<u32>>());
    assert_eq!(by_source[&("flows.a".to_owned(), ip(3))], (1..=100).collect::<Vec<u32>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stuck_sink_cannot_hold_shutdown_forever() {
    let recorder = Recorder::shut();
    let collector = start(settings(vec![listener("flows.a")]), &recorder, Arc::default()).await;
    send(&sender(2).await, collector.local_addrs()[0], 1, 0..5).await;
    wait_until("the sink is blocked", || recorder.publishes_started() == 1).await;

    let report = collector.shutdown().await.unwrap();
    assert!(!report.drained_cleanly);
    assert_accounted(&report.counters);
    let publisher = &report.counters.publishers[0].counters;
    assert_eq!(publisher.flows_published, 0);
    assert_eq!(publisher.flows_dropped.get(flow_drop::DRAIN_TIMEOUT), Some(&5));
    assert_eq!(recorder.len(), 0);
}
