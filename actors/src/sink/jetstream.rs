//! The JetStream sink: one protobuf `FlowMessage` per NATS message (the wire contract's
//! default framing) or, with [`Framing::Delimited`], many per message, each message with
//! a `Nats-Msg-Id` from one generator shared by every subject, published through one
//! shared [`JetStreamPublisher`].
//!
//! The connection is made in the background ([`JetStreamLink::connect`]) once the
//! listeners are bound, so datagrams are received and counted from the first second;
//! until it is up, publishes wait for it and the publisher's buffer fills.

use std::sync::{Arc, Weak};

use bytes::{Bytes, BytesMut};
use flow_publish::{
    BatchOutcome, ConnectionState, JetStreamPublisher, JetStreamSettings, MessageIdGenerator,
    OutboundMessage, PublisherError,
};
use flowpb::FlowMessage;
use prost::Message;
use tokio::sync::watch;

use super::{Buffering, Delivery, Encoding, FlowSink, IdentityFields, SinkFuture};
use crate::settings::{Framing, JetStreamSinkSettings};

/// The largest delimited frame: under NATS's default 1 MiB `max_payload`, with room for
/// the headers.
pub const MAX_FRAME_BYTES: usize = 1_000_000;

/// Flows given up because the connection failed for good (bad TLS files, refused
/// credentials): the process is about to exit.
pub const CONNECT_FAILED: &str = "nats_connect_failed";

/// Where the connection stands.
#[derive(Debug, Clone)]
pub enum LinkStatus {
    /// The first connect is under way (retried with backoff while NATS is unreachable).
    Connecting,
    /// Connected and the stream is in shape.
    Ready(Arc<JetStreamPublisher>),
    /// The connect failed for a reason retrying cannot fix; the message says which.
    Failed(Arc<str>),
}

/// The JetStream connection the sinks of every subject share. Created before the
/// collector starts, connected after its listeners are bound. Cheap to clone.
#[derive(Clone)]
pub struct JetStreamLink {
    inner: Arc<LinkInner>,
}

struct LinkInner {
    status: watch::Sender<LinkStatus>,
    /// Disconnected until the first connect succeeds, then the client's own state.
    state: watch::Sender<ConnectionState>,
}

impl std::fmt::Debug for JetStreamLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let status = match &*self.inner.status.borrow() {
            LinkStatus::Connecting => "connecting",
            LinkStatus::Ready(_) => "ready",
            LinkStatus::Failed(_) => "failed",
        };
        f.debug_struct("JetStreamLink").field("status", &status).finish()
    }
}

impl Default for JetStreamLink {
    fn default() -> Self {
        Self::new()
    }
}

impl JetStreamLink {
    /// A link not yet connected.
    pub fn new() -> Self {
        let (status, _) = watch::channel(LinkStatus::Connecting);
        let (state, _) = watch::channel(ConnectionState::Disconnected);
        Self { inner: Arc::new(LinkInner { status, state }) }
    }

    /// Connects (retrying while NATS is unreachable, as `settings` say) and brings the
    /// stream into shape. Sinks waiting for the link are released either way: with the
    /// publisher, or with the failure, which the caller should treat as fatal.
    pub async fn connect(
        &self,
        settings: JetStreamSettings,
    ) -> Result<Arc<JetStreamPublisher>, PublisherError> {
        match JetStreamPublisher::connect(settings).await {
            Ok(publisher) => {
                let publisher = Arc::new(publisher);
                self.mirror(publisher.connection().state());
                self.inner.status.send_replace(LinkStatus::Ready(Arc::clone(&publisher)));
                Ok(publisher)
            }
            Err(error) => {
                self.inner.status.send_replace(LinkStatus::Failed(error.to_string().into()));
                Err(error)
            }
        }
    }

    /// Copies the client's connection state into this link's, for as long as both live.
    fn mirror(&self, mut client: watch::Receiver<ConnectionState>) {
        let link: Weak<LinkInner> = Arc::downgrade(&self.inner);
        let first = *client.borrow_and_update();
        self.inner.state.send_replace(first);
        tokio::spawn(async move {
            while client.changed().await.is_ok() {
                let Some(link) = link.upgrade() else { return };
                let state = *client.borrow_and_update();
                link.state.send_replace(state);
            }
        });
    }

