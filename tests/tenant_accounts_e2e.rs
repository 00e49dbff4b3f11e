//! Tenants in NATS accounts of their own, through the real binary into one real
//! nats-server with three accounts (the install's and two tenants'), each user allowed
//! to publish only its own subjects. One listener serves all three partitions (the
//! registry places the tenants' routers), a second listener belongs to one tenant. Each
//! tenant's flows land only in its own account's stream, the install's stream holds no
//! tenant flow, a tenant's credentials cannot publish on the other's subject, and the
//! per-partition counters of `/metrics` add up to the totals. The same with NATS
//! decentralized auth: the install and a tenant each present their own `.creds` file
//! (operator-signed account and user JWTs).

mod jetstream_support;
#[path = "../publish/tests/support/mod.rs"]
mod nats;
/// Only this test needs JWTs; `support` is shared with crates that lack its dependencies.
#[path = "support/nats_jwt.rs"]
mod nats_jwt;
mod support;

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use async_nats::jetstream;
use flowpb::FlowMessage;
use jetstream_support::{Running, free_udp_port};
use nats_jwt::Operator;
use prost::Message;
use serde_json::json;
use support::http::{free_tcp_port, metrics, sample, sum_with_label};

const ACME: &str = "127.0.0.101";
const GLOBEX: &str = "127.0.0.102";
/// Not in the registry: the shared listener's own partition, `ops`.
const OPS_ROUTER: &str = "127.0.0.103";
/// Not in the registry, on globex's own listener.
const GLOBEX_BRANCH: &str = "127.0.0.104";

/// Three accounts; each user may publish only its partition's subject (and use the
/// JetStream API of its own account).
const ACCOUNTS: &str = r#"
accounts {
  OPS: { jetstream: enabled, users: [ { user: ops, password: ops-pw, permissions: {
    publish: { allow: ["flows.raw.netflow.ops", "$JS.API.>"] }, subscribe: { allow: ["_INBOX.>"] } } } ] }
  ACME: { jetstream: enabled, users: [ { user: acme, password: acme-pw, permissions: {
    publish: { allow: ["flows.raw.netflow.acme", "$JS.API.>"] }, subscribe: { allow: ["_INBOX.>"] } } } ] }
  GLOBEX: { jetstream: enabled, users: [ { user: globex, password: globex-pw, permissions: {
    publish: { allow: ["flows.raw.netflow.globex", "$JS.API.>"] }, subscribe: { allow: ["_INBOX.>"] } } } ] }
}
"#;

/// One account's view of the server.
async fn account(port: u16, user: &str) -> jetstream::Context {
    let client =
        async_nats::ConnectOptions::with_user_and_password(user.into(), format!("{user}-pw"))
            .connect(format!("nats://127.0.0.1:{port}"))
            .await
            .unwrap_or_else(|e| panic!("{user} connects: {e}"));
    jetstream::new(client)
}

/// One account's view of the server, through a `.creds` file.
async fn account_with_creds(port: u16, creds: &std::path::Path) -> jetstream::Context {
    let options = async_nats::ConnectOptions::with_credentials_file(creds)
        .await
        .unwrap_or_else(|e| panic!("{}: {e}", creds.display()));
    let client = options
        .connect(format!("nats://127.0.0.1:{port}"))
        .await
        .unwrap_or_else(|e| panic!("{} connects: {e}", creds.display()));
    jetstream::new(client)
}

/// Every message of `stream` in this account: its subject and flow.
async fn stored(js: &jetstream::Context, stream: &str) -> Vec<(String, FlowMessage)> {
    let mut handle = js.get_stream(stream).await.unwrap_or_else(|e| panic!("{stream}: {e}"));
    let state = handle.info().await.expect("stream info").state.clone();
    let mut flows = Vec::new();
    if state.messages == 0 {
        return flows;
    }
    for sequence in state.first_sequence..=state.last_sequence {
        let message = handle.get_raw_message(sequence).await.expect("a stored message");
        let flow = FlowMessage::decode(message.payload).expect("one FlowMessage per message");
        flows.push((message.subject.to_string(), flow));
    }
    flows
}

async fn stream_len(js: &jetstream::Context, stream: &str) -> u64 {
    match js.get_stream(stream).await {
        Ok(mut handle) => handle.info().await.map_or(0, |info| info.state.messages),
        Err(_) => 0,
    }
}

