//! The network between the collector and NATS. Partition and heal, and random packet
//! loss, with the collector in a network namespace and iptables rules there (root and
//! `ip netns` needed, else skipped); latency with jitter, and throttled bandwidth,
//! through the TCP fault proxy of `flow_chaos::proxy` (this kernel has no `tc netem`).

#[path = "../../tests/jetstream_support/mod.rs"]
mod jetstream_support;
#[path = "../../publish/tests/support/mod.rs"]
mod nats;
mod rig;
#[path = "../../tests/support/mod.rs"]
mod support;

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use flow_chaos::exporter::{Protocol, Traffic};
use flow_chaos::netns::{self, Netns};
use flow_chaos::proxy::{FaultProxy, Shaping};
use flow_chaos::verdict::Verdict;
use rig::{Addrs, Collector, audit, config, mode, plan, recovery_check, standard_checks};

const RECORDS: u32 = 10;

/// The namespace, or `None` after printing why the scenario is skipped.
fn netns_or_skip(name: &str) -> Option<Netns> {
    match netns::available() {
        Ok(()) => Some(Netns::create()),
        Err(reason) => {
            println!("chaos {name}: SKIPPED ({reason})");
            None
        }
    }
}

/// A nats-server on all addresses (the namespace reaches it through the veth pair),
/// and a collector inside `netns` publishing to it through its host end, with traffic
/// from the host end. Returns the server, the inspection URL (loopback), the
/// collector and the traffic.
async fn start_in_netns(netns: &Netns) -> (nats::NatsServer, String, Collector, Traffic, u16) {
    let port = nats::free_port();
    let server = nats::NatsServer::start_on(port, &format!("listen: 0.0.0.0:{port}"));
    let url = server.url();
    let addrs = Addrs::on(IpAddr::V4(netns.ns_ip));
    let nats_url = format!("nats://{}:{port}", netns.host_ip);
    let collector = Collector::start(&config(&nats_url, addrs), addrs, Some(netns));
    collector.wait_stream_ready();
    let mut traffic_plan = plan(addrs.udp, Protocol::V9, RECORDS, mode().pick(150, 400));
    traffic_plan.from = IpAddr::V4(netns.host_ip);
    let traffic = Traffic::start(traffic_plan);
    collector.wait_published(500, Duration::from_secs(30)).await;
    (server, url, collector, traffic, port)
}

/// A nats-server on loopback and a collector reaching it through the fault proxy.
async fn start_behind_proxy() -> (nats::NatsServer, String, FaultProxy, Collector, Traffic) {
    let (server, url) = jetstream_support::nats_server();
    let proxy = FaultProxy::start(SocketAddr::from(([127, 0, 0, 1], server.port))).await;
    let addrs = Addrs::loopback();
    let collector =
        Collector::start(&config(&format!("nats://{}", proxy.addr()), addrs), addrs, None);
    collector.wait_stream_ready();
    let traffic = Traffic::start(plan(addrs.udp, Protocol::V9, RECORDS, mode().pick(150, 400)));
    collector.wait_published(500, Duration::from_secs(30)).await;
    (server, url, proxy, collector, traffic)
}

