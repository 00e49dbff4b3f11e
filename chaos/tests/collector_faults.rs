//! Faults inside the collector. The binary has no fault hook, so the actor failures run
//! the real supervision tree in-process (flow-actors' test-only `fault-injection`
//! feature, `Collector::inject_fault`) with the real NetFlow decoders and the real
//! JetStream sink against a real nats-server: an exporter actor, the publisher actor
//! and the listener actor made to panic, each restarted by its supervisor. A listener
//! socket error is injected into the real binary from outside: `ss -K` destroys its
//! UDP socket, whose next receive fails with ECONNABORTED (needs root).

#[path = "../../actors/tests/jetstream_support/mod.rs"]
mod actor_jetstream;
#[path = "../../actors/tests/common/mod.rs"]
mod common;
#[path = "../../tests/jetstream_support/mod.rs"]
mod jetstream_support;
#[path = "../../publish/tests/support/mod.rs"]
mod nats;
mod rig;
#[path = "../../tests/support/mod.rs"]
mod support;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use flow_actors::settings::JetStreamSinkSettings;
use flow_actors::sink::JetStreamLink;
use flow_actors::{Collector, CountersSnapshot, Fault, ListenerProtocol, SinkSettings};
use flow_chaos::exporter::{Ledger, Protocol, Traffic};
use flow_chaos::metrics::vm_hwm_kib;
use flow_chaos::netns::is_root;
use flow_chaos::verdict::{Audit, Verdict};
use flow_chaos::wait_for_async;
use flow_decode::netflow::PendingMemory;
use flow_decode::{NetflowSettings, PendingFlowSettings};
use rig::{Addrs, config, mode, plan, recovery_check, standard_checks};

const RECORDS: u32 = 10;
const SENDER: [u8; 4] = [127, 0, 0, 2];

/// The real tree in-process: one NetFlow listener with the real decoders (pending
/// cache on, as the binary's default), the JetStream sink connected to `url`.
async fn start_in_process(url: &str) -> Collector {
    let link = JetStreamLink::new();
    let mut listener = common::listener(actor_jetstream::SUBJECT);
    listener.buffer_size = 8 << 20;
    listener.protocol = ListenerProtocol::Netflow(NetflowSettings {
        max_templates: 2000,
        max_template_fields: 10_000,
        pending: Some(PendingFlowSettings {
            max_pending_flows: 256,
            max_entries_per_template: 1024,
            max_entry_size_bytes: 65_535,
            ttl: Duration::from_secs(300),
            max_bytes: 16 << 20,
            memory: Arc::new(PendingMemory::unbounded()),
        }),
        sampling: Default::default(),
    });
    let mut settings = common::settings(vec![listener]);
    settings.sink = SinkSettings::JetStream(JetStreamSinkSettings {
        link: link.clone(),
        buffer_flows: rig::PUBLISH_BUFFER_FLOWS as usize,
        batches_in_flight: 8,
        framing: Default::default(),
        partition_links: Default::default(),
    });
    let collector = Collector::start(settings).await.expect("the collector starts");
    actor_jetstream::connect_in_background(&link, url);
    collector
}

fn published(c: &CountersSnapshot) -> u64 {
    c.flows_published()
}

/// Waits until `condition` holds on the counters.
async fn wait_counters(
    collector: &Collector,
    what: &str,
    timeout: Duration,
    condition: impl Fn(&CountersSnapshot) -> bool,
) -> Duration {
    let waited = wait_for_async(timeout, || async { condition(&collector.counters()) }).await;
    waited.unwrap_or_else(|| panic!("timed out waiting until {what}: {:?}", collector.counters()))
}

/// An in-process run: traffic from 127.0.0.2, `fault` injected once the first flows
/// are published, then `after` (the scenario's own waiting and measuring), then the
/// drain. Returns the ledger, the final counters and the stream audit.
struct InProcess {
    ledger: Ledger,
    report: flow_actors::RunReport,
    audit: Audit,
    recovery: Option<Duration>,
    /// Datagrams sent between the injection and the restart being seen.
    sent_during_restart: u64,
}

