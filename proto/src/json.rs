//! JSON rendering of a `FlowMessage`: one object per flow, keyed by the contract's
//! field names, with addresses and MACs as text and enums by name. Every field is
//! present, zero or not, so a line always has the same shape.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use serde_json::{Map, Value, json};

mod line;

pub use line::write_json;

use crate::generated::flow_message::DecodeFlag;
use crate::{FlowMessage, FlowType, LayerStack};

/// Renders `flow` as a JSON object.
pub fn to_json(flow: &FlowMessage) -> Value {
    let mut m = Map::with_capacity(64);
    let flow_type = FlowType::try_from(flow.r#type).map_or("FLOWUNKNOWN", |t| t.as_str_name());
    m.insert("type".into(), json!(flow_type));
    m.insert("time_received_ns".into(), json!(flow.time_received_ns));
    m.insert("sequence_num".into(), json!(flow.sequence_num));
    m.insert("sampling_rate".into(), json!(flow.sampling_rate));
    m.insert("sampler_address".into(), address(&flow.sampler_address));
    m.insert("time_flow_start_ns".into(), json!(flow.time_flow_start_ns));
    m.insert("time_flow_end_ns".into(), json!(flow.time_flow_end_ns));
    m.insert("bytes".into(), json!(flow.bytes));
    m.insert("packets".into(), json!(flow.packets));
    m.insert("bytes_in".into(), json!(flow.bytes_in));
    m.insert("bytes_out".into(), json!(flow.bytes_out));
    m.insert("packets_in".into(), json!(flow.packets_in));
    m.insert("packets_out".into(), json!(flow.packets_out));
    m.insert("src_addr".into(), address(&flow.src_addr));
    m.insert("dst_addr".into(), address(&flow.dst_addr));
    m.insert("etype".into(), json!(flow.etype));
    m.insert("proto".into(), json!(flow.proto));
    m.insert("protocol_name".into(), json!(flow.protocol_name));
    m.insert("src_port".into(), json!(flow.src_port));
    m.insert("dst_port".into(), json!(flow.dst_port));
    m.insert("in_if".into(), json!(flow.in_if));
    m.insert("out_if".into(), json!(flow.out_if));
    m.insert("src_mac".into(), json!(mac(flow.src_mac)));
    m.insert("dst_mac".into(), json!(mac(flow.dst_mac)));
    m.insert("src_vlan".into(), json!(flow.src_vlan));
    m.insert("dst_vlan".into(), json!(flow.dst_vlan));
    m.insert("vlan_id".into(), json!(flow.vlan_id));
    m.insert("ip_tos".into(), json!(flow.ip_tos));
    m.insert("forwarding_status".into(), json!(flow.forwarding_status));
    m.insert("ip_ttl".into(), json!(flow.ip_ttl));
    m.insert("ip_flags".into(), json!(flow.ip_flags));
    m.insert("tcp_flags".into(), json!(flow.tcp_flags));
    m.insert("icmp_type".into(), json!(flow.icmp_type));
    m.insert("icmp_code".into(), json!(flow.icmp_code));
    m.insert("ipv6_flow_label".into(), json!(flow.ipv6_flow_label));
    m.insert("fragment_id".into(), json!(flow.fragment_id));
    m.insert("fragment_offset".into(), json!(flow.fragment_offset));
    m.insert("src_as".into(), json!(flow.src_as));
    m.insert("dst_as".into(), json!(flow.dst_as));
    m.insert("next_hop".into(), address(&flow.next_hop));
    m.insert("next_hop_as".into(), json!(flow.next_hop_as));
    m.insert("src_net".into(), json!(flow.src_net));
    m.insert("dst_net".into(), json!(flow.dst_net));
    m.insert("bgp_next_hop".into(), address(&flow.bgp_next_hop));
    m.insert("bgp_communities".into(), json!(flow.bgp_communities));
    m.insert("as_path".into(), json!(flow.as_path));
    m.insert("mpls_ttl".into(), json!(flow.mpls_ttl));
    m.insert("mpls_label".into(), json!(flow.mpls_label));
    m.insert("mpls_ip".into(), Value::Array(flow.mpls_ip.iter().map(|a| address(a)).collect()));
    m.insert("observation_domain_id".into(), json!(flow.observation_domain_id));
    m.insert("observation_point_id".into(), json!(flow.observation_point_id));
    let layers: Vec<&str> = flow
        .layer_stack
        .iter()
        .map(|l| LayerStack::try_from(*l).map_or("Custom", |l| l.as_str_name()))
        .collect();
    m.insert("layer_stack".into(), json!(layers));
    m.insert("layer_size".into(), json!(flow.layer_size));
    m.insert(
        "ipv6_routing_header_addresses".into(),
        Value::Array(flow.ipv6_routing_header_addresses.iter().map(|a| address(a)).collect()),
    );
    m.insert("ipv6_routing_header_seg_left".into(), json!(flow.ipv6_routing_header_seg_left));
    m.insert("decode_flags".into(), json!(decode_flag_names(flow.decode_flags)));
    m.insert("post_nat_src_addr".into(), address(&flow.post_nat_src_addr));
    m.insert("post_nat_dst_addr".into(), address(&flow.post_nat_dst_addr));
    m.insert("post_nat_src_port".into(), json!(flow.post_nat_src_port));
    m.insert("post_nat_dst_port".into(), json!(flow.post_nat_dst_port));
    m.insert("firewall_event".into(), json!(flow.firewall_event));
    m.insert("flow_id".into(), json!(flow.flow_id));
    m.insert("partition".into(), json!(flow.partition));
    m.insert("exporter_name".into(), json!(flow.exporter_name));
    m.insert("exporter_site".into(), json!(flow.exporter_site));
    m.insert("exporter_role".into(), json!(flow.exporter_role));
    let tags: std::collections::BTreeMap<&String, &String> = flow.exporter_tags.iter().collect();
    m.insert("exporter_tags".into(), json!(tags));
    Value::Object(m)
}

/// Renders `flow` as one line of JSON, without the trailing newline.
pub fn to_json_line(flow: &FlowMessage) -> String {
    to_json(flow).to_string()
}

/// An address field as text: dotted IPv4 for 4 bytes, RFC 5952 IPv6 for 16, "" when
/// empty, and hex for any other length (never silently dropped).
fn address(bytes: &[u8]) -> Value {
    match bytes.len() {
        0 => json!(""),
        4 => {
            let octets: [u8; 4] = [bytes[0], bytes[1], bytes[2], bytes[3]];
            json!(IpAddr::V4(Ipv4Addr::from(octets)).to_string())
        }
        16 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(bytes);
            json!(IpAddr::V6(Ipv6Addr::from(octets)).to_string())
        }
        _ => json!(bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()),
    }
}

