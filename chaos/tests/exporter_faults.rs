//! Exporter-side faults, produced by the simulated exporters themselves (deterministic,
//! seeded): datagram loss, reordering and duplicates; a reboot (sequence and uptime
//! reset, the template id reused with another layout, data before its new template, a
//! late datagram of the previous boot); templates arriving after their data; an
//! exporter that stops sending templates.

#[path = "../../tests/jetstream_support/mod.rs"]
mod jetstream_support;
#[path = "../../publish/tests/support/mod.rs"]
mod nats;
mod rig;
#[path = "../../tests/support/mod.rs"]
mod support;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use flow_chaos::exporter::{
    Datagram, Exporter, Ids, Layout, Ledger, Pacer, Protocol, WireFaults, apply_faults,
    loopback_socket, send_all,
};
use flow_chaos::verdict::Verdict;
use flow_chaos::wait_for_async;
use rig::{Addrs, Collector, audit, config, mode, standard_checks};
use serde_json::{Value, json};

const RECORDS: u32 = 5;
/// Datagrams a second while sending scripted sequences.
const RATE: u32 = 800;

/// A collector on loopback publishing to a fresh nats-server.
fn start(adjust: impl FnOnce(&mut Value)) -> (nats::NatsServer, String, Collector) {
    let (server, url) = jetstream_support::nats_server();
    let addrs = Addrs::loopback();
    let mut config = config(&url, addrs);
    adjust(&mut config);
    let collector = Collector::start(&config, addrs, None);
    collector.wait_stream_ready();
    (server, url, collector)
}

/// `n` data datagrams of `exporter`, after one carrying only the template.
fn script(exporter: &mut Exporter, ids: &mut Ids, n: usize) -> Vec<Datagram> {
    let mut datagrams = vec![exporter.template_only()];
    datagrams.extend((0..n).map(|_| exporter.datagram(ids.take(RECORDS), false)));
    datagrams
}

/// Sends `sequences` (one socket each, datagrams given by index into `datagrams`)
/// interleaved, paced; returns the ledger (every datagram recorded, 0 copies for the
/// ones never sent).
fn send_interleaved(
    to: SocketAddr,
    exporters: &[(UdpSocket, Protocol, &[Datagram], &[usize])],
) -> Ledger {
    let mut ledger = Ledger::default();
    for (socket, protocol, datagrams, _) in exporters {
        let ip = socket.local_addr().expect("sender address").ip();
        for datagram in *datagrams {
            ledger.record(ip, *protocol, datagram, 0);
        }
    }
    let mut pacer = Pacer::new(RATE);
    let longest = exporters.iter().map(|e| e.3.len()).max().unwrap_or(0);
    for k in 0..longest {
        for (socket, protocol, datagrams, order) in exporters {
            let Some(&i) = order.get(k) else { continue };
            pacer.wait();
            socket.send_to(&datagrams[i].payload, to).expect("send");
            let ip = socket.local_addr().expect("sender address").ip();
            ledger.record(ip, *protocol, &datagrams[i], 1);
        }
    }
    ledger
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "chaos scenario: bash chaos/run.sh"]
async fn exporter_loss_reorder_duplicates() {
    let n = mode().pick(600, 4000);
    let (_server, url, collector) = start(|_| {});
    let mut ids = Ids::starting_at(1);
    let ipfix = script(&mut Exporter::new(Protocol::Ipfix, Layout::A), &mut ids, n);
    let v9 = script(&mut Exporter::new(Protocol::V9, Layout::A), &mut ids, n);
    let faults = WireFaults {
        loss: 0.03,
        duplicate: 0.02,
        reorder_window: 8,
        keep_first: 1,
        // The collector gives a late datagram 64 datagrams to fill its hole.
        clean_tail: 80,
        seed: 10,
    };
    let (ipfix_order, ipfix_log) = apply_faults(&ipfix, faults);
    let (v9_order, v9_log) = apply_faults(&v9, WireFaults { seed: 11, ..faults });
    let to = collector.addrs.udp;
    let ledger = tokio::task::spawn_blocking(move || {
        send_interleaved(
            to,
            &[
                (loopback_socket(2), Protocol::Ipfix, &ipfix, &ipfix_order),
                (loopback_socket(3), Protocol::V9, &v9, &v9_order),
            ],
        )
    })
    .await
    .expect("sender");
    let idle = collector.wait_idle(Duration::from_secs(60)).await;
    let stopped = collector.stop();
    let audit = audit(&url, &ledger).await;

    let mut v = Verdict::new("exporter_loss_reorder_duplicates");
    standard_checks(&mut v, &ledger, &audit, &stopped, RECORDS.into());
    let lost_records = idle.sequence_lost("records");
    let lost_datagrams = idle.sequence_lost("datagrams");
    // Loss upstream of the collector: what the sequence numbers say, per protocol unit.
    v.drop_count("exporter_loss", ipfix_log.dropped_records + v9_log.dropped_records);
    v.note(format!(
        "seq_lost_ipfix_records={lost_records} seq_lost_v9_datagrams={lost_datagrams} \
         reordered={} exporter_duplicates={} (decoded twice, as sent)",
        ipfix_log.reordered + v9_log.reordered,
        audit.exporter_duplicates
    ));
    v.check(
        lost_records == ipfix_log.dropped_records,
        format!(
            "IPFIX loss: {lost_records} records counted, {} dropped",
            ipfix_log.dropped_records
        ),
    );
    v.check(
        lost_datagrams == v9_log.dropped_datagrams,
        format!(
            "v9 loss: {lost_datagrams} datagrams counted, {} dropped",
            v9_log.dropped_datagrams
        ),
    );
    v.check(
        audit.exporter_duplicates == ipfix_log.duplicated_records + v9_log.duplicated_records,
        "every duplicated datagram's records are stored twice",
    );
    v.check(ipfix_log.dropped_datagrams > 0 && v9_log.reordered > 0, "faults were injected");
    v.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "chaos scenario: bash chaos/run.sh"]
