//! Two tenants on one listener, through the real binary into a real nats-server: the
//! exporter registry places each router in its partition, the listener's subject
//! template gives each partition its own subject, every flow carries its partition and
//! registry tags, no flow of one tenant is on the other's subject, and the per-subject
//! counters add up to the total.

mod jetstream_support;
#[path = "../publish/tests/support/mod.rs"]
mod nats;
mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use flowpb::FlowMessage;
use jetstream_support::*;
use prost::Message;
use serde_json::json;

const ACME: &str = "127.0.0.71";
const GLOBEX: &str = "127.0.0.72";

/// Every stored message's subject and flow.
async fn stored_by_subject(url: &str) -> Vec<(String, FlowMessage)> {
    let js = nats::inspector(url).await;
    let mut stream = js.get_stream(STREAM).await.expect("the stream exists");
    let state = stream.info().await.expect("stream info").state.clone();
    let mut stored = Vec::new();
    for sequence in state.first_sequence..=state.last_sequence {
        let message = stream.get_raw_message(sequence).await.expect("a stored message");
        let flow = FlowMessage::decode(message.payload).expect("one FlowMessage per message");
        stored.push((message.subject.to_string(), flow));
    }
    stored
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_tenant_lands_on_its_own_subject_with_its_tags() {
    let (_server, url) = nats_server();
    let addr = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    let mut config = jetstream_config(&url, addr);
    config["stream_subjects"] = json!([]);
    config["listeners"][0]["subject"] = json!("flows.tenant.{partition}");
    config["exporters"] = json!([
        { "prefix": "127.0.0.64/26", "site": "lab", "tags": { "rack": "r1" } },
        { "prefix": ACME, "partition": "acme", "name": "acme-edge-1", "role": "border",
          "tags": { "account": "A-1" } },
        { "prefix": GLOBEX, "partition": "globex", "name": "globex-core" },
    ]);
    let collector = Running::start(&config, &[]);
    let acme_sent = support::send_capture_from("100-IPFIXv10-CISCO/traffic-00.pcap", ACME, addr);
    let globex_sent =
        support::send_capture_from("101-NFv9-CISCO-cust_primitives/traffic-00.pcap", GLOBEX, addr);
    assert!(acme_sent > 0 && globex_sent > 0);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let mut stored = 0;
    while stored == 0 || stream_len(&url).await != stored {
        assert!(tokio::time::Instant::now() < deadline, "the stream never settled");
        stored = stream_len(&url).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let exited = collector.stop();
    assert!(exited.status.success(), "{}", exited.log_text());
    assert_eq!(exited.counter("flows_dropped"), 0);

    let flows = stored_by_subject(&url).await;
    assert_eq!(flows.len() as u64, exited.counter("flows_published"));
    let mut per_subject: BTreeMap<String, u64> = BTreeMap::new();
    for (subject, flow) in &flows {
        *per_subject.entry(subject.clone()).or_default() += 1;
        let sampler = std::net::IpAddr::from(
            <[u8; 4]>::try_from(flow.sampler_address.as_slice()).expect("an IPv4 exporter"),
        )
        .to_string();
        let (partition, name) = match sampler.as_str() {
            ACME => ("acme", "acme-edge-1"),
            GLOBEX => ("globex", "globex-core"),
            other => panic!("a flow from nowhere: {other}"),
        };
        assert_eq!(
            subject,
            &format!("flows.tenant.{partition}"),
            "a flow on another tenant's subject"
        );
        assert_eq!((flow.partition.as_str(), flow.exporter_name.as_str()), (partition, name));
        assert_eq!(flow.exporter_site, "lab", "the wider entry fills what the narrow one leaves");
        assert_eq!(flow.exporter_tags.get("rack").map(String::as_str), Some("r1"));
        if partition == "acme" {
            assert_eq!(flow.exporter_role, "border");
            assert_eq!(flow.exporter_tags.get("account").map(String::as_str), Some("A-1"));
        } else {
            assert!(!flow.exporter_tags.contains_key("account"), "acme's tags on globex");
        }
    }
    assert_eq!(per_subject.len(), 2, "{per_subject:?}");
    assert!(per_subject.values().all(|n| *n > 0), "{per_subject:?}");
    assert_eq!(per_subject.values().sum::<u64>(), exited.counter("flows_published"));
}
