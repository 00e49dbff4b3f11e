//! The `FlowMessage` protobuf encoding for the publish path, written field by field.
//!
//! It writes the bytes prost's generated `encode_raw` writes: fields in tag order,
//! proto3 defaults (0, empty) left out, repeated integers packed, map entries without
//! their default key or value. It is several times faster, which matters because
//! every published flow is encoded: prost encodes each key as a varint at run time
//! and goes through `BufMut` once per byte, while here keys are constants the
//! compiler folds and bytes go into a small stack buffer. prost's encoding stays the
//! reference: the tests hold this one to it on random messages.
//!
//! A field added to `flow.proto` must be added to [`encode_flow`] too. The tests make
//! sure: their random message names every field (a new one does not compile there
//! until it is given a value), and then its bytes differ from prost's.

use bytes::BytesMut;

use crate::FlowMessage;

/// Wire type of varint fields.
const VARINT: u32 = 0;
/// Wire type of length-delimited fields (bytes, strings, packed, messages).
const LEN: u32 = 2;
/// Bytes of the longest varint (a u64).
const MAX_VARINT: usize = 10;
/// Bytes gathered on the stack before they go to the output.
const CHUNK: usize = 256;
/// Values this long at most (an IPv6 address) are copied byte by byte.
const SHORT: usize = 16;

/// Appends `flow`'s protobuf encoding to `out` (what prost's `encode_raw` appends).
pub fn encode_flow(flow: &FlowMessage, out: &mut BytesMut) {
    let mut w = Writer::new(out);
    w.int32(1, flow.r#type);
    w.uint(3, flow.sampling_rate);
    w.uint(4, flow.sequence_num.into());
    w.bytes(6, &flow.src_addr);
    w.bytes(7, &flow.dst_addr);
    w.uint(9, flow.bytes);
    w.uint(10, flow.packets);
    w.bytes(11, &flow.sampler_address);
    w.bytes(12, &flow.next_hop);
    w.uint(13, flow.next_hop_as.into());
    w.uint(14, flow.src_as.into());
    w.uint(15, flow.dst_as.into());
    w.uint(16, flow.src_net.into());
    w.uint(17, flow.dst_net.into());
    w.uint(18, flow.in_if.into());
    w.uint(19, flow.out_if.into());
    w.uint(20, flow.proto.into());
    w.uint(21, flow.src_port.into());
    w.uint(22, flow.dst_port.into());
    w.uint(23, flow.ip_tos.into());
    w.uint(24, flow.forwarding_status.into());
    w.uint(25, flow.ip_ttl.into());
    w.uint(26, flow.tcp_flags.into());
    w.uint(27, flow.src_mac);
    w.uint(28, flow.dst_mac);
    w.uint(29, flow.vlan_id.into());
    w.uint(30, flow.etype.into());
    w.uint(31, flow.icmp_type.into());
    w.uint(32, flow.icmp_code.into());
    w.uint(33, flow.src_vlan.into());
    w.uint(34, flow.dst_vlan.into());
    w.uint(35, flow.fragment_id.into());
    w.uint(36, flow.fragment_offset.into());
    w.uint(37, flow.ipv6_flow_label.into());
    w.uint(38, flow.ip_flags.into());
    w.uint(70, flow.observation_domain_id.into());
    w.uint(71, flow.observation_point_id.into());
    w.packed(80, flow.mpls_ttl.iter().map(|v| u64::from(*v)));
    w.packed(81, flow.mpls_label.iter().map(|v| u64::from(*v)));
    w.repeated_bytes(82, &flow.mpls_ip);
    w.bytes(100, &flow.bgp_next_hop);
    w.packed(101, flow.bgp_communities.iter().map(|v| u64::from(*v)));
    w.packed(102, flow.as_path.iter().map(|v| u64::from(*v)));
    w.packed(103, flow.layer_stack.iter().map(|v| int32_bits(*v)));
    w.packed(104, flow.layer_size.iter().map(|v| u64::from(*v)));
    w.repeated_bytes(105, &flow.ipv6_routing_header_addresses);
    w.uint(106, flow.ipv6_routing_header_seg_left.into());
    w.bytes(107, flow.protocol_name.as_bytes());
    w.uint(110, flow.time_received_ns);
    w.uint(111, flow.time_flow_start_ns);
    w.uint(112, flow.time_flow_end_ns);
    w.uint(113, flow.bytes_in);
    w.uint(114, flow.bytes_out);
    w.uint(115, flow.packets_in);
    w.uint(116, flow.packets_out);
    w.bytes(200, flow.partition.as_bytes());
    w.bytes(201, flow.exporter_name.as_bytes());
    w.bytes(202, flow.exporter_site.as_bytes());
    w.bytes(203, flow.exporter_role.as_bytes());
    for (key, value) in &flow.exporter_tags {
        w.map_entry(204, key.as_bytes(), value.as_bytes());
    }
    w.uint(220, flow.decode_flags.into());
    w.bytes(221, &flow.post_nat_src_addr);
    w.bytes(222, &flow.post_nat_dst_addr);
    w.uint(223, flow.post_nat_src_port.into());
    w.uint(224, flow.post_nat_dst_port.into());
    w.uint(225, flow.firewall_event.into());
    w.uint(226, flow.flow_id);
    w.flush();
}

/// An `int32` (or enum) value as protobuf puts it in a varint: sign-extended to 64
/// bits, so a negative value takes 10 bytes.
fn int32_bits(value: i32) -> u64 {
    i64::from(value) as u64
}

/// Bytes of `value` as a varint.
fn varint_len(value: u64) -> usize {
    // 1 byte per started 7 bits; 0 takes one byte.
    (64 - (value | 1).leading_zeros() as usize).div_ceil(7)
}

/// Gathers a message's bytes in a stack buffer and appends them to the output a chunk
/// at a time.
struct Writer<'a> {
    out: &'a mut BytesMut,
    chunk: [u8; CHUNK],
    len: usize,
}