/// Ends a run: traffic stops after `after`, the collector drains and stops, the stream
/// is audited with the standard checks.
async fn finish(
    name: &str,
    url: &str,
    collector: Collector,
    traffic: Traffic,
    recovery: Option<Duration>,
    bound: Duration,
) -> Verdict {
    tokio::time::sleep(mode().pick(Duration::from_secs(1), Duration::from_secs(5))).await;
    let ledger = traffic.stop();
    collector.wait_idle(Duration::from_secs(90)).await;
    let stopped = collector.stop();
    let mut v = Verdict::new(name);
    standard_checks(&mut v, &ledger, &audit(url, &ledger).await, &stopped, RECORDS.into());
    recovery_check(&mut v, recovery, bound);
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "chaos scenario: bash chaos/run.sh"]
async fn net_partition_heal() {
    let Some(netns) = netns_or_skip("net_partition_heal") else { return };
    let (_server, url, collector, traffic, port) = start_in_netns(&netns).await;
    let cut = mode().pick(Duration::from_secs(4), Duration::from_secs(30));
    // After a long cut TCP's retransmission backoff, not the collector, sets the pace.
    let bound = mode().pick(Duration::from_secs(45), Duration::from_secs(90));
    netns.partition(port);
    tokio::time::sleep(cut).await;
    let dropped_packets = netns.dropped_packets();
    netns.heal();
    let recovery = collector.recovery(bound).await;
    let mut v = finish("net_partition_heal", &url, collector, traffic, recovery, bound).await;
    v.note(format!("partition={}s packets_dropped={dropped_packets}", cut.as_secs()));
    v.check(dropped_packets > 0, "the partition dropped nothing");
    v.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "chaos scenario: bash chaos/run.sh"]
async fn net_packet_loss() {
    let Some(netns) = netns_or_skip("net_packet_loss") else { return };
    let (_server, url, collector, traffic, port) = start_in_netns(&netns).await;
    let lossy = mode().pick(Duration::from_secs(4), Duration::from_secs(30));
    let bound = Duration::from_secs(30);
    let probability = 0.1;
    netns.loss(port, probability);
    tokio::time::sleep(lossy).await;
    let dropped_packets = netns.dropped_packets();
    netns.heal();
    let recovery = collector.recovery(bound).await;
    let mut v = finish("net_packet_loss", &url, collector, traffic, recovery, bound).await;
    v.note(format!(
        "loss={:.0}% for {}s packets_dropped={dropped_packets}",
        probability * 100.0,
        lossy.as_secs()
    ));
    v.check(dropped_packets > 0, "the loss rule dropped nothing");
    v.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "chaos scenario: bash chaos/run.sh"]
async fn net_latency_jitter() {
    let (_server, url, proxy, collector, traffic) = start_behind_proxy().await;
    let slow = mode().pick(Duration::from_secs(4), Duration::from_secs(30));
    let bound = Duration::from_secs(30);
    // Each way 300 ms + up to 500 ms: round trips of 0.6–1.6 s, across the 1 s publish
    // timeout, so some acks come back after their publish was given up and re-sent.
    let shaping = Shaping {
        latency: Duration::from_millis(300),
        jitter: Duration::from_millis(500),
        ..Default::default()
    };
    proxy.set(shaping);
    tokio::time::sleep(slow).await;
    proxy.set(Shaping::default());
    let recovery = collector.recovery(bound).await;
    let slow_batches =
        collector.metrics().histogram_above("flow_collector_publish_latency_seconds", 1.0);
    let mut v = finish("net_latency_jitter", &url, collector, traffic, recovery, bound).await;
    v.note(format!(
        "latency=300ms+0..500ms each way for {}s batches_acked_after_1s_timeout={slow_batches}",
        slow.as_secs()
    ));
    v.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "chaos scenario: bash chaos/run.sh"]
async fn net_throttled() {
    let (_server, url, proxy, collector, traffic) = start_behind_proxy().await;
    let slow = mode().pick(Duration::from_secs(4), Duration::from_secs(30));
    let bound = Duration::from_secs(45);
    // Well under the ~400 KB/s the traffic needs: a backlog builds in the buffer.
    let rate = 64 * 1024;
    proxy.set(Shaping { bytes_per_sec: Some(rate), ..Default::default() });
    tokio::time::sleep(slow).await;
    let backlog = collector.metrics();
    let backlog = backlog.flows_decoded().saturating_sub(backlog.flows_published());
    proxy.set(Shaping::default());
    let recovery = collector.recovery(bound).await;
    let mut v = finish("net_throttled", &url, collector, traffic, recovery, bound).await;
    v.note(format!("bandwidth={}KiB/s for {}s backlog={backlog}", rate / 1024, slow.as_secs()));
    v.check(backlog > 0, "the throttle built no backlog");
    v.finish();
}