    /// The link's status now.
    pub fn status(&self) -> LinkStatus {
        self.inner.status.borrow().clone()
    }

    /// The publisher, once connected.
    pub fn publisher(&self) -> Option<Arc<JetStreamPublisher>> {
        match &*self.inner.status.borrow() {
            LinkStatus::Ready(publisher) => Some(Arc::clone(publisher)),
            LinkStatus::Connecting | LinkStatus::Failed(_) => None,
        }
    }

    /// Waits until the link is connected (the publisher) or has failed (why).
    pub async fn ready(&self) -> Result<Arc<JetStreamPublisher>, Arc<str>> {
        let mut status = self.inner.status.subscribe();
        let settled = status.wait_for(|s| !matches!(s, LinkStatus::Connecting)).await;
        match settled.as_deref() {
            Ok(LinkStatus::Ready(publisher)) => Ok(Arc::clone(publisher)),
            Ok(LinkStatus::Failed(why)) => Err(Arc::clone(why)),
            Ok(LinkStatus::Connecting) | Err(_) => Err("the JetStream link was dropped".into()),
        }
    }

    /// Connection state for readiness: `Disconnected` until the first connect succeeds,
    /// then follows the client (reconnects included).
    pub fn connection_state(&self) -> watch::Receiver<ConnectionState> {
        self.inner.state.subscribe()
    }

    /// Whether the connection is up right now.
    pub fn is_connected(&self) -> bool {
        *self.inner.state.borrow() == ConnectionState::Connected
    }
}

/// Encodes each flow as its own protobuf payload, followed by `shared` (fields every
/// flow carries, already encoded). The payloads share few allocations (sized from a
/// typical flow rather than measured: measuring costs a third of the encoding), so a
/// buffered flow costs about its encoded size plus a 32-byte handle.
pub fn encode_flows(flows: &[FlowMessage], shared: &[u8]) -> Vec<Bytes> {
    const TYPICAL_FLOW_BYTES: usize = 160;
    let mut buffer = BytesMut::with_capacity(flows.len() * (TYPICAL_FLOW_BYTES + shared.len()));
    flows
        .iter()
        .map(|flow| {
            flow.encode_raw(&mut buffer);
            buffer.extend_from_slice(shared);
            buffer.split().freeze()
        })
        .collect()
}

/// Publishes a subject's batches on JetStream through the shared link.
#[derive(Clone)]
pub struct JetStreamSink {
    subject: String,
    link: JetStreamLink,
    ids: Arc<MessageIdGenerator>,
    buffering: Buffering,
    framing: Framing,
}

impl JetStreamSink {
    /// A sink publishing on `subject` through `link`, taking its message ids from `ids`
    /// (one generator per process: ids must never repeat within the stream's duplicate
    /// window).
    pub fn new(
        subject: &str,
        link: &JetStreamLink,
        settings: &JetStreamSinkSettings,
        ids: Arc<MessageIdGenerator>,
    ) -> Self {
        let buffering = Buffering {
            max_flows: settings.buffer_flows.max(1),
            max_batches_in_flight: settings.batches_in_flight.max(1),
        };
        Self {
            subject: subject.to_owned(),
            link: link.clone(),
            ids,
            buffering,
            framing: settings.framing,
        }
    }

    /// One message per flow: each flow's delivery is its message's.
    async fn publish_each(&self, publisher: &JetStreamPublisher, payloads: Vec<Bytes>) -> Delivery {
        let messages = payloads
            .into_iter()
            .map(|payload| OutboundMessage { msg_id: self.ids.next_id(), payload })
            .collect();
        delivery_of(&publisher.publish_batch(&self.subject, messages).await, 1)
    }

    /// Delimited frames, published at once; each frame's outcome counts for its flows.
    async fn publish_framed(
        &self,
        publisher: &Arc<JetStreamPublisher>,
        payloads: Vec<Bytes>,
    ) -> Delivery {
        let mut frames = tokio::task::JoinSet::new();
        for (frame, flows) in delimited_frames(&payloads, MAX_FRAME_BYTES) {
            let message = OutboundMessage { msg_id: self.ids.next_id(), payload: frame };
            let (publisher, subject) = (Arc::clone(publisher), self.subject.clone());
            frames.spawn(async move {
                let outcome = publisher.publish_batch(&subject, vec![message]).await;
                delivery_of(&outcome, flows)
            });
        }
        let mut delivery = Delivery::default();
        while let Some(done) = frames.join_next().await {
            // A frame task that panicked reported nothing: the publisher counts the
            // flows it leaves unreported.
            if let Ok(frame) = done {
                delivery.merge(frame);
            }
        }
        delivery
    }
}

