//! The real decoders behind the actors: the listener's protocol picks the session.

mod common;

use std::sync::Arc;

use common::*;
use flow_actors::{Collector, DecoderSessions, ListenerProtocol};
use flow_decode::{NetflowSettings, SflowSettings};
use flowpb::FlowType;

/// A NetFlow v5 datagram: a 24-byte header and one 48-byte record per (src port, bytes).
fn netflow_v5(sequence: u32, records: &[(u16, u32)]) -> Vec<u8> {
    let mut d = Vec::new();
    d.extend_from_slice(&5u16.to_be_bytes());
    d.extend_from_slice(&u16::try_from(records.len()).unwrap().to_be_bytes());
    d.extend_from_slice(&60_000u32.to_be_bytes()); // sys_uptime ms
    d.extend_from_slice(&1_700_000_000u32.to_be_bytes()); // unix_secs
    d.extend_from_slice(&0u32.to_be_bytes()); // unix_nsecs
    d.extend_from_slice(&sequence.to_be_bytes());
    d.extend_from_slice(&[0, 0]); // engine type, id
    d.extend_from_slice(&0u16.to_be_bytes()); // sampling interval
    for &(src_port, bytes) in records {
        d.extend_from_slice(&[10, 0, 0, 1]); // srcaddr
        d.extend_from_slice(&[192, 168, 1, 9]); // dstaddr
        d.extend_from_slice(&[0, 0, 0, 0]); // nexthop
        d.extend_from_slice(&1u16.to_be_bytes()); // input
        d.extend_from_slice(&2u16.to_be_bytes()); // output
        d.extend_from_slice(&3u32.to_be_bytes()); // packets
        d.extend_from_slice(&bytes.to_be_bytes());
        d.extend_from_slice(&50_000u32.to_be_bytes()); // first
        d.extend_from_slice(&59_000u32.to_be_bytes()); // last
        d.extend_from_slice(&src_port.to_be_bytes());
        d.extend_from_slice(&443u16.to_be_bytes()); // dst port
        d.extend_from_slice(&[0, 0x18, 6, 0]); // pad, tcp flags, proto, tos
        d.extend_from_slice(&[0, 0, 0, 0, 24, 24, 0, 0]); // src/dst as, masks, pad
    }
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn netflow_v5_flows_come_out_of_the_real_decoder() {
    let recorder = Recorder::open();
    let mut netflow = listener("flows.raw.netflow");
    netflow.protocol = ListenerProtocol::Netflow(NetflowSettings {
        max_templates: 2000,
        max_template_fields: 10_000,
        pending: None,
        sampling: Default::default(),
    });
    let collector = Collector::start_with(
        settings(vec![netflow]),
        Arc::new(DecoderSessions),
        &recorder.factory(),
    )
    .await
    .unwrap();
    let to = collector.local_addrs()[0];
    sender(2).await.send_to(&netflow_v5(7, &[(1000, 1500), (1001, 40)]), to).await.unwrap();
    wait_until("both flows are published", || recorder.len() == 2).await;

    let report = collector.shutdown().await.unwrap();
    assert_accounted(&report.counters);
    let flows: Vec<_> = recorder.flows().into_iter().map(|(_, f)| f).collect();
    for (flow, (port, bytes)) in flows.iter().zip([(1000, 1500), (1001, 40)]) {
        assert_eq!(flow.r#type, FlowType::NetflowV5 as i32);
        assert_eq!(flow.sampler_address, vec![127, 0, 0, 2]);
        assert_eq!(flow.src_addr, vec![10, 0, 0, 1]);
        assert_eq!((flow.src_port, flow.dst_port, flow.proto), (port, 443, 6));
        assert_eq!((flow.bytes, flow.packets), (bytes, 3));
        assert_eq!(flow.sequence_num, 7);
        assert_ne!(flow.time_received_ns, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_undecodable_datagram_is_counted_by_reason() {
    let recorder = Recorder::open();
    let mut sflow = listener("flows.raw.sflow");
    sflow.protocol = ListenerProtocol::Sflow(SflowSettings::default());
    let collector = Collector::start_with(
        settings(vec![sflow]),
        Arc::new(DecoderSessions),
        &recorder.factory(),
    )
    .await
    .unwrap();
    let to = collector.local_addrs()[0];
    sender(2).await.send_to(b"not sflow", to).await.unwrap();
    wait_until("the datagram is decoded", || {
        listener0(&collector.counters()).datagrams_decoded == 1
    })
    .await;

    let report = collector.shutdown().await.unwrap();
    assert_accounted(&report.counters);
    let c = listener0(&report.counters);
    assert_eq!(c.flows_decoded, 0);
    assert_eq!(c.decode_errors.values().sum::<u64>(), 1, "{:?}", c.decode_errors);
    assert_eq!(recorder.len(), 0);
}
