//! Hand-built datagrams holding every record type the decoder maps, dissected by
//! Wireshark's sFlow dissector (`tshark`) as an independent reading of the same bytes:
//! this checks the test builder's layouts (and so the decoder's) against another
//! implementation of the specification, not against themselves.
//!
//! Skips (with a message) only when `tshark` is not installed.

mod sflow_builder;

use std::net::IpAddr;

use flowpb::FlowMessage;
use serde_json::Value;
use sflow_builder::tools::{
    addr_bytes, find_tool, mac, num, nums, samples_of, scratch_dir, tshark_sflow,
};
use sflow_builder::*;

fn ip(s: &str) -> IpAddr {
    s.parse().expect("valid address")
}

fn datagram() -> Vec<u8> {
    let frame = [
        ethernet(MAC_B, MAC_A, 0x8100),
        vlan_tag(2, 77, 0x0800),
        ipv4(0x2E, 0x0101, 0b010, 0, 33, 6, [10, 0, 0, 1], [10, 0, 0, 2], 20),
        tcp(40_000, 8443, 0x12),
    ]
    .concat();
    DatagramBuilder::new(ip("2001:db8::9"))
        .sub_agent(3)
        .sequence(77)
        .sample(flow_sample(
            100,
            4,
            0x4000_0102,
            &[
                ethernet_record(1518, [1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12], 0x0800),
                ip_record(1400, 17, ip("198.51.100.1"), ip("203.0.113.9"), 5353, 53, 0, 0xB8),
                switch_record(100, 200),
                router_record(Some(ip("192.0.2.1")), 24, 16),
                gateway_record(
                    ip("192.0.2.254"),
                    65000,
                    64512,
                    64513,
                    &[(2, vec![65001, 65002]), (1, vec![65003])],
                    &[0xFDE8_0001, 0xFDE8_0002],
                    100,
                ),
            ],
        ))
        .sample(expanded_flow_sample(
            2048,
            (0, 0x0123_4567),
            (2, 3),
            &[
                ip_record(900, 6, ip("2001:db8::1"), ip("2001:db8::2"), 1234, 80, 0x18, 3),
                header_record(1, 1514, &frame),
            ],
        ))
        .sample(counter_sample(false))
        .build()
}

fn check_compact_sample(flow: &FlowMessage, sample: &Value) {
    assert_eq!(flow.sampling_rate, num(&sample["sflow.flow_sample.sampling_rate"]));
    assert_eq!(u64::from(flow.in_if), num(&sample["sflow.flow_sample.input_interface"]));
    let output = &sample["sflow.flow_sample.output_interface_tree"];
    assert_eq!(num(&output["sflow.flow_sample.output_interface_format"]), 1, "discarded");
    assert_eq!((flow.out_if, flow.forwarding_status), (0, 0x80));

    let ethernet = &sample["Ethernet frame data"];
    assert_eq!(flow.src_mac, mac(&ethernet["sflow_245.ethernet.source_mac_address"]));
    assert_eq!(flow.dst_mac, mac(&ethernet["sflow_245.ethernet.destination_mac_address"]));
    assert_eq!(u64::from(flow.etype), num(&ethernet["sflow_245.ethernet.packet_type"]));
    // Ethernet frame data comes after sampled IPv4 in precedence, so its length wins.
    assert_eq!(flow.bytes, num(&ethernet["sflow_245.ethernet.length"]));

    let v4 = &sample["IPv4 data"];
    assert_eq!(flow.src_addr, addr_bytes(&v4["sflow_245.ipv4_src"]));
    assert_eq!(flow.dst_addr, addr_bytes(&v4["sflow_245.ipv4_dst"]));
    assert_eq!(u64::from(flow.proto), num(&v4["sflow.ip_protocol"]));
    assert_eq!(u64::from(flow.src_port), num(&v4["sflow_245.ip.source_port"]));
    assert_eq!(u64::from(flow.dst_port), num(&v4["sflow.ip.destination_port"]));

    let switch = &sample["Extended switch data"];
    assert_eq!(u64::from(flow.src_vlan), num(&switch["sflow_245.vlan.in"]));
    assert_eq!(u64::from(flow.dst_vlan), num(&switch["sflow_245.vlan.out"]));

    let router = &sample["Extended router data"];
    assert_eq!(flow.next_hop, addr_bytes(&router["sflow_245.nexthop"]));
    assert_eq!(u64::from(flow.src_net), num(&router["sflow_245.nexthop.src_mask"]));
    assert_eq!(u64::from(flow.dst_net), num(&router["sflow_245.nexthop.dst_mask"]));

    let gateway = &sample["Extended gateway data"];
    assert_eq!(flow.bgp_next_hop, addr_bytes(&gateway["sflow_245.nexthop"]));
    assert_eq!(u64::from(flow.src_as), num(&gateway["sflow_245.srcAS"]));
    let path: Vec<u64> = match &gateway["sflow.as_type_tree"] {
        Value::Array(segments) => {
            segments.iter().flat_map(|s| nums(&s["sflow_245.dstAS"])).collect()
        }
        segment => nums(&segment["sflow_245.dstAS"]),
    };
    assert_eq!(flow.as_path.iter().map(|a| u64::from(*a)).collect::<Vec<_>>(), path);
    assert_eq!(Some(u64::from(flow.dst_as)), path.last().copied());
    assert_eq!(Some(u64::from(flow.next_hop_as)), path.first().copied());
    let communities = nums(&gateway["sflow_245.communityEntries_tree"]["sflow_245.dstAS"]);
    assert_eq!(flow.bgp_communities.iter().map(|c| u64::from(*c)).collect::<Vec<_>>(), communities);
}