/// Packs encoded flows into frames of protobuf length-delimited `FlowMessage`s (a varint
/// length before each, as `prost::Message::encode_length_delimited` writes them), each
/// frame at most `max_bytes` unless a single flow is larger. Returns each frame with the
/// number of flows in it.
pub fn delimited_frames(payloads: &[Bytes], max_bytes: usize) -> Vec<(Bytes, u64)> {
    let mut frames = Vec::new();
    // A varint length of at most 3 bytes per payload: payloads are flows, far below 2 MiB.
    let total: usize = payloads.iter().map(|payload| payload.len() + 3).sum();
    let mut frame = BytesMut::with_capacity(total.min(max_bytes));
    let mut flows = 0u64;
    for payload in payloads {
        let framed_len = prost::length_delimiter_len(payload.len()) + payload.len();
        if flows > 0 && frame.len() + framed_len > max_bytes {
            frames.push((frame.split().freeze(), flows));
            flows = 0;
        }
        prost::encoding::encode_varint(payload.len() as u64, &mut frame);
        frame.extend_from_slice(payload);
        flows += 1;
    }
    if flows > 0 {
        frames.push((frame.freeze(), flows));
    }
    frames
}

impl FlowSink for JetStreamSink {
    fn publish<'a>(&'a mut self, flows: &'a [FlowMessage]) -> SinkFuture<'a, Delivery> {
        let payloads = encode_flows(flows, &[]);
        self.publish_encoded(payloads)
    }

    /// Waits for the link, then publishes with ids that stay the same across the
    /// transport's retries.
    fn publish_encoded(&mut self, payloads: Vec<Bytes>) -> SinkFuture<'_, Delivery> {
        Box::pin(async move {
            let count = payloads.len();
            let Ok(publisher) = self.link.ready().await else {
                return Ok(Delivery::none(count, CONNECT_FAILED));
            };
            Ok(match self.framing {
                Framing::PerFlow => self.publish_each(&publisher, payloads).await,
                Framing::Delimited => self.publish_framed(&publisher, payloads).await,
            })
        })
    }

    fn buffering(&self) -> Option<Buffering> {
        Some(self.buffering)
    }

    /// Protobuf payloads, the exporter's identity appended: a decoded `FlowMessage` is
    /// several times larger than its encoding, and the buffer holds payloads.
    fn encoding(&self) -> Option<Encoding> {
        Some(Encoding { encoder: encode_flows, identity: IdentityFields::Appended })
    }

    fn fork(&self) -> Option<Box<dyn FlowSink>> {
        Some(Box::new(self.clone()))
    }
}

/// Acked and duplicate messages are delivered (a duplicate was stored by an earlier
/// attempt); the rest are given up under the transport's reason. Each message carries
/// `flows_per_message` flows.
fn delivery_of(outcome: &BatchOutcome, flows_per_message: u64) -> Delivery {
    let delivered = outcome.delivered() * flows_per_message;
    let mut delivery = Delivery { delivered, ..Delivery::default() };
    for (reason, count) in &outcome.given_up {
        delivery.give_up(reason.as_str(), *count * flows_per_message);
    }
    delivery
}

#[cfg(test)]
mod tests {
    use super::*;
    use flow_publish::GiveUpReason;

    #[test]
    fn each_flow_is_encoded_on_its_own() {
        let flows: Vec<FlowMessage> = (0..5)
            .map(|i| FlowMessage { src_port: i, bytes: u64::from(i) * 1000, ..Default::default() })
            .collect();
        let payloads = encode_flows(&flows, &[]);
        assert_eq!(payloads.len(), 5);
        for (flow, payload) in flows.iter().zip(&payloads) {
            assert_eq!(payload.as_ref(), flow.encode_to_vec().as_slice());
            let decoded = FlowMessage::decode(payload.clone()).map_err(|e| e.to_string());
            assert_eq!(decoded.as_ref(), Ok(flow));
        }
        assert!(encode_flows(&[], &[]).is_empty());
    }

