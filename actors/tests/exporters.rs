//! The exporter directory: the cap on live exporters, idle eviction, and restart of a
//! failed exporter.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use flow_actors::Fault;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_exporter_cap_refuses_new_sources_and_counts_them() {
    let recorder = Recorder::open();
    let mut s = settings(vec![listener("flows.a")]);
    s.exporters.max_exporters = 2;
    let collector = start(s, &recorder, Arc::default()).await;
    let to = collector.local_addrs()[0];

    send(&sender(2).await, to, 1, 0..5).await;
    send(&sender(3).await, to, 1, 0..5).await;
    wait_until("the admitted exporters' flows are published", || recorder.len() == 10).await;
    send(&sender(4).await, to, 1, 0..7).await;
    wait_until("the third source is refused", || {
        listener0(&collector.counters()).dropped_exporter_cap == 7
    })
    .await;
    let counters = collector.counters();
    assert_eq!(listener0(&counters).exporters_live, 2);

    let report = collector.shutdown().await.unwrap();
    assert_accounted(&report.counters);
    let c = listener0(&report.counters);
    assert_eq!((c.exporters_added, c.dropped_exporter_cap, c.flows_decoded), (2, 7, 10));
    assert!(!recorder.by_source().contains_key(&("flows.a".to_owned(), ip(4))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_idle_exporter_is_evicted_and_frees_its_place() {
    let recorder = Recorder::open();
    let mut s = settings(vec![listener("flows.a")]);
    s.exporters.max_exporters = 1;
    s.exporters.idle_timeout = Duration::from_millis(300);
    let collector = start(s, &recorder, Arc::default()).await;
    let to = collector.local_addrs()[0];
    let first = sender(2).await;
    let second = sender(3).await;

    send(&first, to, 1, 0..3).await;
    wait_until("the first exporter's flows are published", || recorder.len() == 3).await;
    send(&second, to, 1, [0]).await;
    wait_until("the second source is refused", || {
        listener0(&collector.counters()).dropped_exporter_cap == 1
    })
    .await;

    wait_until("the first exporter is evicted", || {
        let counters = collector.counters();
        let c = listener0(&counters);
        c.exporters_evicted == 1 && c.exporters_live == 0
    })
    .await;
    send(&second, to, 1, [1]).await;
    wait_until("the second source is admitted", || recorder.len() == 4).await;

    let report = collector.shutdown().await.unwrap();
    assert_accounted(&report.counters);
    let c = listener0(&report.counters);
    assert_eq!((c.exporters_added, c.dropped_exporter_cap), (2, 1));
    assert_eq!(recorder.by_source()[&("flows.a".to_owned(), ip(3))], vec![1]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_exporter_is_restarted_fresh_and_its_loss_counted() {
    let recorder = Recorder::open();
    let gate = Arc::new(DecodeGate::default());
    let collector = start(settings(vec![listener("flows.a")]), &recorder, Arc::clone(&gate)).await;
    let to = collector.local_addrs()[0];
    let victim = sender(2).await;
    let bystander = sender(3).await;

    send(&victim, to, 1, 0..10).await;
    send(&bystander, to, 1, 0..10).await;
    wait_until("the first flows are published", || recorder.len() == 20).await;

    // Hold the victim in a decode, queue the failure behind it, then five datagrams.
    send(&victim, to, TAG_BLOCK, [10]).await;
    wait_until("the victim is blocked", || gate.entered()).await;
    let found =
        collector.inject_fault(Fault::Exporter { listener: 0, exporter: ip(2) }).await.unwrap();
    assert!(found);
    send(&victim, to, 1, 11..16).await;
    // The listener handles datagrams in order: once this one is published, the five
    // before it are in the victim's mailbox, behind the failure.
    send(&bystander, to, 1, [10]).await;
    wait_until("the bystander's datagram is published", || recorder.len() == 21).await;

    gate.release();
    wait_until("the victim is restarted", || {
        listener0(&collector.counters()).exporters_restarted == 1
    })
    .await;
    send(&victim, to, 1, 16..20).await;
    send(&bystander, to, 1, 11..20).await;
    wait_until("the later flows are published", || recorder.len() == 35).await;

    let report = collector.shutdown().await.unwrap();
    assert_accounted(&report.counters);
    let c = listener0(&report.counters);
    assert_eq!(c.exporters_restarted, 1);
    assert_eq!(c.datagrams_lost_in_restart, 5);
    assert_eq!(c.exporters_added, 2, "a restart is not a new exporter");
    let by_source = recorder.by_source();
    let victim_seqs: Vec<u32> = (0..=10).chain(16..20).collect();
    assert_eq!(by_source[&("flows.a".to_owned(), ip(2))], victim_seqs);
    assert_eq!(by_source[&("flows.a".to_owned(), ip(3))], (0..20).collect::<Vec<u32>>());
    // The fresh session started over: its first datagram (seq 16) is not seq 0, so only
    // the first session learned a template.
    assert_eq!(c.lifecycle_events.get("template_learned"), Some(&2));
}

/// A decoder that panics half-way through a batch leaves nothing behind: the flows it
/// had appended are not published with the next batch decoded on that thread (one
/// runtime thread here, so the next batch is decoded into the same kept messages).
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_decode_that_panics_leaves_no_flow_for_the_next_batch() {
    let recorder = Recorder::open();
    let collector = start(settings(vec![listener("flows.a")]), &recorder, Arc::default()).await;
    let to = collector.local_addrs()[0];
    let (victim, bystander) = (sender(2).await, sender(3).await);

    send(&victim, to, 1, 0..3).await;
    wait_until("the victim's first flows are published", || recorder.len() == 3).await;
    send(&victim, to, TAG_PANIC, [3]).await;
    wait_until("the victim is restarted", || {
        listener0(&collector.counters()).exporters_restarted == 1
    })
    .await;
    send(&bystander, to, 1, 0..5).await;
    wait_until("the bystander's flows are published", || recorder.len() >= 8).await;

    let report = collector.shutdown().await.unwrap();
    assert_accounted(&report.counters);
    let by_source = recorder.by_source();
    assert_eq!(by_source[&("flows.a".to_owned(), ip(2))], vec![0, 1, 2], "no flow of the panic");
    assert_eq!(by_source[&("flows.a".to_owned(), ip(3))], (0..5).collect::<Vec<u32>>());
    assert_eq!(recorder.len(), 8);
}
