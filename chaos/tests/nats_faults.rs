//! NATS faults while exporter traffic keeps flowing into the real collector binary:
//! the server SIGKILLed and restarted on its store; restarted with its store wiped (the
//! collector re-creates the stream); frozen with SIGSTOP past the publish (ack) timeout,
//! then SIGCONT.

#[path = "../../tests/jetstream_support/mod.rs"]
mod jetstream_support;
#[path = "../../publish/tests/support/mod.rs"]
mod nats;
mod rig;
#[path = "../../tests/support/mod.rs"]
mod support;

use std::time::Duration;

use flow_chaos::exporter::{Ledger, Protocol, Traffic};
use flow_chaos::verdict::{Audit, Verdict};
use rig::{Addrs, Collector, audit, config, mode, plan, recovery_check, standard_checks};

const RECORDS: u32 = 10;

/// Traffic into a fresh collector publishing to `server`: returns the collector and
/// the running exporter, once the first flows are in the stream.
async fn start(url: &str) -> (Collector, Traffic) {
    let addrs = Addrs::loopback();
    let collector = Collector::start(&config(url, addrs), addrs, None);
    collector.wait_stream_ready();
    let rate = mode().pick(150, 400);
    let traffic = Traffic::start(plan(addrs.udp, Protocol::V9, RECORDS, rate));
    collector.wait_published(1, Duration::from_secs(20)).await;
    (collector, traffic)
}

/// A NATS outage under traffic: `down` the server, wait `down_for`, bring it `up`, then
/// the standard checks and recovery within 30 s, reported as `name`.
async fn outage(
    name: &str,
    down_for: Duration,
    down: impl FnOnce(&mut nats::NatsServer),
    up: impl FnOnce(&mut nats::NatsServer),
) {
    let m = mode();
    let (mut server, url) = jetstream_support::nats_server();
    let (collector, traffic) = start(&url).await;
    let bound = Duration::from_secs(30);

    tokio::time::sleep(m.pick(Duration::from_secs(1), Duration::from_secs(5))).await;
    down(&mut server);
    tokio::time::sleep(down_for).await;
    up(&mut server);
    let recovery = collector.recovery(bound).await;
    let (ledger, stopped) = finish(collector, traffic, m.pick(1, 5) * Duration::from_secs(1)).await;

    let mut v = Verdict::new(name);
    standard_checks(&mut v, &ledger, &audit(&url, &ledger).await, &stopped, RECORDS.into());
    recovery_check(&mut v, recovery, bound);
    v.finish();
}

/// Stops the traffic after `after`, lets the collector go idle, stops it.
async fn finish(collector: Collector, traffic: Traffic, after: Duration) -> (Ledger, rig::Stopped) {
    tokio::time::sleep(after).await;
    let ledger = traffic.stop();
    collector.wait_idle(Duration::from_secs(60)).await;
    (ledger, collector.stop())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "chaos scenario: bash chaos/run.sh"]
async fn nats_killed_and_restarted() {
    // Down for several publish timeouts: batches in flight must be re-sent.
    let down_for = mode().pick(Duration::from_secs(3), Duration::from_secs(15));
    outage(
        "nats_killed_and_restarted",
        down_for,
        nats::NatsServer::kill,
        nats::NatsServer::restart,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "chaos scenario: bash chaos/run.sh"]
async fn nats_store_wiped() {
    let m = mode();
    let (mut server, url) = jetstream_support::nats_server();
    let (collector, traffic) = start(&url).await;
    let bound = Duration::from_secs(30);

    tokio::time::sleep(m.pick(Duration::from_secs(1), Duration::from_secs(5))).await;
    server.kill();
    let before = server.dir.path().join("store-before-wipe");
    std::fs::rename(server.path("store"), &before).expect("move the store away");
    tokio::time::sleep(m.pick(Duration::from_secs(2), Duration::from_secs(10))).await;
    server.restart();
    let recovery = collector.recovery(bound).await;
    let (ledger, stopped) = finish(collector, traffic, m.pick(1, 5) * Duration::from_secs(1)).await;

    // What the wiped store held: read by a second server started on a copy of it.
    let mut reader = nats::NatsServer::start();
    reader.kill();
    std::fs::remove_dir_all(reader.path("store")).ok();
    let copied = std::process::Command::new("cp")
        .arg("-a")
        .arg(&before)
        .arg(reader.path("store"))
        .status()
        .is_ok_and(|s| s.success());
    assert!(copied, "copy the wiped store");
    reader.restart();
    let old = rig::stored_flows(&reader.url()).await;
    let new = rig::stored_flows(&url).await;
    let (old_audit, new_audit) = (Audit::of(&old, &ledger), Audit::of(&new, &ledger));
    let mut both = old.clone();
    both.extend(new.iter().cloned());
    let union = Audit::of(&both, &ledger);

    // Messages the old server stored but whose acks died with it are re-sent (same
    // Nats-Msg-Id) to the new, empty store, whose duplicate window never saw them: the
    // only duplicates allowed, each across the wipe, at most what was in flight (4096
    // flows per subject). Everything else is checked as usual on the two stores together.
    let resent = union.duplicates;
    let mut v = Verdict::new("nats_store_wiped");
    standard_checks(&mut v, &ledger, &union.without_duplicates(), &stopped, RECORDS.into());
    v.note(format!(
        "before_wipe={} after_wipe={} resent_across_wipe={resent}",
        old_audit.messages, new_audit.messages
    ));
    v.check(resent <= 4096, format!("{resent} re-sent across the wipe: more than in flight"));
    v.check(old_audit.duplicates == 0 && new_audit.duplicates == 0, "a store holds a flow twice");
    recovery_check(&mut v, recovery, bound);
    v.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "chaos scenario: bash chaos/run.sh"]
async fn nats_hung() {
    // Frozen past the 1 s publish timeout, several times over.
    let down_for = mode().pick(Duration::from_secs(3), Duration::from_secs(20));
    outage(
        "nats_hung",
        down_for,
        |s: &mut nats::NatsServer| s.stop(),
        |s: &mut nats::NatsServer| s.resume(),
    )
    .await;
}
