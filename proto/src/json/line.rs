//! The JSON line writer: a `FlowMessage` written straight into a reused `String`, with
//! no intermediate `serde_json::Value`. Keys come in byte order (what a
//! `serde_json::Map` gives), every field present, compact separators, strings escaped
//! exactly as serde_json escapes them.

use std::fmt::Write as _;
use std::net::Ipv6Addr;

use crate::generated::flow_message::DecodeFlag;
use crate::{FlowMessage, FlowType, LayerStack};

/// `,"name":`: the separator and key written before a field's value, as one literal, so
/// writing it is one copy of a length the compiler knows.
macro_rules! key {
    ($name:literal) => {
        concat!(",\"", $name, "\":")
    };
}

/// Appends `flow` to `out` as one JSON object, without a trailing newline.
pub fn write_json(flow: &FlowMessage, out: &mut String) {
    let mut o = Object::open(out);
    o.u32s(key!("as_path"), &flow.as_path);
    o.u32s(key!("bgp_communities"), &flow.bgp_communities);
    o.address(key!("bgp_next_hop"), &flow.bgp_next_hop);
    o.u64(key!("bytes"), flow.bytes);
    o.u64(key!("bytes_in"), flow.bytes_in);
    o.u64(key!("bytes_out"), flow.bytes_out);
    o.decode_flags(key!("decode_flags"), flow.decode_flags);
    o.address(key!("dst_addr"), &flow.dst_addr);
    o.u64(key!("dst_as"), flow.dst_as.into());
    o.mac(key!("dst_mac"), flow.dst_mac);
    o.u64(key!("dst_net"), flow.dst_net.into());
    o.u64(key!("dst_port"), flow.dst_port.into());
    o.u64(key!("dst_vlan"), flow.dst_vlan.into());
    o.u64(key!("etype"), flow.etype.into());
    o.str(key!("exporter_name"), &flow.exporter_name);
    o.str(key!("exporter_role"), &flow.exporter_role);
    o.str(key!("exporter_site"), &flow.exporter_site);
    o.tags(key!("exporter_tags"), &flow.exporter_tags);
    o.u64(key!("firewall_event"), flow.firewall_event.into());
    o.u64(key!("flow_id"), flow.flow_id);
    o.u64(key!("forwarding_status"), flow.forwarding_status.into());
    o.u64(key!("fragment_id"), flow.fragment_id.into());
    o.u64(key!("fragment_offset"), flow.fragment_offset.into());
    o.u64(key!("icmp_code"), flow.icmp_code.into());
    o.u64(key!("icmp_type"), flow.icmp_type.into());
    o.u64(key!("in_if"), flow.in_if.into());
    o.u64(key!("ip_flags"), flow.ip_flags.into());
    o.u64(key!("ip_tos"), flow.ip_tos.into());
    o.u64(key!("ip_ttl"), flow.ip_ttl.into());
    o.u64(key!("ipv6_flow_label"), flow.ipv6_flow_label.into());
    o.addresses(key!("ipv6_routing_header_addresses"), &flow.ipv6_routing_header_addresses);
    o.u64(key!("ipv6_routing_header_seg_left"), flow.ipv6_routing_header_seg_left.into());
    o.u32s(key!("layer_size"), &flow.layer_size);
    o.layers(key!("layer_stack"), &flow.layer_stack);
    o.addresses(key!("mpls_ip"), &flow.mpls_ip);
    o.u32s(key!("mpls_label"), &flow.mpls_label);
    o.u32s(key!("mpls_ttl"), &flow.mpls_ttl);
    o.address(key!("next_hop"), &flow.next_hop);
    o.u64(key!("next_hop_as"), flow.next_hop_as.into());
    o.u64(key!("observation_domain_id"), flow.observation_domain_id.into());
    o.u64(key!("observation_point_id"), flow.observation_point_id.into());
    o.u64(key!("out_if"), flow.out_if.into());
    o.u64(key!("packets"), flow.packets);
    o.u64(key!("packets_in"), flow.packets_in);
    o.u64(key!("packets_out"), flow.packets_out);
    o.str(key!("partition"), &flow.partition);
    o.address(key!("post_nat_dst_addr"), &flow.post_nat_dst_addr);
    o.u64(key!("post_nat_dst_port"), flow.post_nat_dst_port.into());
    o.address(key!("post_nat_src_addr"), &flow.post_nat_src_addr);
    o.u64(key!("post_nat_src_port"), flow.post_nat_src_port.into());
    o.u64(key!("proto"), flow.proto.into());
    o.str(key!("protocol_name"), &flow.protocol_name);
    o.address(key!("sampler_address"), &flow.sampler_address);
    o.u64(key!("sampling_rate"), flow.sampling_rate);
    o.u64(key!("sequence_num"), flow.sequence_num.into());
    o.address(key!("src_addr"), &flow.src_addr);
    o.u64(key!("src_as"), flow.src_as.into());
    o.mac(key!("src_mac"), flow.src_mac);
    o.u64(key!("src_net"), flow.src_net.into());
    o.u64(key!("src_port"), flow.src_port.into());
    o.u64(key!("src_vlan"), flow.src_vlan.into());
    o.u64(key!("tcp_flags"), flow.tcp_flags.into());
    o.u64(key!("time_flow_end_ns"), flow.time_flow_end_ns);
    o.u64(key!("time_flow_start_ns"), flow.time_flow_start_ns);
    o.u64(key!("time_received_ns"), flow.time_received_ns);
    let flow_type = FlowType::try_from(flow.r#type).map_or("FLOWUNKNOWN", |t| t.as_str_name());
    o.str(key!("type"), flow_type);
    o.u64(key!("vlan_id"), flow.vlan_id.into());
    o.close();
}

/// An object being written: keys are added in the order given.
struct Object<'a> {
    out: &'a mut String,
    first: bool,
}

