//! Drop-newest backpressure: with the sink stuck, a listener holds at most `channel_size`
//! datagrams in flight and drops (and counts) every datagram beyond that.

mod common;

use std::sync::Arc;

use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn channel_full_drops_are_counted_exactly() {
    const CHANNEL: u64 = 8;
    const BURST: u32 = 50;
    let recorder = Recorder::shut();
    let mut s = settings(vec![listener("flows.a")]);
    s.channel_size = CHANNEL as usize;
    s.batch_size = 1;
    let collector = start(s, &recorder, Arc::default()).await;
    let to = collector.local_addrs()[0];
    let from = sender(2).await;

    // The first flow goes into a publish that blocks: from now on nothing completes.
    send(&from, to, 1, [0]).await;
    wait_until("the sink is blocked on the first flow", || recorder.publishes_started() == 1).await;
    wait_until("the first datagram left the budget", || {
        listener0(&collector.counters()).datagrams_in_flight == 0
    })
    .await;

    send(&from, to, 1, 1..=BURST).await;
    wait_until("the burst is received", || {
        listener0(&collector.counters()).datagrams_received == u64::from(BURST) + 1
    })
    .await;
    let during = collector.counters();
    let c = listener0(&during);
    assert_eq!(c.datagrams_in_flight, CHANNEL);
    assert_eq!(c.dropped_channel_full, u64::from(BURST) - CHANNEL);
    assert_eq!(c.dropped_exporter_cap, 0);

    recorder.release();
    wait_until("the accepted flows are published", || recorder.len() == 1 + CHANNEL as usize).await;
    let report = collector.shutdown().await.unwrap();
    assert!(report.drained_cleanly);
    assert_accounted(&report.counters);
    let c = listener0(&report.counters);
    assert_eq!(c.dropped_channel_full, u64::from(BURST) - CHANNEL);
    assert_eq!(report.counters.flows_published(), 1 + CHANNEL);
    // Drop-newest: what got through is the start of the burst.
    let seqs = &recorder.by_source()[&("flows.a".to_owned(), ip(2))];
    assert_eq!(seqs, &(0..=CHANNEL as u32).collect::<Vec<u32>>());
}