async fn run_in_process(fault: Fault, restarted: fn(&CountersSnapshot) -> bool) -> InProcess {
    let m = mode();
    let (_server, url) = jetstream_support::nats_server();
    let collector = start_in_process(&url).await;
    let to = collector.local_addrs()[0];
    let mut traffic_plan = plan(to, Protocol::V9, RECORDS, m.pick(150, 400));
    traffic_plan.from = IpAddr::from(SENDER);
    let traffic = Traffic::start(traffic_plan);
    wait_counters(&collector, "flows are published", Duration::from_secs(30), |c| {
        published(c) >= 500
    })
    .await;

    let before = traffic.datagrams_sent();
    let injected_at = Instant::now();
    assert!(collector.inject_fault(fault).await.expect("inject"), "{fault:?}: no such actor");
    wait_counters(&collector, "the actor is restarted", Duration::from_secs(20), restarted).await;
    let sent_during_restart = traffic.datagrams_sent() - before;
    // Recovered: flows sent after the restart are published (a restarted exporter has
    // learned its template again from the exporter's next refresh).
    let target = collector.counters().flows_decoded() + 40 * u64::from(RECORDS);
    let recovered = wait_for_async(Duration::from_secs(30), || async {
        published(&collector.counters()) >= target
    })
    .await
    .map(|_| injected_at.elapsed());
    tokio::time::sleep(m.pick(Duration::from_secs(1), Duration::from_secs(5))).await;
    let ledger = traffic.stop();
    wait_counters(&collector, "the pipeline is idle", Duration::from_secs(60), |c| {
        let l = &c.listeners[0].counters;
        let p = &c.publishers[0].counters;
        l.datagrams_in_flight == 0 && p.flows_published + p.flows_dropped_total() == l.flows_decoded
    })
    .await;
    let report = collector.shutdown().await.expect("shutdown");
    let audit = rig::audit(&url, &ledger).await;
    InProcess { ledger, report, audit, recovery: recovered, sent_during_restart }
}

/// The checks of an in-process run: sent = stream + counted drops (datagrams lost in a
/// restart and publisher drops; `unbound` more for a listener restart), no duplicate.
fn in_process_verdict(name: &str, run: &InProcess, unbound: u64) -> Verdict {
    let mut v = Verdict::new(name);
    let c = &run.report.counters;
    let l = &c.listeners[0].counters;
    let p = &c.publishers[0].counters;
    v.sent = run.ledger.records_on_wire();
    v.published = p.flows_published;
    v.audit(&run.audit);
    v.peak_rss_kib = vm_hwm_kib(std::process::id());
    v.drop_count("lost_in_restart", l.datagrams_lost_in_restart * u64::from(RECORDS));
    v.drop_count("channel_full", l.dropped_channel_full * u64::from(RECORDS));
    v.drop_count("pending_dropped", l.template_cache.pending_dropped * u64::from(RECORDS));
    for (reason, n) in &p.flows_dropped {
        v.drop_count(reason, *n);
    }
    v.drop_count("not_received_while_rebinding", unbound);
    let counted: u64 = v.dropped.values().sum();
    v.note("peak_rss_is=test_process");
    v.check(run.report.drained_cleanly, "drain not clean");
    v.check(
        l.datagrams_received
            == l.datagrams_decoded + l.datagrams_dropped() + l.datagrams_lost_in_restart,
        format!("received datagrams unaccounted: {l:?}"),
    );
    v.check(
        l.flows_decoded == p.flows_published + p.flows_dropped_total(),
        format!("decoded flows unaccounted: {p:?}"),
    );
    v.check(run.audit.clean(), format!("stream: {}", run.audit.problems()));
    v.check(
        run.audit.missing == counted,
        format!(
            "{} records missing, {counted} counted: {}",
            run.audit.missing,
            run.audit.problems()
        ),
    );
    v.check(run.audit.messages == p.flows_published, "the stream holds what was published");
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "chaos scenario: bash chaos/run.sh"]
async fn collector_exporter_actor_fails() {
    let exporter = IpAddr::from(SENDER);
    let run = run_in_process(Fault::Exporter { listener: 0, exporter }, |c| {
        c.listeners[0].counters.exporters_restarted >= 1
    })
    .await;
    let mut v = in_process_verdict("collector_exporter_actor_fails", &run, 0);
    let l = &run.report.counters.listeners[0].counters;
    v.note(format!(
        "exporter_restarts={} replayed_after_template={}",
        l.exporters_restarted, l.template_cache.pending_replayed
    ));
    v.check(l.exporters_restarted == 1, "one exporter restart");
    recovery_check(&mut v, run.recovery, Duration::from_secs(30));
    v.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "chaos scenario: bash chaos/run.sh"]
