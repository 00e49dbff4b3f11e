//! A `FlowMessage` written again for the next flow: its field values cleared, the heap
//! buffers of its address and name fields kept, so decoding flow after flow into the
//! same messages allocates nothing once the buffers have grown.

use crate::FlowMessage;

impl FlowMessage {
    /// Resets every field to its default (as [`FlowMessage::default`] would) while the
    /// byte and string fields keep their capacity, emptied. Map and repeated fields are
    /// dropped: flows rarely carry them.
    pub fn reset_keeping_buffers(&mut self) {
        let mut kept = std::mem::take(self);
        for buffer in byte_fields(&mut kept) {
            buffer.clear();
        }
        for text in string_fields(&mut kept) {
            text.clear();
        }
        for (field, buffer) in byte_fields(self).into_iter().zip(byte_fields(&mut kept)) {
            std::mem::swap(field, buffer);
        }
        for (field, text) in string_fields(self).into_iter().zip(string_fields(&mut kept)) {
            std::mem::swap(field, text);
        }
    }
}

fn byte_fields(flow: &mut FlowMessage) -> [&mut Vec<u8>; 7] {
    [
        &mut flow.sampler_address,
        &mut flow.src_addr,
        &mut flow.dst_addr,
        &mut flow.next_hop,
        &mut flow.bgp_next_hop,
        &mut flow.post_nat_src_addr,
        &mut flow.post_nat_dst_addr,
    ]
}

fn string_fields(flow: &mut FlowMessage) -> [&mut String; 5] {
    [
        &mut flow.protocol_name,
        &mut flow.partition,
        &mut flow.exporter_name,
        &mut flow.exporter_site,
        &mut flow.exporter_role,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reset_flow_equals_a_default_one_and_keeps_its_buffers() {
        let mut flow = FlowMessage {
            src_addr: vec![10, 0, 0, 1],
            sampler_address: vec![192, 0, 2, 1],
            protocol_name: "TCP".into(),
            partition: "acme".into(),
            as_path: vec![64512],
            bytes: 1500,
            src_port: 443,
            ..Default::default()
        };
        flow.exporter_tags.insert("zone".into(), "b".into());
        flow.reset_keeping_buffers();
        assert_eq!(flow, FlowMessage::default());
        assert!(flow.src_addr.capacity() >= 4 && flow.sampler_address.capacity() >= 4);
        assert!(flow.protocol_name.capacity() >= 3 && flow.partition.capacity() >= 4);
    }
}