    #[test]
    fn outcomes_map_to_deliveries() {
        let mut outcome =
            BatchOutcome { acked: 7, duplicates: 2, retries: 4, ..Default::default() };
        outcome.given_up.insert(GiveUpReason::AckTimeout, 3);
        outcome.given_up.insert(GiveUpReason::StreamFull, 1);
        let delivery = delivery_of(&outcome, 1);
        assert_eq!(delivery.delivered, 9);
        assert_eq!(delivery.given_up.get("ack_timeout"), Some(&3));
        assert_eq!(delivery.given_up.get("stream_full"), Some(&1));
        assert_eq!(delivery.given_up_total(), 4);
        let framed = delivery_of(&outcome, 10);
        assert_eq!((framed.delivered, framed.given_up_total()), (90, 40), "a frame is its flows");
    }

    #[test]
    fn delimited_frames_hold_every_flow_in_order_and_stay_under_the_bound() {
        let flows: Vec<FlowMessage> = (0..50)
            .map(|i| FlowMessage { src_port: i, bytes: u64::from(i) * 1000, ..Default::default() })
            .collect();
        let payloads = encode_flows(&flows, &[]);
        let one_flow = payloads.iter().map(|p| p.len() + 1).max().unwrap_or(0);
        let frames = delimited_frames(&payloads, one_flow * 8);
        assert_eq!(frames.iter().map(|(_, n)| n).sum::<u64>(), 50);
        assert!(frames.len() > 1, "the bound splits the batch: {} frames", frames.len());
        let mut decoded = Vec::new();
        for (frame, count) in &frames {
            assert!(frame.len() <= one_flow * 8);
            let mut rest = frame.clone();
            let mut in_frame = 0;
            while !rest.is_empty() {
                let flow = FlowMessage::decode_length_delimited(&mut rest);
                decoded.push(flow.map_err(|e| e.to_string()));
                in_frame += 1;
            }
            assert_eq!(in_frame, *count);
        }
        let want: Vec<Result<FlowMessage, String>> = flows.into_iter().map(Ok).collect();
        assert_eq!(decoded, want);
        assert!(delimited_frames(&[], 100).is_empty());
    }

    #[tokio::test]
    async fn a_failed_link_gives_up_every_waiting_flow() {
        let link = JetStreamLink::new();
        let settings = JetStreamSinkSettings {
            link: link.clone(),
            buffer_flows: 10,
            batches_in_flight: 2,
            framing: Framing::PerFlow,
            partition_links: Default::default(),
        };
        let mut sink = JetStreamSink::new("flows.a", &link, &settings, Arc::default());
        let waiting = tokio::spawn(async move {
            sink.publish(&[FlowMessage::default(), FlowMessage::default()])
                .await
                .map_err(|e| e.to_string())
        });
        link.inner.status.send_replace(LinkStatus::Failed("bad CA".into()));
        let delivery = waiting.await.map_err(|e| e.to_string()).and_then(|r| r);
        assert_eq!(delivery, Ok(Delivery::none(2, CONNECT_FAILED)));
        assert!(matches!(link.status(), LinkStatus::Failed(why) if &*why == "bad CA"));
        assert!(!link.is_connected());
        assert_eq!(*link.connection_state().borrow(), ConnectionState::Disconnected);
    }

    #[test]
    fn the_sink_asks_for_an_encoding_buffer_and_forks() {
        let settings = JetStreamSinkSettings {
            link: JetStreamLink::new(),
            buffer_flows: 600_000,
            batches_in_flight: 40,
            framing: Framing::PerFlow,
            partition_links: Default::default(),
        };
        let sink = JetStreamSink::new("flows.a", &settings.link, &settings, Arc::default());
        let buffering = sink.buffering().expect("a buffered sink");
        assert_eq!((buffering.max_flows, buffering.max_batches_in_flight), (600_000, 40));
        assert!(sink.encoding().is_some_and(|e| e.identity == IdentityFields::Appended));
        assert!(sink.fork().is_some());
    }
}