async fn collector_publisher_actor_fails() {
    let run =
        run_in_process(Fault::Publisher(0), |c| c.publishers[0].counters.publisher_restarts >= 1)
            .await;
    let mut v = in_process_verdict("collector_publisher_actor_fails", &run, 0);
    let p = &run.report.counters.publishers[0].counters;
    // The flows its slot had accepted survive the restart; a batch still in the failed
    // actor's mailbox is lost and counted (`publisher_failed`).
    v.note(format!("publisher_restarts={}", p.publisher_restarts));
    v.check(p.publisher_restarts == 1, "one publisher restart");
    v.check(
        p.flows_dropped.keys().all(|reason| *reason == "publisher_failed"),
        format!("drops other than publisher_failed: {:?}", p.flows_dropped),
    );
    recovery_check(&mut v, run.recovery, Duration::from_secs(30));
    v.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "chaos scenario: bash chaos/run.sh"]
async fn collector_listener_fails() {
    let run =
        run_in_process(Fault::Listener(0), |c| c.listeners[0].counters.listener_restarts >= 1)
            .await;
    // While the failed listener's socket is closed and the new one not yet bound (or
    // the old one lingers unread), datagrams arriving are refused by the kernel: no
    // counter of the collector can see them. The exporter side measures them; they
    // must all have been sent inside the restart window.
    let c = &run.report.counters.listeners[0].counters;
    let counted = (c.datagrams_lost_in_restart + c.dropped_channel_full) * u64::from(RECORDS);
    let unbound = run.audit.missing.saturating_sub(counted);
    let mut v = in_process_verdict("collector_listener_fails", &run, unbound);
    v.note(format!(
        "listener_restarts={} sent_during_restart={}",
        c.listener_restarts,
        run.sent_during_restart * u64::from(RECORDS)
    ));
    v.check(c.listener_restarts == 1, "one listener restart");
    v.check(
        unbound <= (run.sent_during_restart + 20) * u64::from(RECORDS),
        format!("{unbound} records lost outside the restart window"),
    );
    recovery_check(&mut v, run.recovery, Duration::from_secs(30));
    v.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "chaos scenario: bash chaos/run.sh"]
async fn collector_listener_socket_error() {
    let have_ss = std::process::Command::new("ss").arg("-V").output().is_ok();
    if !is_root() || !have_ss {
        println!("chaos collector_listener_socket_error: SKIPPED (needs root and ss for ss -K)");
        return;
    }
    let m = mode();
    let (_server, url) = jetstream_support::nats_server();
    let addrs = Addrs::loopback();
    let collector = rig::Collector::start(&config(&url, addrs), addrs, None);
    collector.wait_stream_ready();
    let traffic = Traffic::start(plan(addrs.udp, Protocol::V9, RECORDS, m.pick(150, 400)));
    collector.wait_published(500, Duration::from_secs(30)).await;

    let errors = m.pick(3, 20);
    let bound = Duration::from_secs(10);
    let mut recovery = Some(Duration::ZERO);
    for _ in 0..errors {
        let before = collector.metrics();
        let killed = std::process::Command::new("ss")
            .args(["-K", "-u", "-a", &format!("sport = :{}", addrs.udp.port())])
            .output()
            .expect("run ss");
        assert!(killed.status.success(), "ss -K: {}", String::from_utf8_lossy(&killed.stderr));
        // Recovered: the error is counted and datagrams are received again.
        let injected = Instant::now();
        let back = wait_for_async(bound, || async {
            let now = collector.metrics();
            now.sum("flow_collector_receive_errors_total", &[])
                > before.sum("flow_collector_receive_errors_total", &[])
                && now.datagrams_received() > before.datagrams_received() + 5
        })
        .await
        .map(|_| injected.elapsed());
        recovery = recovery.zip(back).map(|(a, b)| a.max(b));
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    tokio::time::sleep(m.pick(Duration::from_secs(1), Duration::from_secs(5))).await;
    let ledger = traffic.stop();
    let idle = collector.wait_idle(Duration::from_secs(60)).await;
    let stopped = collector.stop();
    let audit = rig::audit(&url, &ledger).await;

    let mut v = Verdict::new("collector_listener_socket_error");
    standard_checks(&mut v, &ledger, &audit, &stopped, RECORDS.into());
    let seen = idle.sum("flow_collector_receive_errors_total", &[]);
    v.note(format!("socket_errors_injected={errors} receive_errors={seen}"));
    v.check(seen == errors, format!("{seen} receive errors counted, {errors} injected"));
    recovery_check(&mut v, recovery, bound);
    v.finish();
}
