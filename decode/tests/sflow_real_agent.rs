//! A real sFlow agent: pmacct's `pmacctd` replays a pcap this test writes through its
//! `sfprobe` plugin, which exports sFlow v5 to a UDP socket of the test. The datagrams
//! received are decoded here, and checked twice: against the packets the pcap holds,
//! and against Wireshark's sFlow dissector (`tshark`) on the same datagrams.
//!
//! Skips (with a message) only when `pmacctd` or `tshark` is not installed.

mod sflow_builder;

use std::fs;
use std::io::Write;
use std::net::UdpSocket;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flow_decode::{Datagram, ExporterSession, FlowBuffer, SflowSession, SflowSettings};
use flow_replay::write::write_frames_file;
use flowpb::FlowMessage;
use serde_json::Value;
use sflow_builder::tools::{
    addr_bytes, capture_times, find_tool, mac, num, samples_of, scratch_dir, tshark_sflow,
};
use sflow_builder::*;

const AGENT: [u8; 4] = [10, 9, 8, 7];
const SUB_AGENT: u32 = 5;
const EXT_SAMPLING_RATE: u64 = 64;

/// One packet of the replayed pcap and what its flow must show.
struct Expected {
    frame: Vec<u8>,
    src: Vec<u8>,
    dst: Vec<u8>,
    proto: u32,
    src_port: u32,
    dst_port: u32,
    vlan: u32,
}