async fn exporter_reboot() {
    let n = mode().pick(100, 1000);
    let (_server, url, collector) = start(|_| {});
    let mut ids = Ids::starting_at(1);
    let mut exporter = Exporter::new(Protocol::V9, Layout::A);
    let mut datagrams: Vec<Datagram> =
        (0..n).map(|i| exporter.datagram(ids.take(RECORDS), i % 20 == 0)).collect();
    // Built before the reboot, delivered after it: must not be decoded with the new
    // template (dropped and counted as `previous_incarnation`).
    let stale = exporter.datagram(ids.take(RECORDS), false);
    std::thread::sleep(Duration::from_millis(20));
    exporter.reboot(Layout::B);
    // The first datagram after the reboot carries data only, its template comes next.
    datagrams.push(exporter.datagram(ids.take(RECORDS), false));
    datagrams.push(stale);
    datagrams.extend((0..n).map(|i| exporter.datagram(ids.take(RECORDS), i % 20 == 0)));
    let socket = loopback_socket(2);
    let to = collector.addrs.udp;
    let ledger =
        tokio::task::spawn_blocking(move || send_all(&socket, to, Protocol::V9, &datagrams, RATE))
            .await
            .expect("sender");
    let idle = collector.wait_idle(Duration::from_secs(60)).await;
    let stopped = collector.stop();
    let audit = audit(&url, &ledger).await;

    let mut v = Verdict::new("exporter_reboot");
    let errors = idle.by_label("flow_collector_decode_errors_total", "reason");
    let stale_datagrams = errors.get("previous_incarnation").copied().unwrap_or(0);
    v.drop_count("previous_incarnation", stale_datagrams * u64::from(RECORDS));
    standard_checks(&mut v, &ledger, &audit, &stopped, RECORDS.into());
    let events = idle.lifecycle_events();
    let restarts = events.get("exporter_restarted").copied().unwrap_or(0);
    let logged = stopped.exited.logs.iter().filter(|l| l.contains("Exporter restarted")).count();
    v.note(format!(
        "restarts={restarts} restart_logs={logged} replayed_after_template={} misdecoded={}",
        events.get("pending_replayed").copied().unwrap_or(0),
        audit.corrupt
    ));
    v.check(restarts == 1 && logged == 1, "exactly one restart, counted and logged");
    v.check(stale_datagrams == 1, format!("the stale datagram is refused: {errors:?}"));
    v.check(audit.corrupt == 0, "no record decoded with the old layout");
    v.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "chaos scenario: bash chaos/run.sh"]
