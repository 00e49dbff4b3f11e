//! Source control on a listener: the allow and deny lists, and the per-exporter rate
//! limit. What is refused is counted by reason; everyone else keeps flowing.

mod common;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Instant;

use common::*;
use flow_actors::SourceFilter;
use flow_decode::prefix::{IpNet, parse_prefix};

fn nets(list: &[&str]) -> Vec<IpNet> {
    list.iter().map(|net| parse_prefix(net).expect("a prefix")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn denied_and_unlisted_sources_are_dropped_and_counted() {
    let recorder = Recorder::open();
    let mut listener = listener("flows.a");
    // 127.0.0.0/30 holds .0 to .3; .3 is denied; .4 is outside the allow list.
    listener.sources =
        SourceFilter { allow: nets(&["127.0.0.0/30"]), deny: nets(&["127.0.0.3/32"]) };
    let collector = start(settings(vec![listener]), &recorder, Arc::default()).await;
    let to = collector.local_addrs()[0];

    send(&sender(3).await, to, 1, 0..4).await;
    send(&sender(4).await, to, 1, 0..6).await;
    send(&sender(2).await, to, 1, 0..5).await;
    wait_until("the allowed exporter's flows are published", || recorder.len() == 5).await;
    wait_until("the others are counted", || {
        listener0(&collector.counters()).dropped_source_denied == 10
    })
    .await;

    let report = collector.shutdown().await.expect("drains");
    assert_accounted(&report.counters);
    let c = listener0(&report.counters);
    assert_eq!((c.datagrams_received, c.flows_decoded, c.exporters_added), (15, 5, 1));
    let sources = recorder.by_source();
    assert!(sources.contains_key(&("flows.a".to_owned(), ip(2))));
    assert!(!sources.contains_key(&("flows.a".to_owned(), ip(3))));
    assert!(!sources.contains_key(&("flows.a".to_owned(), ip(4))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_exporter_over_its_rate_is_cut_and_the_others_are_not() {
    const RATE: u32 = 50;
    const FLOOD: u32 = 2_000;
    let recorder = Recorder::open();
    let mut listener = listener("flows.a");
    listener.max_exporter_pps = NonZeroU32::new(RATE);
    let collector = start(settings(vec![listener]), &recorder, Arc::default()).await;
    let to = collector.local_addrs()[0];

    let started = Instant::now();
    send(&sender(2).await, to, 1, 0..FLOOD).await;
    send(&sender(3).await, to, 2, 0..10).await;
    wait_until("every datagram is decoded or dropped", || {
        let counters = collector.counters();
        let c = listener0(&counters);
        c.datagrams_received == u64::from(FLOOD) + 10 && c.datagrams_unaccounted() == 0
    })
    .await;
    let elapsed = started.elapsed().as_secs_f64();

    let report = collector.shutdown().await.expect("drains");
    assert_accounted(&report.counters);
    let c = listener0(&report.counters);
    assert_eq!(c.flows_decoded + c.dropped_rate_limited, u64::from(FLOOD) + 10);
    // A second's burst plus the rate over the time it took, and no more.
    let ceiling = f64::from(RATE) * (1.0 + elapsed) + 10.0;
    assert!(
        (c.flows_decoded as f64) <= ceiling,
        "{} flows passed a limit of {RATE}/s over {elapsed:.2} s",
        c.flows_decoded
    );
    assert!(c.dropped_rate_limited > 0);
    let sources = recorder.by_source();
    let quiet = sources.get(&("flows.a".to_owned(), ip(3))).map_or(0, Vec::len);
    assert_eq!(quiet, 10, "the well-behaved exporter keeps every flow");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn datagrams_over_the_size_cap_are_dropped_and_counted() {
    let recorder = Recorder::open();
    let mut listener = listener("flows.a");
    listener.max_datagram_bytes = 256;
    let collector = start(settings(vec![listener]), &recorder, Arc::default()).await;
    let to = collector.local_addrs()[0];

    let big = sender(2).await;
    for _ in 0..3 {
        big.send_to(&[0u8; 1_000], to).await.expect("send an oversized datagram");
    }
    send(&big, to, 1, 0..4).await;
    wait_until("the small datagrams are published", || recorder.len() == 4).await;
    wait_until("the big ones are counted", || {
        listener0(&collector.counters()).dropped_oversized == 3
    })
    .await;
    let report = collector.shutdown().await.expect("drains");
    assert_accounted(&report.counters);
    let c = listener0(&report.counters);
    assert_eq!((c.datagrams_received, c.datagrams_decoded), (7, 4));
    let small = payload(1, 0).len() as u64;
    assert_eq!(c.bytes_received, 3 * 1_000 + 4 * small, "an oversized datagram counts in full");
}