impl<'a> Writer<'a> {
    fn new(out: &'a mut BytesMut) -> Self {
        Self { out, chunk: [0; CHUNK], len: 0 }
    }

    /// Appends what is gathered to the output.
    fn flush(&mut self) {
        self.out.extend_from_slice(&self.chunk[..self.len]);
        self.len = 0;
    }

    /// Makes room for `n` more bytes in the chunk.
    #[inline(always)]
    fn room(&mut self, n: usize) {
        if self.len + n > CHUNK {
            self.flush();
        }
    }

    /// Puts a varint into the chunk, which has room for it ([`Writer::room`]).
    /// Inlined everywhere, so a constant (a key) becomes one or two byte stores. The
    /// length is kept in a local: a byte stored into `chunk` would otherwise make the
    /// compiler read `self.len` back from memory after every byte.
    #[inline(always)]
    fn put_varint(&mut self, mut value: u64) {
        let mut len = self.len;
        while value >= 0x80 {
            self.chunk[len] = value as u8 | 0x80;
            len += 1;
            value >>= 7;
        }
        self.chunk[len] = value as u8;
        self.len = len + 1;
    }

    fn varint(&mut self, value: u64) {
        self.room(MAX_VARINT);
        self.put_varint(value);
    }

    fn raw(&mut self, bytes: &[u8]) {
        if bytes.len() > CHUNK - self.len {
            self.flush();
            if bytes.len() > CHUNK {
                self.out.extend_from_slice(bytes);
                return;
            }
        }
        let start = self.len;
        if bytes.len() <= SHORT {
            // Byte by byte: cheaper than a call to memcpy for an address's few bytes.
            for (to, from) in self.chunk[start..start + bytes.len()].iter_mut().zip(bytes) {
                *to = *from;
            }
        } else {
            self.chunk[start..start + bytes.len()].copy_from_slice(bytes);
        }
        self.len = start + bytes.len();
    }

