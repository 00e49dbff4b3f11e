//! A listener with several UDP sockets on one address (`sockets`, SO_REUSEPORT): real
//! datagrams from many sources, spread by the kernel over the sockets, all arrive, and
//! each source still has exactly one exporter whichever socket its datagrams came in on.
#![cfg(target_os = "linux")]

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::Arc;

use common::*;
use flow_actors::Fault;

/// Sources (127.0.0.2 up) and UDP source ports per source: the kernel hashes address
/// and port, so a source's two ports land on different sockets about half the time.
const SOURCES: u8 = 40;
const DATAGRAMS_PER_PORT: u32 = 25;

/// UDP sockets bound to `addr`, from the kernel's table.
fn sockets_bound_to(addr: SocketAddr) -> usize {
    let table = std::fs::read_to_string("/proc/net/udp").unwrap();
    let port = format!(":{:04X} ", addr.port());
    table
        .lines()
        .skip(1)
        .filter(|row| {
            row.split_whitespace().nth(1).is_some_and(|local| {
                format!("{local} ").ends_with(&port) && local.starts_with("0100007F")
            })
        })
        .count()
}

/// Sends `2 * DATAGRAMS_PER_PORT` datagrams from each source, half from each of two ports.
async fn send_from_every_source(to: SocketAddr, first_seq: u32) {
    for n in 2..2 + SOURCES {
        for port in 0..2 {
            let from = sender(n).await;
            let start = first_seq + port * DATAGRAMS_PER_PORT;
            send(&from, to, 1, start..start + DATAGRAMS_PER_PORT).await;
        }
    }
}

fn expected_seqs(first_seq: u32) -> BTreeSet<u32> {
    (first_seq..first_seq + 2 * DATAGRAMS_PER_PORT).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_sockets_share_one_exporter_per_source() {
    let recorder = Recorder::open();
    let mut listener = listener("flows.a");
    listener.sockets = 2;
    let collector = start(settings(vec![listener]), &recorder, Arc::default()).await;
    let to = collector.local_addrs()[0];
    assert_eq!(sockets_bound_to(to), 2, "two sockets on {to}");

    send_from_every_source(to, 0).await;
    let total = usize::from(SOURCES) * 2 * DATAGRAMS_PER_PORT as usize;
    wait_until("every flow is published", || recorder.len() == total).await;

    let by_source = recorder.by_source();
    assert_eq!(by_source.len(), usize::from(SOURCES));
    for n in 2..2 + SOURCES {
        let seqs: BTreeSet<u32> =
            by_source[&("flows.a".to_owned(), ip(n))].iter().copied().collect();
        assert_eq!(seqs, expected_seqs(0), "source {}", ip(n));
    }
    let counters = collector.counters();
    let c = listener0(&counters);
    assert_eq!(
        (c.exporters_added, c.exporters_live),
        (u64::from(SOURCES), u64::from(SOURCES)),
        "one exporter per source: {c:?}"
    );

    let report = collector.shutdown().await.unwrap();
    assert_accounted(&report.counters);
    let c = listener0(&report.counters);
    assert_eq!(c.datagrams_received, total as u64, "one series: the sum over the sockets");
    assert_eq!(c.exporters_added, u64::from(SOURCES));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_restarted_listener_binds_all_its_sockets_again() {
    let recorder = Recorder::open();
    let mut listener = listener("flows.a");
    listener.sockets = 3;
    let collector = start(settings(vec![listener]), &recorder, Arc::default()).await;
    let to = collector.local_addrs()[0];
    assert_eq!(sockets_bound_to(to), 3, "three sockets on {to}");

    assert!(collector.inject_fault(Fault::Listener(0)).await.unwrap());
    wait_until("the listener is restarted", || {
        listener0(&collector.counters()).listener_restarts == 1
    })
    .await;
    // Once a probe gets through, the new listener has bound its three sockets; the old
    // ones may linger an instant: wait until only the new three are left.
    let probe = sender(200).await;
    let mut seq = 0;
    while recorder.len() == 0 {
        send(&probe, to, 1, [seq]).await;
        seq += 1;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(seq < 1000, "the restarted listener never received");
    }
    wait_until("the old sockets are closed", || sockets_bound_to(to) == 3).await;

    send_from_every_source(to, 0).await;
    wait_until("every source's flows are published", || {
        let by_source = recorder.by_source();
        (2..2 + SOURCES).all(|n| {
            by_source.get(&("flows.a".to_owned(), ip(n))).is_some_and(|seqs| {
                seqs.iter().copied().collect::<BTreeSet<u32>>() == expected_seqs(0)
            })
        })
    })
    .await;
    let c = listener0(&collector.counters()).clone();
    assert_eq!(c.exporters_live, u64::from(SOURCES) + 1, "one per source, and the probe's");

    let report = collector.shutdown().await.unwrap();
    assert_accounted(&report.counters);
}
