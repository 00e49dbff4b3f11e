//! Datagrams from several exporters, over real UDP, reach the sink exactly once each.

mod common;

use std::sync::Arc;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn datagrams_from_several_sources_reach_the_sink_exactly() {
    let recorder = Recorder::open();
    let collector =
        start(settings(vec![listener("flows.a"), listener("flows.b")]), &recorder, Arc::default())
            .await;
    let addrs = collector.local_addrs();
    assert_eq!(addrs.len(), 2);
    assert!(addrs.iter().all(|a| a.port() != 0), "{addrs:?}");

    for n in 2..=5 {
        let from = sender(n).await;
        send(&from, addrs[0], 1, 0..50).await;
        send(&from, addrs[1], 2, 0..10).await;
    }
    // One undecodable datagram: counted as a decode error, not a flow.
    sender(2).await.send_to(&[], addrs[0]).await.unwrap();

    wait_until("every flow is published", || recorder.len() == 240).await;
    let report = collector.shutdown().await.unwrap();
    assert!(report.drained_cleanly);
    assert_accounted(&report.counters);
    assert_eq!(recorder.len(), 240, "a flow was published twice");

    let by_source = recorder.by_source();
    assert_eq!(by_source.len(), 8);
    for n in 2..=5 {
        assert_eq!(by_source[&("flows.a".to_owned(), ip(n))], (0..50).collect::<Vec<u32>>());
        assert_eq!(by_source[&("flows.b".to_owned(), ip(n))], (0..10).collect::<Vec<u32>>());
    }

    let a = &report.counters.listeners[0].counters;
    assert_eq!(a.datagrams_received, 201);
    assert_eq!(a.bytes_received, 200 * 5);
    assert_eq!(a.datagrams_decoded, 201);
    assert_eq!(a.flows_decoded, 200);
    assert_eq!(a.datagrams_dropped(), 0);
    assert_eq!(a.decode_errors.get("truncated_header"), Some(&1));
    assert_eq!(a.lifecycle_events.get("template_learned"), Some(&4));
    assert_eq!(a.exporters_added, 4);
    let b = &report.counters.listeners[1].counters;
    assert_eq!((b.datagrams_received, b.flows_decoded, b.exporters_added), (40, 40, 4));

    let published: Vec<(&str, u64)> = report
        .counters
        .publishers
        .iter()
        .map(|p| (p.subject.as_str(), p.counters.flows_published))
        .collect();
    assert_eq!(published, vec![("flows.a", 200), ("flows.b", 40)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn listeners_sharing_a_subject_share_one_publisher() {
    let recorder = Recorder::open();
    let collector =
        start(settings(vec![listener("flows.a"), listener("flows.a")]), &recorder, Arc::default())
            .await;
    let addrs = collector.local_addrs();
    let from = sender(7).await;
    send(&from, addrs[0], 1, 0..20).await;
    send(&from, addrs[1], 1, 20..30).await;
    wait_until("every flow is published", || recorder.len() == 30).await;
    let report = collector.shutdown().await.unwrap();
    assert_accounted(&report.counters);
    assert_eq!(report.counters.publishers.len(), 1);
    assert_eq!(report.counters.publishers[0].counters.flows_published, 30);
}
