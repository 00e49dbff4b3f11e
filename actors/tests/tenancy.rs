//! Per-partition limits over real UDP: a partition's exporter cap counts its exporters on
//! every listener, its rate is shared by all its exporters, and neither touches another
//! partition; each partition's flows are published and counted by publishers of its own.

mod common;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Instant;

use common::*;
use flow_actors::PartitionLimits;
use flow_actors::tenancy::{Registry, RegistryEntry};
use flow_decode::prefix::parse_prefix;

/// 127.0.0.0/28 (senders 2..15) belongs to `acme`; everything else to the install's
/// partition, `test`.
fn acme_registry() -> Registry {
    Registry::new(vec![RegistryEntry {
        prefix: parse_prefix("127.0.0.0/28").expect("a prefix"),
        partition: Some("acme".into()),
        ..Default::default()
    }])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partition_cap_counts_its_exporters_on_every_listener() {
    let recorder = Recorder::open();
    let mut s = settings(vec![listener("flows.a"), listener("flows.a")]);
    s.registry = acme_registry();
    s.partition_limits =
        [("acme".to_owned(), PartitionLimits { max_exporters: Some(2), max_pps: None })].into();
    let collector = start(s, &recorder, Arc::default()).await;
    let addrs = collector.local_addrs();

    send(&sender(2).await, addrs[0], 1, 0..5).await;
    send(&sender(3).await, addrs[1], 1, 0..5).await;
    wait_until("acme's two exporters are published", || recorder.len() == 10).await;
    send(&sender(4).await, addrs[0], 1, 0..7).await;
    send(&sender(20).await, addrs[0], 1, 0..4).await;
    wait_until("the third acme source is refused, the other partition's admitted", || {
        let counters = collector.counters();
        listener0(&counters).dropped_partition_exporter_cap == 7 && recorder.len() == 14
    })
    .await;
    let acme = &collector.counters().partitions[0];
    assert_eq!((acme.partition.as_str(), acme.exporters_live), ("acme", 2));
    assert_eq!((acme.max_exporters, acme.dropped_exporter_cap), (Some(2), 7));

    let report = collector.shutdown().await.expect("drains");
    assert_accounted(&report.counters);
    assert_eq!(report.counters.partitions[0].exporters_live, 0, "places are given back");
    let published = |partition: &str| -> u64 {
        let of = report.counters.publishers.iter().filter(|p| p.partition == partition);
        of.map(|p| p.counters.flows_published).sum()
    };
    assert_eq!((published("acme"), published("test")), (10, 4));
    assert_eq!(report.counters.flows_published(), 14, "the partitions add up to the total");
    assert!(!recorder.by_source().contains_key(&("flows.a".to_owned(), ip(4))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partition_rate_is_shared_by_its_exporters_and_spares_the_others() {
    const RATE: u32 = 50;
    const FLOOD: u32 = 1_000;
    let recorder = Recorder::open();
    let mut s = settings(vec![listener("flows.a")]);
    s.registry = acme_registry();
    let limits = PartitionLimits { max_exporters: None, max_pps: NonZeroU32::new(RATE) };
    s.partition_limits = [("acme".to_owned(), limits)].into();
    let collector = start(s, &recorder, Arc::default()).await;
    let to = collector.local_addrs()[0];

    let started = Instant::now();
    send(&sender(2).await, to, 1, 0..FLOOD).await;
    send(&sender(3).await, to, 2, 0..FLOOD).await;
    send(&sender(30).await, to, 4, 0..10).await;
    let sent = 2 * u64::from(FLOOD) + 10;
    wait_until("every datagram is decoded or dropped", || {
        let counters = collector.counters();
        let c = listener0(&counters);
        c.datagrams_received == sent && c.datagrams_unaccounted() == 0
    })
    .await;
    let elapsed = started.elapsed().as_secs_f64();

    let report = collector.shutdown().await.expect("drains");
    assert_accounted(&report.counters);
    let c = listener0(&report.counters);
    assert_eq!(c.flows_decoded + c.dropped_partition_rate_limited, sent, "{c:?}");
    assert_eq!(c.dropped_rate_limited, 0, "no exporter has a rate of its own");
    let acme_passed = c.flows_decoded - 10;
    // One second's burst plus the rate over the time it took, for both exporters together.
    let ceiling = f64::from(RATE) * (1.0 + elapsed);
    assert!(
        (acme_passed as f64) <= ceiling,
        "{acme_passed} acme flows passed a shared limit of {RATE}/s over {elapsed:.2} s"
    );
    assert_eq!(
        report.counters.partitions[0].dropped_rate_limited,
        c.dropped_partition_rate_limited
    );
    let quiet = recorder.by_source().get(&("flows.a".to_owned(), ip(30))).map_or(0, Vec::len);
    assert_eq!(quiet, 10, "the other partition's exporter keeps every flow");
}