async fn exporter_templates_after_data() {
    let n = mode().pick(100, 1000);
    let early = 5;
    let (_server, url, collector) = start(|_| {});
    let mut ids = Ids::starting_at(1);
    let mut exporter = Exporter::new(Protocol::Ipfix, Layout::A);
    let mut datagrams: Vec<Datagram> =
        (0..early).map(|_| exporter.datagram(ids.take(RECORDS), false)).collect();
    datagrams.push(exporter.template_only());
    datagrams.extend((0..n).map(|i| exporter.datagram(ids.take(RECORDS), i % 20 == 19)));
    let socket = loopback_socket(2);
    let to = collector.addrs.udp;
    let ledger = tokio::task::spawn_blocking(move || {
        send_all(&socket, to, Protocol::Ipfix, &datagrams, RATE)
    })
    .await
    .expect("sender");
    let idle = collector.wait_idle(Duration::from_secs(60)).await;
    let stopped = collector.stop();
    let audit = audit(&url, &ledger).await;

    let mut v = Verdict::new("exporter_templates_after_data");
    standard_checks(&mut v, &ledger, &audit, &stopped, RECORDS.into());
    // `records_pending` counts data sets parked; the replay is one event per template
    // queue (`pending_flows_replayed`), whatever the number of sets it decoded.
    let parked = idle.sum("flow_collector_records_pending_total", &[]);
    let replays = idle.sum("flow_collector_pending_flows_replayed_total", &[]);
    let missing = idle.lifecycle_events().get("missing_template").copied().unwrap_or(0);
    v.note(format!(
        "parked_until_template={parked} replay_events={replays} missing_template_events={missing}"
    ));
    v.check(parked == early as u64, format!("{parked} data sets parked, {early} sent early"));
    v.check(replays >= 1 && missing >= 1, "the early data was held, then replayed");
    v.finish();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "chaos scenario: bash chaos/run.sh"]
async fn exporter_stops_templates() {
    let n = mode().pick(60, 600);
    let orphans = mode().pick(20, 200);
    // The exporter is forgotten after 4 s of silence; data waits 1 s for a template
    // (given up by the next expiry pass, at most about 2.5 s after it came).
    let (_server, url, collector) = start(|config| {
        config["exporter_idle_timeout_secs"] = json!(4);
        config["listeners"][0]["pending_flows"] = json!({ "ttl_secs": 1 });
    });
    let socket = loopback_socket(2);
    let from: IpAddr = socket.local_addr().expect("sender").ip();
    let to = collector.addrs.udp;
    let mut ids = Ids::starting_at(1);
    let mut exporter = Exporter::new(Protocol::V9, Layout::A);
    let mut ledger = Ledger::default();

    // 1. Template once, then data only.
    let first = script(&mut exporter, &mut ids, n);
    ledger.merge(send_all(&socket, to, Protocol::V9, &first, RATE));
    // 2. Silence: the collector evicts the exporter and frees its templates.
    let evicted = wait_for_async(Duration::from_secs(15), || async {
        collector.metrics().sum("flow_collector_exporters_evicted_total", &[]) >= 1
    });
    assert!(evicted.await.is_some(), "the idle exporter was never evicted");
    // 3. Data without templates for 2 s (the exporter stays live): each set is held,
    // then given up after the ttl; wait until the last one is, before the idle timeout.
    let blind: Vec<Datagram> =
        (0..orphans).map(|_| exporter.datagram(ids.take(RECORDS), false)).collect();
    let rate = u32::try_from(orphans / 2).unwrap_or(RATE);
    ledger.merge(send_all(&socket, to, Protocol::V9, &blind, rate));
    let last_blind = Instant::now();
    let given_up = wait_for_async(Duration::from_secs(10), || async {
        let m = collector.metrics();
        last_blind.elapsed() > Duration::from_millis(2700)
            && m.sum("flow_collector_records_pending_total", &[]) >= orphans as u64
            && m.sum("flow_collector_pending_flows_dropped_total", &[]) >= 1
    });
    assert!(given_up.await.is_some(), "held data was never given up:\n{}", collector.logs());
    // 4. The template again: decoding resumes.
    let resumed_at = Instant::now();
    let back = script(&mut exporter, &mut ids, n);
    ledger.merge(send_all(&socket, to, Protocol::V9, &back, RATE));
    let target = ((2 * n) as u64) * u64::from(RECORDS);
    let recovered = wait_for_async(Duration::from_secs(20), || async {
        collector.metrics().flows_published() >= target
    })
    .await
    .map(|_| resumed_at.elapsed());
    let idle = collector.wait_idle(Duration::from_secs(60)).await;
    let stopped = collector.stop();
    let audit = audit(&url, &ledger).await;

    let mut v = Verdict::new("exporter_stops_templates");
    // Every data set parked without its template was given up (none replayed): the
    // collector counts sets parked (`records_pending`) and one give-up event per
    // template queue (`pending_flows_dropped`); it cannot know the records in a set
    // whose template it never saw, the exporter side can (RECORDS each).
    let parked = idle.sum("flow_collector_records_pending_total", &[]);
    let replays = idle.sum("flow_collector_pending_flows_replayed_total", &[]);
    let give_ups = idle.sum("flow_collector_pending_flows_dropped_total", &[]);
    v.drop_count("no_template_ttl", if replays == 0 { parked * u64::from(RECORDS) } else { 0 });
    standard_checks(&mut v, &ledger, &audit, &stopped, RECORDS.into());
    rig::recovery_check(&mut v, recovered, Duration::from_secs(20));
    let missing = idle.lifecycle_events().get("missing_template").copied().unwrap_or(0);
    v.note(format!(
        "evicted={} parked_sets={parked} give_up_events={give_ups} missing_template_events={missing} exporter={from}",
        idle.sum("flow_collector_exporters_evicted_total", &[])
    ));
    v.check(parked == orphans as u64, format!("{parked} sets parked, {orphans} sent blind"));
    v.check(replays == 0 && give_ups >= 1, "the parked sets were given up, not replayed");
    v.finish();
}

