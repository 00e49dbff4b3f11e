//! sFlow through the real binary: a listener of protocol "sflow" decodes flow samples
//! from two agents, skips counter samples, honours `max_samples_per_datagram`, and keeps
//! one agent's garbage from touching the other's flows.

mod support;

#[path = "../decode/tests/sflow_builder/mod.rs"]
mod sflow_builder;

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::time::Duration;

use serde_json::json;
use sflow_builder::{
    DatagramBuilder, counter_sample, ethernet, flow_sample, header_record, ipv4, switch_record, tcp,
};
use support::{Collector, free_udp_port};

/// One sampled TCP packet 10.0.0.1:40000 -> 10.0.0.2:443 behind VLAN-less Ethernet.
fn sampled_tcp(src_last: u8) -> Vec<u8> {
    let mut frame = ethernet([2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 1], 0x0800);
    frame.extend(ipv4(0x28, 7, 0b010, 0, 61, 6, [10, 0, 0, src_last], [10, 0, 0, 2], 20));
    frame.extend(tcp(40_000, 443, 0x18));
    frame
}

fn datagram(agent: IpAddr, sequence: u32, samples: usize) -> Vec<u8> {
    let mut builder = DatagramBuilder::new(agent).sequence(sequence);
    for k in 0..samples {
        let header = sampled_tcp(u8::try_from(k + 1).unwrap_or(u8::MAX));
        builder = builder.sample(flow_sample(
            512,
            5,
            7,
            &[header_record(1, 1_514, &header), switch_record(100, 200)],
        ));
    }
    builder.sample(counter_sample(false)).build()
}

#[test]
fn sflow_agents_decode_through_the_binary_and_caps_hold() {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_udp_port()));
    let config = json!({
        "listeners": [{
            "protocol": "sflow",
            "listen_addr": addr.to_string(),
            "max_samples_per_datagram": 3,
        }]
    });
    let collector = Collector::start(&config, vec![addr]);
    let good = UdpSocket::bind("127.0.0.71:0").unwrap_or_else(|e| panic!("bind: {e}"));
    let noisy = UdpSocket::bind("127.0.0.72:0").unwrap_or_else(|e| panic!("bind: {e}"));
    let agent: IpAddr = "192.0.2.10".parse().unwrap_or_else(|e| panic!("{e}"));
    // Two datagrams within the cap (2 samples each) and one over it (5 samples: 3 decoded).
    for (sequence, samples) in [(1, 2), (2, 2), (3, 5)] {
        good.send_to(&datagram(agent, sequence, samples), addr).unwrap_or_else(|e| panic!("{e}"));
        noisy.send_to(&[0, 0, 0, 5, 0xde, 0xad], addr).unwrap_or_else(|e| panic!("{e}"));
        std::thread::sleep(Duration::from_millis(20));
    }
    collector.wait_for_lines(7, Duration::from_secs(20), Duration::from_millis(500));
    let finished = collector.stop();
    assert!(finished.status.success(), "collector exit {}", finished.status);

    assert_eq!(finished.flows.len(), 2 + 2 + 3, "flows: {:#?}", finished.flows);
    for flow in &finished.flows {
        assert_eq!(flow["type"], "SFLOW_5");
        assert_eq!(flow["sampler_address"], "192.0.2.10", "agent address, not UDP source");
        assert_eq!(flow["sampling_rate"], 512);
        assert_eq!(flow["dst_addr"], "10.0.0.2");
        assert_eq!(flow["src_port"], 40_000);
        assert_eq!(flow["dst_port"], 443);
        assert_eq!(flow["proto"], 6);
        assert_eq!(flow["protocol_name"], "TCP");
        assert_eq!(flow["tcp_flags"], 0x18);
        assert_eq!(flow["ip_tos"], 0x28);
        assert_eq!(flow["ip_ttl"], 61);
        assert_eq!(flow["etype"], 0x0800);
        assert_eq!(flow["bytes"], 1_514);
        assert_eq!(flow["packets"], 1);
        assert_eq!(flow["in_if"], 5);
        assert_eq!(flow["out_if"], 7);
        assert_eq!(flow["src_vlan"], 100);
        assert_eq!(flow["dst_vlan"], 200);
        assert_eq!(flow["src_mac"], "02:00:00:00:00:01");
    }
    let sequences: Vec<u64> =
        finished.flows.iter().filter_map(|f| f["sequence_num"].as_u64()).collect();
    assert_eq!(sequences, vec![1, 1, 2, 2, 3, 3, 3]);
    let logs = finished.logs.join("\n");
    assert!(
        logs.lines().any(|l| l.contains("Decode error") && l.contains("127.0.0.72")),
        "the noisy agent's garbage was not logged with its address:\n{logs}"
    );
    assert!(
        logs.lines().any(|l| l.contains("Decode error") && l.contains("max_samples_per_datagram")),
        "the sample cap was not reported:\n{logs}"
    );
}