    /// A field's key (its tag and wire type) and a varint after it.
    #[inline(always)]
    fn key_and_varint(&mut self, tag: u32, wire_type: u32, value: u64) {
        self.room(2 * MAX_VARINT);
        self.put_varint(u64::from(tag << 3 | wire_type));
        self.put_varint(value);
    }

    /// A `uint32`/`uint64` field, left out when 0.
    #[inline(always)]
    fn uint(&mut self, tag: u32, value: u64) {
        if value != 0 {
            self.key_and_varint(tag, VARINT, value);
        }
    }

    /// An `int32` or enum field, left out when 0.
    #[inline(always)]
    fn int32(&mut self, tag: u32, value: i32) {
        self.uint(tag, int32_bits(value));
    }

    /// A `bytes` or `string` field, left out when empty.
    #[inline(always)]
    fn bytes(&mut self, tag: u32, value: &[u8]) {
        if !value.is_empty() {
            self.delimited(tag, value);
        }
    }

    /// A length-delimited field: key, length, bytes.
    #[inline(always)]
    fn delimited(&mut self, tag: u32, value: &[u8]) {
        self.key_and_varint(tag, LEN, value.len() as u64);
        self.raw(value);
    }

    /// A `repeated bytes` field: every element, empty ones too.
    fn repeated_bytes(&mut self, tag: u32, values: &[Vec<u8>]) {
        for value in values {
            self.delimited(tag, value);
        }
    }

    /// A packed repeated integer field, left out when empty.
    fn packed(&mut self, tag: u32, values: impl Iterator<Item = u64> + Clone) {
        let len: usize = values.clone().map(varint_len).sum();
        if len == 0 {
            return;
        }
        self.key_and_varint(tag, LEN, len as u64);
        values.for_each(|value| self.varint(value));
    }

    /// One entry of a `map<string, string>` field: a message of the key (1) and the
    /// value (2), each left out when empty.
    fn map_entry(&mut self, tag: u32, key: &[u8], value: &[u8]) {
        let part = |bytes: &[u8]| match bytes.len() {
            0 => 0,
            n => 1 + varint_len(n as u64) + n,
        };
        self.key_and_varint(tag, LEN, (part(key) + part(value)) as u64);
        self.bytes(1, key);
        self.bytes(2, value);
    }
}

#[cfg(test)]
mod tests {
    use prost::Message as _;

    use super::*;

    /// Random field values from a seeded generator, so failures reproduce.
    struct Rng(flow_replay::generate::flow::Rng);

    impl Rng {
        fn new(seed: u64) -> Self {
            Self(flow_replay::generate::flow::Rng::new(seed))
        }

        fn next(&mut self) -> u64 {
            self.0.next_u64()
        }

        /// 0, a small value, a value of any width or the largest, about equally often.
        fn u64(&mut self) -> u64 {
            match self.0.below(4) {
                0 => 0,
                1 => self.next() % 200,
                2 => self.next() >> self.0.below(64),
                _ => u64::MAX,
            }
        }

        fn u32(&mut self) -> u32 {
            self.u64() as u32
        }

        /// Up to `max` bytes; none about a third of the time.
        fn bytes(&mut self, max: u32) -> Vec<u8> {
            let len = if self.0.below(3) == 0 { 0 } else { self.0.between(1, max) };
            (0..len).map(|_| self.next() as u8).collect()
        }

        fn text(&mut self, max: u32) -> String {
            self.bytes(max).iter().map(|b| char::from(b'a' + b % 26)).collect()
        }

        /// Up to 5 items; none half of the time.
        fn list<T>(&mut self, mut item: impl FnMut(&mut Self) -> T) -> Vec<T> {
            let len = if self.0.below(2) == 0 { 0 } else { self.0.between(1, 5) };
            (0..len).map(|_| item(self)).collect()
        }
    }

