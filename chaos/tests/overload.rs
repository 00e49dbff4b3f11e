//! Overload: a burst far above what the collector decodes, into a small `channel_size`.
//! Drops happen only where the operator guide says — drop-newest at the listener
//! channel (`channel_full`), and in the kernel when the socket buffer overflows
//! (`kernel`) — and are counted exactly; once the burst ends the collector is back to
//! zero loss.

#[path = "../../tests/jetstream_support/mod.rs"]
mod jetstream_support;
#[path = "../../publish/tests/support/mod.rs"]
mod nats;
mod rig;
#[path = "../../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use flow_chaos::exporter::{Ledger, Protocol, Traffic};
use flow_chaos::verdict::{Audit, Verdict};
use rig::{Addrs, Collector, config, mode, plan, recovery_check, standard_checks};
use serde_json::json;

const RECORDS: u32 = 4;

async fn run(traffic: Traffic) -> Ledger {
    tokio::task::spawn_blocking(move || traffic.finish()).await.expect("sender")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "chaos scenario: bash chaos/run.sh"]
async fn overload_burst() {
    let m = mode();
    let (_server, url) = jetstream_support::nats_server();
    let addrs = Addrs::loopback();
    let mut config = config(&url, addrs);
    config["channel_size"] = json!(64);
    config["listeners"][0]["buffer_size"] = json!(256 * 1024);
    let collector = Collector::start(&config, addrs, None);
    collector.wait_stream_ready();

    // The burst: flat out, far above what the decoders take.
    let burst_datagrams = m.pick(15_000, 100_000);
    let mut burst = plan(addrs.udp, Protocol::V9, RECORDS, 0);
    burst.max_datagrams = Some(burst_datagrams);
    let burst_ledger = run(Traffic::start(burst)).await;
    let ended = Instant::now();
    let after_burst = collector.wait_idle(Duration::from_secs(60)).await;
    let recovery = Some(ended.elapsed());
    let drops: BTreeMap<String, u64> = after_burst.datagrams_dropped();
    let channel_full = drops.get("channel_full").copied().unwrap_or(0);
    let kernel = drops.get("kernel").copied().unwrap_or(0);
    let received = after_burst.datagrams_received();
    let decoded = after_burst.datagrams_decoded();

    // Then paced traffic well within capacity (200 datagrams/s leaves the 64-slot
    // channel 320 ms of slack for a stall of the shared CPUs): nothing may be lost.
    let paced_datagrams = m.pick(600, 3_000);
    let mut paced = plan(addrs.udp, Protocol::V9, RECORDS, 200);
    paced.max_datagrams = Some(paced_datagrams);
    paced.first_id = 1 + (burst_datagrams as u32) * RECORDS;
    let paced_ledger = run(Traffic::start(paced)).await;
    let after_paced = collector.wait_idle(Duration::from_secs(60)).await;
    let stopped = collector.stop();
    let mut ledger = burst_ledger;
    ledger.merge(paced_ledger.clone());
    let stored = rig::stored_flows(&url).await;
    let audit = Audit::of(&stored, &ledger);
    let paced_audit = Audit::of(&stored, &paced_ledger);

    let mut v = Verdict::new("overload_burst");
    standard_checks(&mut v, &ledger, &audit, &stopped, RECORDS.into());
    recovery_check(&mut v, recovery, Duration::from_secs(60));
    v.note(format!(
        "burst_datagrams={burst_datagrams} received={received} decoded={decoded} channel_size=64"
    ));
    v.check(channel_full > 0, "the burst never filled the channel: not an overload");
    v.check(
        burst_datagrams == received + kernel,
        format!("{burst_datagrams} sent, {received} received + {kernel} dropped by the kernel"),
    );
    let other: u64 =
        drops.iter().filter(|(r, _)| *r != "channel_full" && *r != "kernel").map(|(_, n)| n).sum();
    v.check(other == 0, format!("drops outside the listener channel: {drops:?}"));
    v.check(
        received == decoded + channel_full,
        format!("received {received} != decoded {decoded} + channel_full {channel_full}"),
    );
    v.check(
        after_paced.datagrams_dropped() == drops,
        format!(
            "drops during the paced phase: {:?} -> {:?}",
            drops,
            after_paced.datagrams_dropped()
        ),
    );
    v.check(
        paced_audit.missing == 0,
        format!("the paced phase lost {} records", paced_audit.missing),
    );
    v.check(after_paced.flows_dropped().is_empty(), "the publisher dropped flows");
    v.finish();
}