impl<'a> Object<'a> {
    fn open(out: &'a mut String) -> Self {
        out.push('{');
        Self { out, first: true }
    }

    fn close(self) {
        self.out.push('}');
    }

    /// Writes a [`key!`] (keys are plain identifiers: nothing to escape), the first one
    /// without its comma.
    #[inline(always)]
    fn key(&mut self, key: &'static str) {
        let key = match self.first {
            true => key.get(1..).unwrap_or(key),
            false => key,
        };
        self.first = false;
        self.out.push_str(key);
    }

    #[inline(always)]
    fn u64(&mut self, key: &'static str, value: u64) {
        self.key(key);
        push_u64(self.out, value);
    }

    #[inline(always)]
    fn str(&mut self, key: &'static str, value: &str) {
        self.key(key);
        push_str(self.out, value);
    }

    #[inline(always)]
    fn address(&mut self, key: &'static str, bytes: &[u8]) {
        self.key(key);
        push_address(self.out, bytes);
    }

    #[inline(always)]
    fn mac(&mut self, key: &'static str, value: u64) {
        self.key(key);
        push_mac(self.out, value);
    }

    #[inline(always)]
    fn u32s(&mut self, key: &'static str, values: &[u32]) {
        self.key(key);
        push_array(self.out, values, |out, v| push_u64(out, (*v).into()));
    }

    #[inline(always)]
    fn addresses(&mut self, key: &'static str, values: &[Vec<u8>]) {
        self.key(key);
        push_array(self.out, values, |out, v| push_address(out, v));
    }

    #[inline(always)]
    fn layers(&mut self, key: &'static str, values: &[i32]) {
        self.key(key);
        push_array(self.out, values, |out, v| {
            push_str(out, LayerStack::try_from(*v).map_or("Custom", |l| l.as_str_name()));
        });
    }

    /// The set bits of `decode_flags` by their `DecodeFlag` name, lowest bit first; a
    /// bit the schema does not name as its hex value.
    #[inline(always)]
    fn decode_flags(&mut self, key: &'static str, flags: u32) {
        self.key(key);
        self.out.push('[');
        let mut first = true;
        for mask in (0..32).map(|bit| 1u32 << bit).filter(|mask| flags & mask != 0) {
            if !first {
                self.out.push(',');
            }
            first = false;
            match i32::try_from(mask).ok().and_then(|value| DecodeFlag::try_from(value).ok()) {
                Some(flag) => push_str(self.out, flag.as_str_name()),
                None => {
                    let _ = write!(self.out, "\"{mask:#x}\"");
                }
            }
        }
        self.out.push(']');
    }