    /// A message with every field random (empty or default about a third of the time),
    /// with `tags` exporter tags.
    fn random_flow(rng: &mut Rng, tags: usize) -> FlowMessage {
        FlowMessage {
            r#type: rng.u32() as i32,
            time_received_ns: rng.u64(),
            sequence_num: rng.u32(),
            sampling_rate: rng.u64(),
            sampler_address: rng.bytes(16),
            time_flow_start_ns: rng.u64(),
            time_flow_end_ns: rng.u64(),
            bytes: rng.u64(),
            packets: rng.u64(),
            bytes_in: rng.u64(),
            bytes_out: rng.u64(),
            packets_in: rng.u64(),
            packets_out: rng.u64(),
            src_addr: rng.bytes(16),
            dst_addr: rng.bytes(16),
            etype: rng.u32(),
            proto: rng.u32(),
            src_port: rng.u32(),
            dst_port: rng.u32(),
            in_if: rng.u32(),
            out_if: rng.u32(),
            src_mac: rng.u64(),
            dst_mac: rng.u64(),
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
            next_hop: rng.bytes(16),
            next_hop_as: rng.u32(),
            src_net: rng.u32(),
            dst_net: rng.u32(),
            bgp_next_hop: rng.bytes(16),
            bgp_communities: rng.list(Rng::u32),
            as_path: rng.list(Rng::u32),
            mpls_ttl: rng.list(Rng::u32),
            mpls_label: rng.list(Rng::u32),
            mpls_ip: rng.list(|rng| rng.bytes(16)),
            observation_domain_id: rng.u32(),
            observation_point_id: rng.u32(),
            layer_stack: rng.list(|rng| rng.u32() as i32),
            layer_size: rng.list(Rng::u32),
            ipv6_routing_header_addresses: rng.list(|rng| rng.bytes(16)),
            ipv6_routing_header_seg_left: rng.u32(),
            protocol_name: rng.text(8),
            partition: rng.text(12),
            exporter_name: rng.text(300),
            exporter_site: rng.text(12),
            exporter_role: rng.text(12),
            // One entry at most: a map's entry order is the map's, not the message's.
            exporter_tags: (0..tags).map(|_| (rng.text(6), rng.text(6))).collect(),
            decode_flags: rng.u32(),
            post_nat_src_addr: rng.bytes(16),
            post_nat_dst_addr: rng.bytes(16),
            post_nat_src_port: rng.u32(),
            post_nat_dst_port: rng.u32(),
            firewall_event: rng.u32(),
            flow_id: rng.u64(),
        }
    }

    fn encoded(flow: &FlowMessage) -> Vec<u8> {
        let mut out = BytesMut::new();
        encode_flow(flow, &mut out);
        out.to_vec()
    }

    #[test]
    fn random_messages_encode_to_prosts_bytes() {
        let mut rng = Rng::new(5);
        for round in 0..20_000 {
            let flow = random_flow(&mut rng, round % 2);
            assert_eq!(encoded(&flow), flow.encode_to_vec(), "round {round}: {flow:?}");
        }
    }

    #[test]
    fn the_default_message_encodes_to_nothing_and_output_is_appended() {
        assert!(encoded(&FlowMessage::default()).is_empty());
        let mut out = BytesMut::from(&b"head"[..]);
        let flow = FlowMessage { src_port: 300, ..Default::default() };
        encode_flow(&flow, &mut out);
        assert_eq!(&out[..], [&b"head"[..], &flow.encode_to_vec()].concat().as_slice());
    }

    #[test]
    fn varint_lengths_match_protobufs() {
        for (value, len) in [(0, 1), (127, 1), (128, 2), (16_383, 2), (16_384, 3), (u64::MAX, 10)] {
            assert_eq!(varint_len(value), len, "{value}");
            assert_eq!(varint_len(value), prost::encoding::encoded_len_varint(value));
        }
    }
}