fn check_expanded_sample(flow: &FlowMessage, sample: &Value) {
    assert_eq!(flow.sampling_rate, num(&sample["sflow.flow_sample.sampling_rate"]));
    assert_eq!(u64::from(flow.in_if), num(&sample["sflow.flow_sample.input_interface_value"]));
    assert_eq!(num(&sample["sflow.flow_sample.output_interface.format"]), 2, "multiple");
    assert_eq!((flow.out_if, flow.forwarding_status), (0, 0x40));

    // The raw header takes precedence over the sampled IPv6 record.
    let header = &sample["Raw packet header"];
    assert_eq!(flow.bytes, num(&header["sflow_245.header.frame_length"]));
    let tree = &header["sflow_245.header_tree"];
    assert_eq!(flow.src_mac, mac(&tree["eth"]["eth.src"]));
    assert_eq!(flow.dst_mac, mac(&tree["eth"]["eth.dst"]));
    assert_eq!(u64::from(flow.vlan_id), num(&tree["vlan"]["vlan.id"]));
    let ip4 = &tree["ip"];
    assert_eq!(flow.src_addr, addr_bytes(&ip4["ip.src"]));
    assert_eq!(flow.dst_addr, addr_bytes(&ip4["ip.dst"]));
    assert_eq!(u64::from(flow.ip_tos), num(&ip4["ip.dsfield"]));
    assert_eq!(u64::from(flow.ip_ttl), num(&ip4["ip.ttl"]));
    assert_eq!(u64::from(flow.ip_flags), num(&ip4["ip.flags"]));
    assert_eq!(u64::from(flow.fragment_id), num(&ip4["ip.id"]));
    let tcp = &tree["tcp"];
    assert_eq!(u64::from(flow.src_port), num(&tcp["tcp.srcport"]));
    assert_eq!(u64::from(flow.dst_port), num(&tcp["tcp.dstport"]));
    assert_eq!(u64::from(flow.tcp_flags), num(&tcp["tcp.flags"]));
}

#[test]
fn hand_built_records_decode_like_wireshark_reads_them() {
    let Some(tshark) = find_tool("tshark") else {
        eprintln!("SKIPPED sflow_tshark: tshark not installed (apt-get install tshark)");
        return;
    };
    let datagram = datagram();
    let (flows, report) = decode(&datagram);
    assert!(report.errors.is_empty(), "{:?}", report.errors);
    assert_eq!((flows.len(), report.non_flow_records), (2, 1));

    let dir = scratch_dir("sflow-tshark");
    let dissected = tshark_sflow(&tshark, &dir, std::slice::from_ref(&datagram), 6343);
    let sflow = &dissected[0];
    assert_eq!(flows[0].sampler_address, addr_bytes(&sflow["sflow_245.agent.v6"]));
    assert_eq!(u64::from(flows[0].sequence_num), num(&sflow["sflow_245.sequence_number"]));
    let samples = samples_of(sflow);
    let labels: Vec<&str> = samples.iter().map(|(label, _)| label.as_str()).collect();
    assert_eq!(
        labels,
        ["Flow sample, seq 7", "Expanded flow sample, seq 9", "Counters sample, seq 11"]
    );
    check_compact_sample(&flows[0], &samples[0].1);
    check_expanded_sample(&flows[1], &samples[1].1);
    let _ = std::fs::remove_dir_all(&dir);
}