fn traffic() -> Vec<Expected> {
    let a4 = [192, 0, 2, 1];
    let b4 = [198, 51, 100, 2];
    let mut big_payload = udp(40_000, 9_000, 1_200);
    big_payload.resize(8 + 1_200, 0x5A);
    vec![
        Expected {
            frame: [
                ethernet(MAC_B, MAC_A, 0x0800),
                ipv4(0x28, 1, 0b010, 0, 61, 6, a4, b4, 20),
                tcp(40_001, 443, 0x02),
            ]
            .concat(),
            src: a4.to_vec(),
            dst: b4.to_vec(),
            proto: 6,
            src_port: 40_001,
            dst_port: 443,
            vlan: 0,
        },
        Expected {
            frame: [
                ethernet(MAC_A, MAC_B, 0x0800),
                ipv4(0, 2, 0, 0, 64, 17, b4, a4, 1_208),
                big_payload,
            ]
            .concat(),
            src: b4.to_vec(),
            dst: a4.to_vec(),
            proto: 17,
            src_port: 40_000,
            dst_port: 9_000,
            vlan: 0,
        },
        Expected {
            frame: [
                ethernet(MAC_B, MAC_A, 0x8100),
                vlan_tag(0, 42, 0x0800),
                ipv4(0, 3, 0, 0, 64, 17, a4, b4, 8),
                udp(53, 53, 0),
            ]
            .concat(),
            src: a4.to_vec(),
            dst: b4.to_vec(),
            proto: 17,
            src_port: 53,
            dst_port: 53,
            vlan: 42,
        },
        Expected {
            frame: [
                ethernet(MAC_B, MAC_A, 0x86DD),
                ipv6(0xB8, 0x12345, 6, 55, v6(1), v6(2), 20),
                tcp(2222, 22, 0x18),
            ]
            .concat(),
            src: v6(1).to_vec(),
            dst: v6(2).to_vec(),
            proto: 6,
            src_port: 2222,
            dst_port: 22,
            vlan: 0,
        },
        Expected {
            frame: [ethernet(MAC_B, MAC_A, 0x0800), ipv4(0, 5, 0, 0, 64, 1, a4, b4, 8), icmp(8, 0)]
                .concat(),
            src: a4.to_vec(),
            dst: b4.to_vec(),
            proto: 1,
            src_port: 0,
            dst_port: 0,
            vlan: 0,
        },
        Expected {
            frame: [
                ethernet(MAC_B, MAC_A, 0x86DD),
                ipv6(0, 0, 58, 255, v6(3), v6(4), 8),
                icmp(128, 0),
            ]
            .concat(),
            src: v6(3).to_vec(),
            dst: v6(4).to_vec(),
            proto: 58,
            src_port: 0,
            dst_port: 0,
            vlan: 0,
        },
    ]
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs pmacctd over the pcap and returns the datagrams its sfprobe exported.
fn capture_sflow(pmacctd: &Path, dir: &Path, pcap: &Path) -> (Vec<Vec<u8>>, u16) {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind UDP");
    socket.set_read_timeout(Some(Duration::from_millis(200))).expect("timeout");
    let port = socket.local_addr().expect("local addr").port();
    let config = dir.join("pmacctd.conf");
    let mut file = fs::File::create(&config).expect("config");
    writeln!(
        file,
        "daemonize: false\npcap_savefile: {}\npcap_savefile_delay: 0\nplugins: sfprobe\n\
         sfprobe_receiver: 127.0.0.1:{port}\nsfprobe_agentip: {}\nsfprobe_agentsubid: {SUB_AGENT}\n\
         pmacctd_ext_sampling_rate: {EXT_SAMPLING_RATE}\nlogfile: {}",
        pcap.display(),
        std::net::Ipv4Addr::from(AGENT),
        dir.join("pmacctd.log").display(),
    )
    .expect("write config");
    let mut child = KillOnDrop(
        Command::new(pmacctd)
            .arg("-f")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pmacctd"),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut exited_at: Option<Instant> = None;
    let mut datagrams = Vec::new();
    let mut buf = [0u8; 65_535];
    while Instant::now() < deadline {
        if let Ok(len) = socket.recv(&mut buf) {
            datagrams.push(buf[..len].to_vec());
            continue;
        }
        if exited_at.is_none() && child.0.try_wait().expect("wait").is_some() {
            exited_at = Some(Instant::now());
        }
        // Drain for a second after the daemon is gone.
        if exited_at.is_some_and(|at| at.elapsed() > Duration::from_secs(1)) {
            break;
        }
    }
    (datagrams, port)
}

/// Checks one decoded flow against tshark's view of the same flow sample.
fn compare_with_tshark(flow: &FlowMessage, sample: &Value) {
    assert_eq!(flow.sampling_rate, num(&sample["sflow.flow_sample.sampling_rate"]));
    let input = num(&sample["sflow.flow_sample.input_interface"]);
    assert_eq!(u64::from(flow.in_if), if input == 0x3FFF_FFFF { 0 } else { input });
    let header = &sample["Raw packet header"];
    assert_eq!(flow.bytes, num(&header["sflow_245.header.frame_length"]));
    let tree = &header["sflow_245.header_tree"];
    assert!(tree.get("eth").is_some(), "tshark decoded the sampled Ethernet header");
    assert!(tree.get("ip").is_some() || tree.get("ipv6").is_some(), "and its IP layer");
    assert_eq!(flow.src_mac, mac(&tree["eth"]["eth.src"]));
    assert_eq!(flow.dst_mac, mac(&tree["eth"]["eth.dst"]));
    if let Some(vlan) = tree.get("vlan") {
        assert_eq!(u64::from(flow.vlan_id), num(&vlan["vlan.id"]));
    }
    if let Some(ip) = tree.get("ip") {
        assert_eq!(flow.src_addr, addr_bytes(&ip["ip.src"]));
        assert_eq!(flow.dst_addr, addr_bytes(&ip["ip.dst"]));
        assert_eq!(u64::from(flow.proto), num(&ip["ip.proto"]));
        assert_eq!(u64::from(flow.ip_ttl), num(&ip["ip.ttl"]));
        assert_eq!(u64::from(flow.ip_tos), num(&ip["ip.dsfield"]));
        assert_eq!(u64::from(flow.fragment_id), num(&ip["ip.id"]));
        assert_eq!(flow.etype, 0x0800);
    }
    if let Some(ip6) = tree.get("ipv6") {
        assert_eq!(flow.src_addr, addr_bytes(&ip6["ipv6.src"]));
        assert_eq!(flow.dst_addr, addr_bytes(&ip6["ipv6.dst"]));
        assert_eq!(u64::from(flow.proto), num(&ip6["ipv6.nxt"]));
        assert_eq!(u64::from(flow.ip_ttl), num(&ip6["ipv6.hlim"]));
        assert_eq!(u64::from(flow.ipv6_flow_label), num(&ip6["ipv6.flow"]));
        assert_eq!(u64::from(flow.ip_tos), num(&ip6["ipv6.tclass"]));
        assert_eq!(flow.etype, 0x86DD);
    }
    if let Some(tcp) = tree.get("tcp") {
        assert_eq!(u64::from(flow.src_port), num(&tcp["tcp.srcport"]));
        assert_eq!(u64::from(flow.dst_port), num(&tcp["tcp.dstport"]));
        assert_eq!(u64::from(flow.tcp_flags), num(&tcp["tcp.flags"]) & 0xFF);
    }
    if let Some(udp) = tree.get("udp") {
        assert_eq!(u64::from(flow.src_port), num(&udp["udp.srcport"]));
        assert_eq!(u64::from(flow.dst_port), num(&udp["udp.dstport"]));
    }
    for layer in ["icmp", "icmpv6"] {
        if let Some(icmp) = tree.get(layer) {
            assert_eq!(u64::from(flow.icmp_type), num(&icmp[format!("{layer}.type")]));
            assert_eq!(u64::from(flow.icmp_code), num(&icmp[format!("{layer}.code")]));
        }
    }
}

#[test]
fn pmacct_sfprobe_export_decodes_like_the_packets_and_like_tshark() {
    let (Some(pmacctd), Some(tshark)) = (find_tool("pmacctd"), find_tool("tshark")) else {
        eprintln!(
            "SKIPPED sflow_real_agent: pmacctd and/or tshark not installed (apt-get install pmacct tshark)"
        );
        return;
    };
    let dir = scratch_dir("sflow-real-agent");
    let expected = traffic();
    let traffic_pcap = dir.join("traffic.pcap");
    let frames: Vec<(Duration, Vec<u8>)> =
        capture_times().zip(expected.iter().map(|e| e.frame.clone())).collect();
    write_frames_file(&traffic_pcap, &frames).expect("write traffic pcap");

    let (datagrams, port) = capture_sflow(&pmacctd, &dir, &traffic_pcap);
    let log = fs::read_to_string(dir.join("pmacctd.log")).unwrap_or_default();
    assert!(!datagrams.is_empty(), "pmacctd exported no sFlow; its log:\n{log}");

    // Decode.
    let mut session = SflowSession::new(&SflowSettings::default());
    let mut flows = FlowBuffer::new();
    let mut counter_samples = 0;
    for payload in &datagrams {
        let report = session.decode(
            Datagram { source: "127.0.0.1:40000".parse().expect("addr"), received_ns: 1, payload },
            &mut flows,
        );
        assert!(report.errors.is_empty(), "{:?}", report.errors);
        assert!(report.events.is_empty());
        assert_eq!(report.sequence_gap, 0);
        counter_samples += report.non_flow_records;
    }

    // Against the packets: rate 1 capture, so every packet is one flow, in order.
    assert_eq!(flows.len(), expected.len(), "one flow per replayed packet");
    for (flow, packet) in flows.iter().zip(&expected) {
        assert_eq!(flow.sampler_address, AGENT.to_vec());
        assert_eq!(flow.sampling_rate, EXT_SAMPLING_RATE);
        assert_eq!(
            (flow.src_addr.clone(), flow.dst_addr.clone()),
            (packet.src.clone(), packet.dst.clone())
        );
        assert_eq!(
            (flow.proto, flow.src_port, flow.dst_port),
            (packet.proto, packet.src_port, packet.dst_port)
        );
        assert_eq!(flow.vlan_id, packet.vlan);
        assert!(
            flow.bytes >= packet.frame.len() as u64,
            "frame length {} < {}",
            flow.bytes,
            packet.frame.len()
        );
        assert!(!flow.protocol_name.is_empty());
        // pmacctd reports both interfaces as 0x3FFFFFFF ("the device itself").
        assert_eq!((flow.in_if, flow.out_if, flow.forwarding_status), (0, 0, 0xC0));
    }

    // Against tshark on the very same datagrams.
    let dissected = tshark_sflow(&tshark, &dir, &datagrams, port);
    let mut flow_iter = flows.iter();
    let mut tshark_counters = 0;
    for (datagram, payload) in dissected.iter().zip(&datagrams) {
        assert_eq!(datagram["sflow_245.agent"].as_str(), Some("10.9.8.7"));
        assert_eq!(num(&datagram["sflow_245.sub_agent_id"]), u64::from(SUB_AGENT));
        let sequence = num(&datagram["sflow_245.sequence_number"]);
        assert_eq!(
            sequence,
            u64::from(u32::from_be_bytes([payload[16], payload[17], payload[18], payload[19]]))
        );
        for (label, sample) in samples_of(datagram) {
            if label.starts_with("Counters") || label.starts_with("Expanded counter") {
                tshark_counters += 1;
                continue;
            }
            let flow = flow_iter.next().expect("a decoded flow for each tshark flow sample");
            assert_eq!(u64::from(flow.sequence_num), sequence);
            compare_with_tshark(flow, &sample);
        }
    }
    assert!(flow_iter.next().is_none(), "tshark saw as many flow samples as we decoded");
    assert_eq!(counter_samples, tshark_counters);
    let _ = fs::remove_dir_all(&dir);
}