    /// A string map, keys in byte order.
    #[inline(always)]
    fn tags(&mut self, key: &'static str, tags: &std::collections::HashMap<String, String>) {
        self.key(key);
        let mut sorted: Vec<(&String, &String)> = tags.iter().collect();
        sorted.sort_unstable_by(|a, b| a.0.cmp(b.0));
        self.out.push('{');
        for (i, (k, v)) in sorted.into_iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            push_str(self.out, k);
            self.out.push(':');
            push_str(self.out, v);
        }
        self.out.push('}');
    }
}

fn push_u64(out: &mut String, value: u64) {
    // Most fields of most flows are 0.
    if value == 0 {
        out.push('0');
        return;
    }
    out.push_str(itoa::Buffer::new().format(value));
}

fn push_array<T>(out: &mut String, values: &[T], mut item: impl FnMut(&mut String, &T)) {
    // Most arrays of most flows are empty.
    if values.is_empty() {
        out.push_str("[]");
        return;
    }
    out.push('[');
    for (i, value) in values.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        item(out, value);
    }
    out.push(']');
}

/// A JSON string, escaped as serde_json does: `"` and `\` backslashed, the C0 controls
/// as `\b \t \n \f \r` or `\u00xx`, everything else (DEL and non-ASCII included) as is.
fn push_str(out: &mut String, value: &str) {
    if value.is_empty() {
        out.push_str("\"\"");
        return;
    }
    out.push('"');
    let mut start = 0;
    for (i, byte) in value.bytes().enumerate() {
        let escape = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            0x08 => "\\b",
            b'\t' => "\\t",
            b'\n' => "\\n",
            0x0c => "\\f",
            b'\r' => "\\r",
            0x00..=0x1f => "",
            _ => continue,
        };
        // Escaped bytes are ASCII, so `i` and `i + 1` are character boundaries.
        out.push_str(&value[start..i]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{byte:04x}");
        } else {
            out.push_str(escape);
        }
        start = i + 1;
    }
    out.push_str(&value[start..]);
    out.push('"');
}

/// An address field as a JSON string: dotted IPv4 for 4 bytes, RFC 5952 IPv6 for 16,
/// "" when empty, and hex for any other length (never silently dropped).
fn push_address(out: &mut String, bytes: &[u8]) {
    out.push('"');
    match *bytes {
        [] => {}
        [a, b, c, d] => push_ipv4(out, [a, b, c, d]),
        _ => match <[u8; 16]>::try_from(bytes) {
            Ok(octets) => {
                let _ = write!(out, "{}", Ipv6Addr::from(octets));
            }
            Err(_) => bytes.iter().for_each(|b| push_hex_byte(out, *b)),
        },
    }
    out.push('"');
}

/// Dotted-quad IPv4, as `std::net::Ipv4Addr`'s `Display` writes it: each octet in
/// decimal, no leading zeros.
fn push_ipv4(out: &mut String, octets: [u8; 4]) {
    for (i, octet) in octets.into_iter().enumerate() {
        if i > 0 {
            out.push('.');
        }
        if octet >= 100 {
            out.push(char::from(b'0' + octet / 100));
        }
        if octet >= 10 {
            out.push(char::from(b'0' + octet / 10 % 10));
        }
        out.push(char::from(b'0' + octet % 10));
    }
}

/// A MAC held in the low 48 bits, first octet most significant, as `"aa:bb:cc:dd:ee:ff"`.
fn push_mac(out: &mut String, value: u64) {
    // Most flows carry no MAC.
    if value == 0 {
        out.push_str("\"00:00:00:00:00:00\"");
        return;
    }
    out.push('"');
    for (i, byte) in value.to_be_bytes()[2..].iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        push_hex_byte(out, *byte);
    }
    out.push('"');
}

fn push_hex_byte(out: &mut String, byte: u8) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(char::from(HEX[usize::from(byte >> 4)]));
    out.push(char::from(HEX[usize::from(byte & 0x0f)]));
}