/// KNOWN DEFECT, left out of the default run (`CHAOS_DEFECTS=1 bash chaos/run.sh`
/// runs it): data sets parked for a template are dropped without any counter when
/// their exporter actor stops — here an idle eviction (the same path as a shutdown
/// drain or an exporter restart). `records_pending` counted them in, but neither
/// `pending_flows_dropped` nor any drop counter counts them out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "chaos scenario, known defect: CHAOS_DEFECTS=1 bash chaos/run.sh"]
async fn defect_parked_data_lost_on_eviction() {
    let orphans = 10;
    let (_server, url, collector) = start(|config| {
        config["exporter_idle_timeout_secs"] = json!(1);
    });
    let socket = loopback_socket(2);
    let to = collector.addrs.udp;
    let mut ids = Ids::starting_at(1);
    let mut exporter = Exporter::new(Protocol::V9, Layout::A);
    let mut ledger = Ledger::default();
    ledger.merge(send_all(&socket, to, Protocol::V9, &script(&mut exporter, &mut ids, 20), RATE));
    let evictions = |n: u64| {
        let collector = &collector;
        async move {
            wait_for_async(Duration::from_secs(15), || async {
                collector.metrics().sum("flow_collector_exporters_evicted_total", &[]) >= n
            })
            .await
            .is_some()
        }
    };
    assert!(evictions(1).await, "the idle exporter was never evicted");
    let blind: Vec<Datagram> =
        (0..orphans).map(|_| exporter.datagram(ids.take(RECORDS), false)).collect();
    ledger.merge(send_all(&socket, to, Protocol::V9, &blind, RATE));
    assert!(evictions(2).await, "the exporter holding parked data was never evicted");
    let idle = collector.wait_idle(Duration::from_secs(60)).await;
    let stopped = collector.stop();
    let audit = audit(&url, &ledger).await;

    let mut v = Verdict::new("defect_parked_data_lost_on_eviction");
    let give_ups = idle.sum("flow_collector_pending_flows_dropped_total", &[]);
    v.drop_count("pending_dropped_events", give_ups);
    standard_checks(&mut v, &ledger, &audit, &stopped, RECORDS.into());
    v.note(format!(
        "parked_sets={} evictions={}",
        idle.sum("flow_collector_records_pending_total", &[]),
        idle.sum("flow_collector_exporters_evicted_total", &[])
    ));
    v.finish();
}