/// The set bits of `decode_flags` by their `DecodeFlag` name, lowest bit first; a bit
/// the schema does not name renders as its hex value.
fn decode_flag_names(flags: u32) -> Vec<String> {
    (0..32)
        .map(|bit| 1u32 << bit)
        .filter(|mask| flags & mask != 0)
        .map(|mask| {
            i32::try_from(mask)
                .ok()
                .and_then(|value| DecodeFlag::try_from(value).ok())
                .map_or_else(|| format!("{mask:#x}"), |flag| flag.as_str_name().to_owned())
        })
        .collect()
}

/// A MAC held in the low 48 bits, first octet most significant, as `aa:bb:cc:dd:ee:ff`.
fn mac(value: u64) -> String {
    let b = value.to_be_bytes();
    format!("{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}", b[2], b[3], b[4], b[5], b[6], b[7])
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn the_line_writer_writes_exactly_what_the_value_rendering_does() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut line = String::new();
        let mut flows = vec![FlowMessage::default()];
        flows.extend((0..20_000).map(|_| random_flow(&mut rng)));
        for flow in &flows {
            line.clear();
            write_json(flow, &mut line);
            assert_eq!(line, to_json(flow).to_string(), "{flow:?}");
        }
    }

    #[test]
    fn the_line_writer_escapes_every_ascii_character_as_serde_json_does() {
        for byte in 0u8..=0x7f {
            let text = char::from(byte).to_string();
            let flow = FlowMessage { exporter_name: text.clone(), ..Default::default() };
            let v = to_json(&flow);
            let mut line = String::new();
            write_json(&flow, &mut line);
            assert_eq!(line, v.to_string(), "byte {byte:#x}");
        }
    }

    #[test]
    fn odd_length_address_renders_as_hex() {
        assert_eq!(address(&[1, 2, 3]), json!("010203"));
    }
}
