//! Where a session's flows go: a vector of `FlowMessage`s that keeps its messages when
//! cleared, so the next flows are written into them instead of into new ones. A flow
//! owns heap buffers (its addresses, its protocol name): decoding into kept messages
//! allocates none of them again, and a 768-byte message is built in place, not moved.

use std::ops::{Deref, DerefMut};

use flowpb::FlowMessage;
use prost::Message as _;

/// The most spent messages [`FlowBuffer::clear`] keeps (a `FlowMessage` is 768 bytes:
/// ~3 MiB at most, plus the buffers each holds).
pub const KEPT_MESSAGES: usize = 4096;

/// Flows decoded so far (`live`), followed by spent messages kept for reuse.
#[derive(Debug, Default)]
pub struct FlowBuffer {
    messages: Vec<FlowMessage>,
    live: usize,
}

impl FlowBuffer {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// A message for the next flow, every field at its default (a kept message
    /// cleared field by field in place: prost's `clear` empties its byte, string,
    /// repeated and map fields without freeing them).
    #[inline]
    pub fn next_slot(&mut self) -> &mut FlowMessage {
        if self.live == self.messages.len() {
            self.messages.push(FlowMessage::default());
        } else if let Some(kept) = self.messages.get_mut(self.live) {
            kept.clear();
        }
        self.live += 1;
        let last = self.live - 1;
        &mut self.messages[last]
    }

    /// Appends a flow built elsewhere (in the place of a kept message, if any).
    pub fn push(&mut self, flow: FlowMessage) {
        match self.messages.get_mut(self.live) {
            Some(kept) => *kept = flow,
            None => self.messages.push(flow),
        }
        self.live += 1;
    }

    /// Makes room for `additional` more flows.
    pub fn reserve(&mut self, additional: usize) {
        let spare = self.messages.len() - self.live;
        self.messages.reserve(additional.saturating_sub(spare));
    }

    /// Forgets the flows, keeping at most [`KEPT_MESSAGES`] messages for the next ones.
    pub fn clear(&mut self) {
        self.messages.truncate(KEPT_MESSAGES);
        self.live = 0;
    }

    /// Hands the flows over, leaving the buffer empty (the kept messages go with them
    /// or are dropped).
    pub fn take(&mut self) -> Vec<FlowMessage> {
        self.messages.truncate(self.live);
        self.live = 0;
        std::mem::take(&mut self.messages)
    }
}

impl Deref for FlowBuffer {
    type Target = [FlowMessage];

    fn deref(&self) -> &[FlowMessage] {
        &self.messages[..self.live]
    }
}

impl DerefMut for FlowBuffer {
    fn deref_mut(&mut self) -> &mut [FlowMessage] {
        &mut self.messages[..self.live]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flow(src_port: u32) -> FlowMessage {
        let mut flow = FlowMessage {
            src_port,
            src_addr: vec![10, 0, 0, 1],
            protocol_name: "TCP".into(),
            as_path: vec![64512, 64513],
            bytes: 1500,
            ..Default::default()
        };
        flow.exporter_tags.insert("zone".into(), "b".into());
        flow
    }

    #[test]
    fn cleared_flows_are_gone_and_their_messages_come_back_empty() {
        let mut buffer = FlowBuffer::new();
        buffer.push(flow(1));
        buffer.push(flow(2));
        assert_eq!(buffer.iter().map(|f| f.src_port).collect::<Vec<_>>(), [1, 2]);
        buffer.clear();
        assert!(buffer.is_empty());
        let slot = buffer.next_slot();
        assert_eq!(*slot, FlowMessage::default(), "nothing of the spent flow is left");
        assert!(slot.src_addr.capacity() >= 4, "its address buffer is kept");
        assert!(slot.protocol_name.capacity() >= 3 && slot.as_path.capacity() >= 2);
        assert_eq!(buffer.len(), 1);
    }

    #[test]
    fn clearing_keeps_at_most_the_bounded_number_of_messages() {
        let mut buffer = FlowBuffer::new();
        (0..KEPT_MESSAGES + 10).for_each(|_| buffer.push(flow(1)));
        buffer.clear();
        assert_eq!(buffer.messages.len(), KEPT_MESSAGES);
        buffer.reserve(KEPT_MESSAGES + 5);
        assert!(buffer.messages.capacity() >= KEPT_MESSAGES + 5);
    }

    #[test]
    fn taking_hands_over_only_the_flows() {
        let mut buffer = FlowBuffer::new();
        (0..4).for_each(|port| buffer.push(flow(port)));
        buffer.clear();
        buffer.push(flow(7));
        let flows = buffer.take();
        assert_eq!(flows, [flow(7)]);
        assert!(buffer.is_empty());
    }
}