/// Waits until every stream holds something and none grew for a second.
async fn wait_settled(streams: &[(&jetstream::Context, &str)]) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut last = Vec::new();
    loop {
        let mut lens = Vec::new();
        for (js, stream) in streams {
            lens.push(stream_len(js, stream).await);
        }
        if lens.iter().all(|n| *n > 0) && lens == last {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "the streams never settled: {lens:?}");
        last = lens;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Waits until the collector has `n` streams in shape.
async fn wait_streams_ready(collector: &Running, n: usize) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while collector.logs().iter().filter(|l| l.contains("JetStream stream ready")).count() < n {
        assert!(std::time::Instant::now() < deadline, "{n} streams: {}", collector.log_text());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn sampler(flow: &FlowMessage) -> String {
    let octets = <[u8; 4]>::try_from(flow.sampler_address.as_slice()).expect("IPv4 exporter");
    IpAddr::from(octets).to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tenant_publishes_only_into_its_own_account() {
    let server = nats::NatsServer::start_with(ACCOUNTS);
    let url = |user: &str| format!("nats://{user}:{user}-pw@127.0.0.1:{}", server.port);
    let shared = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    let globex_own = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    let http = SocketAddr::from(([127, 0, 0, 1], free_tcp_port()));
    let template = "flows.raw.netflow.{partition}";
    let config = json!({
        "nats_url": url("ops"),
        "partition": "ops",
        "stream_name": "events",
        "stream_subjects": [],
        "stream_max_bytes": 64 * 1024 * 1024,
        "publish_timeout_ms": 2000,
        "metrics_addr": http.to_string(),
        "exporters": [
            { "prefix": ACME, "partition": "acme", "name": "acme-edge" },
            { "prefix": GLOBEX, "partition": "globex", "name": "globex-core" },
        ],
        "partitions": {
            "acme": { "nats_url": url("acme"), "stream_name": "acme_flows" },
            "globex": { "nats_url": url("globex"), "stream_name": "globex_flows",
                        "max_exporters": 8 },
        },
        "listeners": [
            { "protocol": "netflow", "listen_addr": shared.to_string(), "subject": template,
              "buffer_size": 8 << 20 },
            { "protocol": "netflow", "listen_addr": globex_own.to_string(), "subject": template,
              "partition": "globex", "buffer_size": 8 << 20 },
        ],
    });
    let collector = Running::start(&config, &[]);
    wait_streams_ready(&collector, 3).await;

    let ipfix = "100-IPFIXv10-CISCO/traffic-00.pcap";
    let v9 = "101-NFv9-CISCO-cust_primitives/traffic-00.pcap";
    let sent = [
        support::send_capture_from(ipfix, ACME, shared),
        support::send_capture_from(v9, GLOBEX, shared),
        support::send_capture_from(ipfix, OPS_ROUTER, shared),
        support::send_capture_from(v9, GLOBEX_BRANCH, globex_own),
    ];
    assert!(sent.iter().all(|n| *n > 0), "{sent:?}");

    let (ops, acme, globex) = (
        account(server.port, "ops").await,
        account(server.port, "acme").await,
        account(server.port, "globex").await,
    );
    let streams = [(&ops, "events"), (&acme, "acme_flows"), (&globex, "globex_flows")];
    wait_settled(&streams).await;
    let scraped = metrics(http);
    let exited = collector.stop();
    assert!(exited.status.success(), "{}", exited.log_text());
    let logs = exited.log_text();
    assert!(logs.contains("Connecting to NATS JetStream"), "{logs}");
    assert!(!logs.contains("-pw"), "a password in the logs:\n{logs}");
    assert_eq!(exited.counter("flows_dropped"), 0, "{}", exited.log_text());

    let mut per_partition: BTreeMap<String, u64> = BTreeMap::new();
    for ((js, stream), partition) in streams.into_iter().zip(["ops", "acme", "globex"]) {
        let flows = stored(js, stream).await;
        assert!(!flows.is_empty(), "{stream} is empty");
        for (subject, flow) in &flows {
            assert_eq!(subject, &format!("flows.raw.netflow.{partition}"), "in {stream}");
            assert_eq!(flow.partition, partition, "a flow of {} in {stream}", flow.partition);
            let expected_sources: &[&str] = match partition {
                "ops" => &[OPS_ROUTER],
                "acme" => &[ACME],
                _ => &[GLOBEX, GLOBEX_BRANCH],
            };
            assert!(
                expected_sources.contains(&sampler(flow).as_str()),
                "{} in {stream}",
                sampler(flow)
            );
        }
        per_partition.insert(partition.to_owned(), flows.len() as u64);
    }
    // Neither tenant's account can even see the other's stream.
    assert!(acme.get_stream("globex_flows").await.is_err(), "acme sees globex's stream");
    assert!(globex.get_stream("acme_flows").await.is_err(), "globex sees acme's stream");

    // The per-partition publisher counters are each stream's contents, and add up.
    let total: u64 = per_partition.values().sum();
    assert_eq!(total, exited.counter("flows_published"));
    for (partition, stored) in &per_partition {
        let series = format!(
            "flow_collector_flows_published_total{{subject=\"flows.raw.netflow.{partition}\",partition=\"{partition}\"}}"
        );
        assert_eq!(sample(&scraped, &series), *stored, "{partition}");
    }
    let published: u64 = ["ops", "acme", "globex"]
        .iter()
        .map(|p| {
            sum_with_label(
                &scraped,
                "flow_collector_flows_published_total",
                &format!("partition=\"{p}\""),
            )
        })
        .sum();
    assert_eq!(published, total, "per-partition published flows add up to the total");
    let decoded_by_partition: u64 = ["ops", "acme", "globex"]
        .iter()
        .map(|p| {
            sum_with_label(
                &scraped,
                "flow_collector_partition_flows_total",
                &format!("partition=\"{p}\""),
            )
        })
        .sum();
    let decoded: u64 = scraped
        .lines()
        .filter(|l| l.starts_with("flow_collector_flows_decoded_total{"))
        .filter_map(|l| l.rsplit_once(' ')?.1.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum();
    assert_eq!(decoded_by_partition, decoded, "per-partition decoded flows add up");
    assert_eq!(decoded, total);
    assert_eq!(sample(&scraped, "flow_collector_partition_exporters{partition=\"globex\"}"), 2);

    // A tenant's credentials cannot publish on another tenant's subject.
    let mut forbidden = acme.clone();
    forbidden.set_timeout(Duration::from_secs(2));
    let attempt = forbidden.publish("flows.raw.netflow.globex", "x".into()).await;
    let acked = match attempt {
        Ok(ack) => ack.await.is_ok(),
        Err(_) => false,
    };
    assert!(!acked, "acme published on globex's subject");
    assert_eq!(stream_len(&globex, "globex_flows").await, per_partition["globex"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_presents_its_own_creds_file_and_lands_in_its_own_account() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let (ops_creds, acme_creds) = (dir.path().join("ops.creds"), dir.path().join("acme.creds"));
    let mut operator = Operator::generate();
    operator.account("OPS").user_creds("ops", &["flows.raw.netflow.ops"], &ops_creds);
    operator.account("ACME").user_creds("acme", &["flows.raw.netflow.acme"], &acme_creds);
    let server = nats::NatsServer::start_with(&operator.server_config());
    let shared = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    let config = json!({
        "nats_url": server.url(),
        "nats_creds_file": ops_creds,
        "partition": "ops",
        "stream_subjects": [],
        "stream_max_bytes": 64 * 1024 * 1024,
        "publish_timeout_ms": 2000,
        "exporters": [ { "prefix": ACME, "partition": "acme" } ],
        "partitions": { "acme": { "nats_creds_file": acme_creds, "stream_name": "acme_flows" } },
        "listeners": [
            { "protocol": "netflow", "listen_addr": shared.to_string(),
              "subject": "flows.raw.netflow.{partition}", "buffer_size": 8 << 20 },
        ],
    });
    let collector = Running::start(&config, &[]);
    wait_streams_ready(&collector, 2).await;
    let capture = "100-IPFIXv10-CISCO/traffic-00.pcap";
    assert!(support::send_capture_from(capture, ACME, shared) > 0);
    assert!(support::send_capture_from(capture, OPS_ROUTER, shared) > 0);

    let ops = account_with_creds(server.port, &ops_creds).await;
    let acme = account_with_creds(server.port, &acme_creds).await;
    wait_settled(&[(&ops, "events"), (&acme, "acme_flows")]).await;
    let exited = collector.stop();
    assert!(exited.status.success(), "{}", exited.log_text());
    assert_eq!(exited.counter("flows_dropped"), 0, "{}", exited.log_text());

    let in_ops = stored(&ops, "events").await;
    let in_acme = stored(&acme, "acme_flows").await;
    assert!(in_ops.iter().all(|(_, f)| f.partition == "ops" && sampler(f) == OPS_ROUTER));
    assert!(in_acme.iter().all(|(_, f)| f.partition == "acme" && sampler(f) == ACME));
    assert_eq!(in_ops.len(), in_acme.len(), "the same capture from each router");
    assert_eq!((in_ops.len() + in_acme.len()) as u64, exited.counter("flows_published"));
    assert!(ops.get_stream("acme_flows").await.is_err(), "the install sees acme's stream");
}
