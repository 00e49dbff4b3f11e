//! A sink that keeps nothing: for measuring the decode path (`--discard-flows`).

use bytes::Bytes;
use flowpb::FlowMessage;

use super::{Delivery, Encoding, FlowSink, IdentityFields, SinkFuture};

/// Takes every flow and keeps none, like writing to /dev/null without the JSON: flows
/// are decoded, handed to the publishers and counted as published, and nothing is
/// encoded or written. What the collector costs without its output format.
#[derive(Debug, Default, Clone, Copy)]
pub struct DiscardSink;

/// One empty payload per flow (`Bytes::new` allocates nothing; each is made, not
/// cloned: cloning a `Bytes` calls through its vtable).
fn encode_nothing(flows: &[FlowMessage], _identity: &[u8]) -> Vec<Bytes> {
    std::iter::repeat_with(Bytes::new).take(flows.len()).collect()
}

impl FlowSink for DiscardSink {
    fn publish<'a>(&'a mut self, flows: &'a [FlowMessage]) -> SinkFuture<'a, Delivery> {
        Box::pin(async move { Ok(Delivery::all(flows.len())) })
    }

    fn publish_encoded(&mut self, payloads: Vec<Bytes>) -> SinkFuture<'_, Delivery> {
        Box::pin(async move { Ok(Delivery::all(payloads.len())) })
    }

    /// Flows are "encoded" where they are decoded, as for the real sinks, so the
    /// decoded messages stay in the exporter's reused buffer.
    fn encoding(&self) -> Option<Encoding> {
        Some(Encoding { encoder: encode_nothing, identity: IdentityFields::Appended })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_flow_is_taken_and_nothing_is_encoded() {
        let mut sink = DiscardSink;
        let flows = vec![FlowMessage { src_port: 1, ..Default::default() }; 3];
        let encoding = sink.encoding().expect("an encoding");
        let payloads = (encoding.encoder)(&flows, b"identity");
        assert_eq!(payloads.len(), 3);
        assert!(payloads.iter().all(Bytes::is_empty));
        let delivery = sink.publish_encoded(payloads).await.map_err(|e| e.to_string());
        assert_eq!(delivery, Ok(Delivery::all(3)));
        let delivery = sink.publish(&flows[..2]).await.map_err(|e| e.to_string());
        assert_eq!(delivery, Ok(Delivery::all(2)));
        assert!(sink.buffering().is_none(), "no buffer of its own");
    }
}
