//! JSON rendering of a `FlowMessage`: one object per flow, keyed by the contract's
//! field names (in byte order), with addresses and MACs as text and enums by name.
//! Every field is present, zero or not, so a line always has the same shape.
//!
//! [`write_json`] writes a flow straight into a reused `String` (the stdout sink and
//! `flow-tail` write lines with it); [`to_json`] parses that line back into a
//! `serde_json::Value` for tests and tools that pick fields out.

use serde_json::Value;

use crate::FlowMessage;

mod line;

pub use line::write_json;

/// Renders `flow` as one line of JSON, without the trailing newline.
pub fn to_json_line(flow: &FlowMessage) -> String {
    let mut line = String::with_capacity(1024);
    write_json(flow, &mut line);
    line
}

/// Renders `flow` as a JSON object: the line of [`to_json_line`], parsed.
pub fn to_json(flow: &FlowMessage) -> Value {
    // The writer only writes valid JSON (tested below); Null would show a bug plainly.
    serde_json::from_str(&to_json_line(flow)).unwrap_or(Value::Null)
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use serde_json::json;

    use super::*;
    use crate::{FlowType, LayerStack};

    #[test]
    fn addresses_macs_and_enums_render_as_text() {
        let flow = FlowMessage {
            r#type: FlowType::NetflowV9 as i32,
            src_addr: vec![10, 0, 0, 1],
            dst_addr: "2001:db8::1".parse::<Ipv6Addr>().unwrap().octets().to_vec(),
            src_mac: 0x0011_2233_4455,
            layer_stack: vec![LayerStack::Ethernet as i32, LayerStack::IPv4 as i32],
            ..Default::default()
        };
        let v = to_json(&flow);
        assert_eq!(v["type"], "NETFLOW_V9");
        assert_eq!(v["src_addr"], "10.0.0.1");
        assert_eq!(v["dst_addr"], "2001:db8::1");
        assert_eq!(v["src_mac"], "00:11:22:33:44:55");
        assert_eq!(v["next_hop"], "");
        assert_eq!(v["layer_stack"], json!(["Ethernet", "IPv4"]));
    }

    #[test]
    fn every_ipv4_octet_and_a_mac_render_as_std_and_hex_write_them() {
        for octet in 0..=u8::MAX {
            let octets = [octet, 0, u8::MAX, octet.wrapping_mul(7)];
            let mac = u64::from(octet) << 40 | u64::from(octet.wrapping_mul(7));
            let flow =
                FlowMessage { src_addr: octets.to_vec(), dst_mac: mac, ..Default::default() };
            let v = to_json(&flow);
            assert_eq!(v["src_addr"], std::net::Ipv4Addr::from(octets).to_string());
            let [_, _, a, .., f] = mac.to_be_bytes();
            assert_eq!(v["dst_mac"], format!("{a:02x}:00:00:00:00:{f:02x}"));
            assert_eq!(v["src_mac"], "00:00:00:00:00:00");
        }
    }

    #[test]
    fn numbers_render_in_decimal_whatever_their_digits() {
        let values = (0..1000).chain([u64::from(u32::MAX), u64::MAX - 1, u64::MAX]);
        for value in values {
            let flow = FlowMessage {
                bytes: value,
                src_port: (value % 65536) as u32,
                ..Default::default()
            };
            let v = to_json(&flow);
            assert_eq!(v["bytes"], value, "{value}");
            assert_eq!(v["src_port"], value % 65536, "{value}");
        }
    }

    #[test]
    fn decode_flags_and_nat_fields_render_by_name_and_as_text() {
        let flow = FlowMessage {
            decode_flags: 0b0110 | 0x100,
            post_nat_src_addr: vec![203, 0, 113, 9],
            post_nat_src_port: 40_000,
            firewall_event: 2,
            flow_id: 77,
            ..Default::default()
        };
        let v = to_json(&flow);
        assert_eq!(
            v["decode_flags"],
            json!(["TIME_IN_FUTURE", "SAMPLING_RATE_DEFAULTED", "0x100"])
        );
        assert_eq!(v["post_nat_src_addr"], "203.0.113.9");
        assert_eq!(v["post_nat_dst_addr"], "");
        assert_eq!(
            (v["post_nat_src_port"].clone(), v["firewall_event"].clone()),
            (json!(40_000), json!(2))
        );
        assert_eq!(v["flow_id"], 77);
        assert_eq!(to_json(&FlowMessage::default())["decode_flags"], json!([]));
    }

    #[test]
    fn odd_length_address_renders_as_hex() {
        let flow = FlowMessage { next_hop: vec![1, 2, 3], ..Default::default() };
        assert_eq!(to_json(&flow)["next_hop"], "010203");
    }

    #[test]
    fn a_default_flow_renders_every_field() {
        let expected = r#"{"as_path":[],"bgp_communities":[],"bgp_next_hop":"","bytes":0,"bytes_in":0,"bytes_out":0,"decode_flags":[],"dst_addr":"","dst_as":0,"dst_mac":"00:00:00:00:00:00","dst_net":0,"dst_port":0,"dst_vlan":0,"etype":0,"exporter_name":"","exporter_role":"","exporter_site":"","exporter_tags":{},"firewall_event":0,"flow_id":0,"forwarding_status":0,"fragment_id":0,"fragment_offset":0,"icmp_code":0,"icmp_type":0,"in_if":0,"ip_flags":0,"ip_tos":0,"ip_ttl":0,"ipv6_flow_label":0,"ipv6_routing_header_addresses":[],"ipv6_routing_header_seg_left":0,"layer_size":[],"layer_stack":[],"mpls_ip":[],"mpls_label":[],"mpls_ttl":[],"next_hop":"","next_hop_as":0,"observation_domain_id":0,"observation_point_id":0,"out_if":0,"packets":0,"packets_in":0,"packets_out":0,"partition":"","post_nat_dst_addr":"","post_nat_dst_port":0,"post_nat_src_addr":"","post_nat_src_port":0,"proto":0,"protocol_name":"","sampler_address":"","sampling_rate":0,"sequence_num":0,"src_addr":"","src_as":0,"src_mac":"00:00:00:00:00:00","src_net":0,"src_port":0,"src_vlan":0,"tcp_flags":0,"time_flow_end_ns":0,"time_flow_start_ns":0,"time_received_ns":0,"type":"FLOWUNKNOWN","vlan_id":0}"#;
        assert_eq!(to_json_line(&FlowMessage::default()), expected);
    }

    #[test]
    fn a_full_flow_renders_byte_for_byte_as_before() {
        // Written by the serde_json::Value rendering this writer replaced (keys in byte
        // order, compact); DEL is not escaped by serde_json.
        let expected = r#"{"as_path":[64512,65001],"bgp_communities":[4259840001,0],"bgp_next_hop":"::ffff:192.0.2.7","bytes":18446744073709551615,"bytes_in":1,"bytes_out":2,"decode_flags":["TIME_IN_FUTURE","SAMPLING_RATE_DEFAULTED","0x100","0x80000000"],"dst_addr":"2001:db8::1","dst_as":65001,"dst_mac":"aa:bb:cc:dd:ee:ff","dst_net":48,"dst_port":51000,"dst_vlan":20,"etype":34525,"exporter_name":"edge \"1\"\\\n","exporter_role":"\u0001<DEL>","exporter_site":"Zürich 东京 🦀","exporter_tags":{"":"","account":"A-1001","zone":"b"},"firewall_event":2,"flow_id":77,"forwarding_status":64,"fragment_id":9,"fragment_offset":10,"icmp_code":1,"icmp_type":3,"in_if":7,"ip_flags":2,"ip_tos":184,"ip_ttl":63,"ipv6_flow_label":1048575,"ipv6_routing_header_addresses":["fe80::1"],"ipv6_routing_header_seg_left":1,"layer_size":[14,20,20],"layer_stack":["Ethernet","IPv4","TCP","Custom","Custom"],"mpls_ip":["192.0.2.9",""],"mpls_label":[16,1048575],"mpls_ttl":[255],"next_hop":"010203","next_hop_as":65002,"observation_domain_id":1,"observation_point_id":2,"out_if":8,"packets":12,"packets_in":3,"packets_out":4,"partition":"acme","post_nat_dst_addr":"","post_nat_dst_port":0,"post_nat_src_addr":"203.0.113.9","post_nat_src_port":40000,"proto":6,"protocol_name":"TCP","sampler_address":"192.0.2.1","sampling_rate":1000,"sequence_num":4294967295,"src_addr":"10.0.0.1","src_as":64512,"src_mac":"00:11:22:33:44:55","src_net":24,"src_port":443,"src_vlan":10,"tcp_flags":27,"time_flow_end_ns":1764115200000000000,"time_flow_start_ns":1764115199000000000,"time_received_ns":1764115200123456789,"type":"IPFIX","vlan_id":30}"#.replace("<DEL>", "\u{7f}");
        assert_eq!(to_json_line(&golden_flow()), expected);
    }

    /// One flow with every field set, each kind of value and escape represented.
    fn golden_flow() -> FlowMessage {
        FlowMessage {
            r#type: FlowType::Ipfix as i32,
            time_received_ns: 1_764_115_200_123_456_789,
            sequence_num: 4_294_967_295,
            sampling_rate: 1000,
            sampler_address: vec![192, 0, 2, 1],
            time_flow_start_ns: 1_764_115_199_000_000_000,
            time_flow_end_ns: 1_764_115_200_000_000_000,
            bytes: u64::MAX,
            packets: 12,
            bytes_in: 1,
            bytes_out: 2,
            packets_in: 3,
            packets_out: 4,
            src_addr: vec![10, 0, 0, 1],
            dst_addr: "2001:db8::1".parse::<Ipv6Addr>().unwrap().octets().to_vec(),
            etype: 0x86dd,
            proto: 6,
            src_port: 443,
            dst_port: 51_000,
            in_if: 7,
            out_if: 8,
            src_mac: 0x0011_2233_4455,
            dst_mac: 0xffff_aabb_ccdd_eeff,
            src_vlan: 10,
            dst_vlan: 20,
            vlan_id: 30,
            ip_tos: 0xb8,
            forwarding_status: 64,
            ip_ttl: 63,
            ip_flags: 2,
            tcp_flags: 0x1b,
            icmp_type: 3,
            icmp_code: 1,
            ipv6_flow_label: 0xfffff,
            fragment_id: 9,
            fragment_offset: 10,
            src_as: 64_512,
            dst_as: 65_001,
            next_hop: vec![1, 2, 3],
            next_hop_as: 65_002,
            src_net: 24,
            dst_net: 48,
            bgp_next_hop: "::ffff:192.0.2.7".parse::<Ipv6Addr>().unwrap().octets().to_vec(),
            bgp_communities: vec![65_000 << 16 | 1, 0],
            as_path: vec![64_512, 65_001],
            mpls_ttl: vec![255],
            mpls_label: vec![16, 1_048_575],
            mpls_ip: vec![vec![192, 0, 2, 9], vec![]],
            observation_domain_id: 1,
            observation_point_id: 2,
            layer_stack: vec![0, 1, 3, 99, 42],
            layer_size: vec![14, 20, 20],
            ipv6_routing_header_addresses: vec![
                "fe80::1".parse::<Ipv6Addr>().unwrap().octets().to_vec(),
            ],
            ipv6_routing_header_seg_left: 1,
            protocol_name: "TCP".into(),
            partition: "acme".into(),
            exporter_name: "edge \"1\"\\\n".into(),
            exporter_site: "Zürich 东京 🦀".into(),
            exporter_role: "\u{1}\u{7f}".into(),
            exporter_tags: [("zone", "b"), ("account", "A-1001"), ("", "")]
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            decode_flags: 0b0110 | 0x100 | 0x8000_0000,
            post_nat_src_addr: vec![203, 0, 113, 9],
            post_nat_dst_addr: vec![],
            post_nat_src_port: 40_000,
            post_nat_dst_port: 0,
            firewall_event: 2,
            flow_id: 77,
        }
    }

    /// A small deterministic xorshift, so the flows below are the same on every run.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }

        /// A value of any magnitude: 0, small, or anything up to the type's maximum.
        fn num(&mut self) -> u64 {
            match self.below(4) {
                0 => 0,
                1 => self.below(300),
                2 => u64::MAX - self.below(3),
                _ => self.next() >> self.below(64),
            }
        }

        fn u32(&mut self) -> u32 {
            u32::try_from(self.num() & u64::from(u32::MAX)).unwrap()
        }

        fn address(&mut self) -> Vec<u8> {
            let len = [0, 4, 4, 16, 16, 1, 3, 6, 20][usize::try_from(self.below(9)).unwrap()];
            (0..len).map(|_| u8::try_from(self.below(256)).unwrap()).collect()
        }

        fn u32s(&mut self) -> Vec<u32> {
            (0..self.below(4)).map(|_| self.u32()).collect()
        }

        fn text(&mut self) -> String {
            const PIECES: [&str; 12] = [
                "",
                "acme",
                "é",
                "东京",
                "\"",
                "\\",
                "\n\t\r",
                "\u{0}\u{1f}",
                "\u{7f}",
                "\u{8}\u{c}",
                "🦀",
                "a b/c",
            ];
            (0..self.below(4)).map(|_| PIECES[usize::try_from(self.below(12)).unwrap()]).collect()
        }
    }

    /// A flow with every field set at random, each kind of value represented.
    fn random_flow(rng: &mut Rng) -> FlowMessage {
        FlowMessage {
            r#type: i32::try_from(rng.below(7)).unwrap() - 1,
            time_received_ns: rng.num(),
            sequence_num: rng.u32(),
            sampling_rate: rng.num(),
            sampler_address: rng.address(),
            time_flow_start_ns: rng.num(),
            time_flow_end_ns: rng.num(),
            bytes: rng.num(),
            packets: rng.num(),
            bytes_in: rng.num(),
            bytes_out: rng.num(),
            packets_in: rng.num(),
            packets_out: rng.num(),
            src_addr: rng.address(),
            dst_addr: rng.address(),
            etype: rng.u32(),
            proto: rng.u32(),
            src_port: rng.u32(),
            dst_port: rng.u32(),
            in_if: rng.u32(),
            out_if: rng.u32(),
            src_mac: rng.num(),
            dst_mac: rng.num(),
            src_vlan: rng.u32(),
            dst_vlan: rng.u32(),
            vlan_id: rng.u32(),
            ip_tos: rng.u32(),
            forwarding_status: rng.u32(),
            ip_ttl: rng.u32(),
            ip_flags: rng.u32(),
            tcp_flags: rng.u32(),
            icmp_type: rng.u32(),
            icmp_code: rng.u32(),
            ipv6_flow_label: rng.u32(),
            fragment_id: rng.u32(),
            fragment_offset: rng.u32(),
            src_as: rng.u32(),
            dst_as: rng.u32(),
            next_hop: rng.address(),
            next_hop_as: rng.u32(),
            src_net: rng.u32(),
            dst_net: rng.u32(),
            bgp_next_hop: rng.address(),
            bgp_communities: rng.u32s(),
            as_path: rng.u32s(),
            mpls_ttl: rng.u32s(),
            mpls_label: rng.u32s(),
            mpls_ip: (0..rng.below(3)).map(|_| rng.address()).collect(),
            observation_domain_id: rng.u32(),
            observation_point_id: rng.u32(),
            layer_stack: (0..rng.below(5))
                .map(|_| [0, 1, 3, 7, 13, 14, 50, 99, -1][usize::try_from(rng.below(9)).unwrap()])
                .collect(),
            layer_size: rng.u32s(),
            ipv6_routing_header_addresses: (0..rng.below(3)).map(|_| rng.address()).collect(),
            ipv6_routing_header_seg_left: rng.u32(),
            protocol_name: rng.text(),
            partition: rng.text(),
            exporter_name: rng.text(),
            exporter_site: rng.text(),
            exporter_role: rng.text(),
            exporter_tags: (0..rng.below(4)).map(|_| (rng.text(), rng.text())).collect(),
            decode_flags: rng.u32(),
            post_nat_src_addr: rng.address(),
            post_nat_dst_addr: rng.address(),
            post_nat_src_port: rng.u32(),
            post_nat_dst_port: rng.u32(),
            firewall_event: rng.u32(),
            flow_id: rng.num(),
        }
    }

    #[test]
    fn random_flows_render_as_serde_json_would_write_them() {
        // Parsing a line and writing the value back out with serde_json (keys sorted,
        // compact, its escaping) gives the line again: valid JSON in serde_json's form.
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut line = String::new();
        for _ in 0..20_000 {
            let flow = random_flow(&mut rng);
            line.clear();
            write_json(&flow, &mut line);
            let value: Value = serde_json::from_str(&line).unwrap();
            assert_eq!(value.to_string(), line, "{flow:?}");
            assert_eq!(value.as_object().unwrap().len(), 67);
        }
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        for byte in 0u8..=0x7f {
            let text = format!("a{}b", char::from(byte));
            let flow = FlowMessage { exporter_name: text.clone(), ..Default::default() };
            let wanted = format!("\"exporter_name\":{}", serde_json::to_string(&text).unwrap());
            assert!(to_json_line(&flow).contains(&wanted), "byte {byte:#x}");
        }
    }
}
