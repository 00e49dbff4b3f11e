//! SIGTERM while exporter traffic is still arriving and the publisher holds a backlog
//! (NATS was frozen for a moment just before, and resumes as the drain starts):
//! everything the collector had received is drained into JetStream before it exits 0.
//! Datagrams still being sent after the listener stopped reading are not received;
//! they must be exactly the tail of what was sent (nothing lost in the middle).

#[path = "../../tests/jetstream_support/mod.rs"]
mod jetstream_support;
#[path = "../../publish/tests/support/mod.rs"]
mod nats;
mod rig;
#[path = "../../tests/support/mod.rs"]
mod support;

use std::collections::HashSet;
use std::time::Duration;

use flow_chaos::exporter::{Protocol, Traffic, flow_id};
use flow_chaos::verdict::{Audit, Verdict};
use rig::{Addrs, Collector, config, mode, plan, standard_checks};

const RECORDS: u32 = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "chaos scenario: bash chaos/run.sh"]
async fn sigterm_under_load() {
    let m = mode();
    let (server, url) = jetstream_support::nats_server();
    let addrs = Addrs::loopback();
    let collector = Collector::start(&config(&url, addrs), addrs, None);
    collector.wait_stream_ready();
    let traffic = Traffic::start(plan(addrs.udp, Protocol::V9, RECORDS, m.pick(500, 2000)));
    tokio::time::sleep(m.pick(Duration::from_secs(1), Duration::from_secs(5))).await;
    // A backlog: NATS frozen while flows keep coming.
    server.stop();
    tokio::time::sleep(m.pick(Duration::from_millis(1500), Duration::from_secs(4))).await;

    let before = collector.metrics();
    let backlog = before.flows_decoded().saturating_sub(before.flows_published());
    // SIGTERM with the exporter still sending (it stops once the process is gone); NATS
    // comes back as the drain begins.
    let stopping = tokio::task::spawn_blocking(move || {
        let sigterm = std::time::Instant::now();
        let stopped = collector.stop();
        (stopped, sigterm.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    server.resume();
    let (stopped, drain) = stopping.await.expect("stop");
    let ledger = traffic.stop();
    let stored = rig::stored_flows(&url).await;
    let audit = Audit::of(&stored, &ledger);

    let mut v = Verdict::new("sigterm_under_load");
    let sent_datagrams = ledger.records_on_wire() / u64::from(RECORDS);
    let received = stopped.exited.counter("datagrams_received");
    let not_received = sent_datagrams.saturating_sub(received);
    v.drop_count("not_received_after_sigterm", not_received * u64::from(RECORDS));
    standard_checks(&mut v, &ledger, &audit, &stopped, RECORDS.into());
    let stored_ids: HashSet<u32> = stored.iter().filter_map(|(f, _)| flow_id(f)).collect();
    let last_stored = stored_ids.iter().copied().max().unwrap_or(0);
    let first_missing = ledger.records.keys().copied().filter(|id| !stored_ids.contains(id)).min();
    v.note(format!(
        "backlog_at_sigterm={backlog} sigterm_to_exit={:.1}s datagrams_received={received}",
        drain.as_secs_f64()
    ));
    v.check(backlog > 0, "nothing was buffered at SIGTERM: not a drain under load");
    v.check(
        first_missing.is_none_or(|id| id > last_stored),
        format!("record {first_missing:?} missing before the last stored {last_stored}"),
    );
    let log = stopped.exited.log_text();
    v.check(log.contains("SIGTERM received"), "SIGTERM logged");
    v.finish();
}
