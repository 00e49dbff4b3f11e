//! IPFIX over TLS with client certificates, over real sockets and real TLS (certificates
//! made here with rcgen): an exporter is named by its certificate; an unknown
//! certificate, a missing one, plain TCP and a stalled handshake are refused and counted
//! while a good session keeps flowing.

mod common;
mod stream_support;

use std::time::Duration;

use common::*;
use flow_actors::Transport;
use flow_actors::counters::{ExporterId, close, handshake};
use stream_support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn template(sequence: u32) -> Vec<u8> {
    message(sequence, &[template_set(256, ADDRESSES)])
}

fn data(sequence: u32, octets: u64) -> Vec<u8> {
    message(sequence, &[data_set(256, &[address_record([10, 0, 0, 1], [10, 0, 0, 2], octets)])])
}

/// Exporter series of the first listener, by name.
fn exporter_names(collector: &flow_actors::Collector) -> Vec<ExporterId> {
    let counters = collector.counters();
    listener0(&counters).exporters.exporters.iter().map(|s| s.exporter.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_exporter_with_a_good_certificate_is_named_by_it() {
    let dir = tempfile::tempdir().unwrap();
    let servers = Pki::new(dir.path(), "servers");
    let exporters = Pki::new(dir.path(), "exporters");
    let tls = servers.server(dir.path(), &exporters);
    let recorder = Recorder::open();
    let s = settings(vec![netflow_listener("flows.tls", Transport::Stream(stream(Some(tls))))]);
    let collector = start_real(s, &recorder).await;
    let to = collector.local_addrs()[0];

    let router = exporters.issue(dir.path(), "router-7.example.net", false, true);
    let mut conn = tls_connect(to, client_config(&servers.ca_file, Some(&router))).await.unwrap();
    write_split(&mut conn, &[template(0), data(1, 1500)].concat()).await;
    wait_until("the flow is published", || recorder.len() == 1).await;
    let flow = &recorder.flows()[0].1;
    assert_eq!(flow.sampler_address, vec![127, 0, 0, 1], "sampler_address is the peer address");
    assert_eq!(flow.bytes, 1500);
    assert_eq!(exporter_names(&collector), vec![ExporterId::Name("router-7.example.net".into())]);

    // A certificate without a common name is named by its first subject alternative name.
    let probe = exporters.issue(dir.path(), "probe-3.example.net", false, false);
    let mut second = tls_connect(to, client_config(&servers.ca_file, Some(&probe))).await.unwrap();
    second.write_all(&[template(0), data(1, 7)].concat()).await.unwrap();
    wait_until("the second flow is published", || recorder.len() == 2).await;
    assert!(exporter_names(&collector).contains(&ExporterId::Name("probe-3.example.net".into())));

    conn.shutdown().await.unwrap();
    second.shutdown().await.unwrap();
    wait_until("both sessions are closed", || {
        listener0(&collector.counters()).sessions.closed(close::PEER_CLOSED) == 2
    })
    .await;
    let report = collector.shutdown().await.unwrap();
    assert_accounted(&report.counters);
    let c = listener0(&report.counters);
    assert_eq!(c.sessions.accepted, 2);
    assert_eq!(c.sessions.tls_handshake_failures_total(), 0);
    assert_eq!(report.counters.listeners[0].name, "netflow-tls@127.0.0.1:0", "as configured");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn unknown_or_missing_certificates_are_refused_while_a_good_session_flows() {
    let dir = tempfile::tempdir().unwrap();
    let servers = Pki::new(dir.path(), "servers");
    let exporters = Pki::new(dir.path(), "exporters");
    let strangers = Pki::new(dir.path(), "strangers");
    let mut settings_tls = stream(Some(servers.server(dir.path(), &exporters)));
    settings_tls.handshake_timeout = Duration::from_millis(800);
    let recorder = Recorder::open();
    let s = settings(vec![netflow_listener("flows.tls", Transport::Stream(settings_tls))]);
    let collector = start_real(s, &recorder).await;
    let to = collector.local_addrs()[0];

    let router = exporters.issue(dir.path(), "router-1", false, true);
    let mut good = tls_connect(to, client_config(&servers.ca_file, Some(&router))).await.unwrap();
    good.write_all(&[template(0), data(1, 1)].concat()).await.unwrap();
    wait_until("the good session delivers", || recorder.len() == 1).await;

    // A certificate from another CA, and no certificate at all. With TLS 1.3 the client
    // may believe it is connected; the collector refuses it and reads nothing from it.
    let stranger = strangers.issue(dir.path(), "router-1", false, true);
    for client in [Some(&stranger), None] {
        if let Ok(mut bad) = tls_connect(to, client_config(&servers.ca_file, client)).await {
            let _ = bad.write_all(&[template(0), data(1, 666)].concat()).await;
            let mut buf = [0u8; 16];
            let read = tokio::time::timeout(Duration::from_secs(10), bad.read(&mut buf)).await;
            assert!(matches!(read, Ok(Ok(0) | Err(_))), "a refused client still connected");
        }
    }
    // Plain IPFIX on the TLS port, and a client that never starts its handshake.
    let mut plain = TcpStream::connect(to).await.unwrap();
    plain.write_all(&[template(0), data(1, 667)].concat()).await.unwrap();
    let mut silent = TcpStream::connect(to).await.unwrap();

    good.write_all(&data(2, 2)).await.unwrap();
    wait_until("the good session still delivers", || recorder.len() == 2).await;
    wait_until("every refusal is counted", || {
        let c = collector.counters();
        let failures = &listener0(&c).sessions.tls_handshake_failures;
        [
            handshake::CERTIFICATE_REJECTED,
            handshake::NO_CERTIFICATE,
            handshake::PROTOCOL,
            handshake::TIMEOUT,
        ]
        .iter()
        .all(|reason| failures.get(reason) == Some(&1))
    })
    .await;
    let mut buf = [0u8; 16];
    let read = tokio::time::timeout(Duration::from_secs(10), silent.read(&mut buf)).await;
    assert!(matches!(read, Ok(Ok(0) | Err(_))), "the silent client is still connected");

    let report = collector.shutdown().await.unwrap();
    assert_accounted(&report.counters);
    let c = listener0(&report.counters);
    assert_eq!(c.datagrams_received, 3, "only the good session's messages are read");
    assert_eq!(c.sessions.accepted, 1);
    assert_eq!(c.exporters_added, 1);
    assert_eq!(c.sessions.tls_handshake_failures_total(), 4);
    assert!(recorder.flows().iter().all(|(_, f)| f.bytes < 3), "a refused client's flow got in");
}
