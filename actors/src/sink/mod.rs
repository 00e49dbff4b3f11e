//! Where the publisher hands its batches: the [`FlowSink`] trait, the embedded
//! JSON-lines sink on standard output, the JetStream sink, a sink that discards (for
//! measuring), and the factory that builds one sink per subject.
//!
//! A sink owns its delivery policy (retries, acks, timeouts). It reports what became of
//! each flow of a batch as a [`Delivery`]: delivered, or given up under a reason (a
//! JetStream sink may lose part of a batch). When `publish` returns an error the whole
//! batch is given up under [`SinkError::reason`]. Either way the publisher counts and
//! moves on, so a dead sink sheds load instead of stalling the pipeline forever.
//!
//! A sink also tells the publisher how to hold flows for it ([`FlowSink::buffering`]):
//! inline (one batch at a time, the listener's budget is the only buffer) or a bounded
//! buffer of its own with several batches in flight, which is what rides out a NATS
//! outage; and in what form the exporter actors hand flows over
//! ([`FlowSink::encoding`]): encoded where they were decoded, so encoding runs on every
//! core and the decoded messages stay on their runtime thread for the next flows.

mod discard;
mod jetstream;
mod json_lines;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use flow_publish::MessageIdGenerator;
use flowpb::FlowMessage;
use thiserror::Error;
use tokio::sync::Mutex;

pub use discard::DiscardSink;
pub use flow_publish::{
    Backoff, ClientCertificate, ConnectError, ConnectionState, JetStreamPublisher,
    JetStreamSettings, PublisherError, StreamSettings, TlsSettings, redact_servers,
};
pub use jetstream::{CONNECT_FAILED, JetStreamLink, JetStreamSink, LinkStatus, encode_flows};
pub use json_lines::{JsonLinesSink, Stdout, encode_json_lines};

use crate::settings::SinkSettings;

/// The future a sink returns: a boxed `async` block (the trait must stay object-safe so
/// the publisher can hold any sink).
pub type SinkFuture<'a, T = ()> = Pin<Box<dyn Future<Output = Result<T, SinkError>> + Send + 'a>>;

/// Flows dropped by a publisher whose buffer ([`Buffering::max_flows`]) was full.
pub const BUFFER_FULL: &str = "buffer_full";

/// Turns flows into the payloads a sink publishes, one per flow, in order, each
/// followed by the given bytes: encoded fields all its flows share (the exporter's
/// identity, see `ExporterIdentity::encoded_fields`; empty for flows stamped already).
pub type Encoder = fn(&[FlowMessage], &[u8]) -> Vec<Bytes>;

/// The form in which a sink takes flows: payloads made by `encoder` in the exporter
/// actor that decoded them, and handed over with [`FlowSink::publish_encoded`].
#[derive(Debug, Clone, Copy)]
pub struct Encoding {
    pub encoder: Encoder,
    pub identity: IdentityFields,
}

/// How the exporter's identity (partition, name, site, role, tags) gets into a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityFields {
    /// Appended after each flow, encoded once per exporter (protobuf: fields appended to
    /// a message decode as if they were part of it).
    Appended,
    /// Stamped onto each flow before it is encoded (JSON: the fields sit among the
    /// flow's own keys).
    Stamped,
}

/// What became of a batch: `delivered + given_up_total()` is the batch size.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Delivery {
    /// Flows the destination holds (written, acked, or acked as duplicates).
    pub delivered: u64,
    /// Flows given up, by a short, stable reason label.
    pub given_up: BTreeMap<&'static str, u64>,
}

impl Delivery {
    /// Every one of `flows` delivered.
    pub fn all(flows: usize) -> Self {
        Self { delivered: to_u64(flows), given_up: BTreeMap::new() }
    }

    /// Every one of `flows` given up for `reason`.
    pub fn none(flows: usize, reason: &'static str) -> Self {
        let mut delivery = Self::default();
        delivery.give_up(reason, to_u64(flows));
        delivery
    }

    /// Records `count` flows given up for `reason`.
    pub fn give_up(&mut self, reason: &'static str, count: u64) {
        if count > 0 {
            *self.given_up.entry(reason).or_default() += count;
        }
    }

    pub fn given_up_total(&self) -> u64 {
        self.given_up.values().sum()
    }

    /// Adds another delivery's figures (parts of one batch published apart).
    pub fn merge(&mut self, other: Delivery) {
        self.delivered += other.delivered;
        for (reason, count) in other.given_up {
            self.give_up(reason, count);
        }
    }
}

/// Why a sink gave up a batch.
#[derive(Debug, Error)]
pub enum SinkError {
    #[error("writing flows failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("publish timed out after {0:?}")]
    Timeout(Duration),
    #[error("publish rejected: {0}")]
    Rejected(String),
    #[error("this sink cannot publish {0}")]
    Unsupported(&'static str),
}

impl SinkError {
    /// A short, stable label for the `flows_dropped` counter.
    pub fn reason(&self) -> &'static str {
        match self {
            SinkError::Io(_) => "sink_io",
            SinkError::Timeout(_) => "sink_timeout",
            SinkError::Rejected(_) => "sink_rejected",
            SinkError::Unsupported(_) => "sink_unsupported",
        }
    }
}

/// How a publisher holds flows for a sink that has a buffer of its own.
#[derive(Debug, Clone, Copy)]
pub struct Buffering {
    /// Flows held at most, waiting or in flight (a batch arriving below the bound is
    /// taken whole). Flows arriving at the bound are dropped and counted as
    /// `buffer_full`; the listeners' budgets are given back as flows enter the buffer.
    pub max_flows: usize,
    /// Batches published at once, each through its own [`FlowSink::fork`].
    pub max_batches_in_flight: usize,
}

/// A destination for batches of flows.
pub trait FlowSink: Send + 'static {
    /// Delivers one batch, resolving once every flow of it is delivered (written, acked)
    /// or given up.
    fn publish<'a>(&'a mut self, flows: &'a [FlowMessage]) -> SinkFuture<'a, Delivery>;

    /// Delivers one batch already encoded as [`FlowSink::encoding`] asks.
    fn publish_encoded(&mut self, _payloads: Vec<Bytes>) -> SinkFuture<'_, Delivery> {
        Box::pin(async { Err(SinkError::Unsupported("encoded payloads")) })
    }

    /// `None` (the default): flows come decoded, to [`FlowSink::publish`].
    fn encoding(&self) -> Option<Encoding> {
        None
    }

    /// `None` (the default): the publisher holds one batch at a time and flows beyond it
    /// wait with the listener's budget, so a slow sink makes the listeners drop newest.
    fn buffering(&self) -> Option<Buffering> {
        None
    }

    /// Another handle on the same destination, for a batch published concurrently.
    fn fork(&self) -> Option<Box<dyn FlowSink>> {
        None
    }

    /// Completes whatever the sink still has in hand (buffered bytes, outstanding acks);
    /// called once when the publisher drains at shutdown.
    fn flush(&mut self) -> SinkFuture<'_> {
        Box::pin(async { Ok(()) })
    }
}

/// Builds the sink of each publisher — one per subject and partition — once, when the
/// collector starts. Sinks outlive publisher restarts.
pub trait SinkFactory: Send + Sync {
    /// The sink publishing `partition`'s flows on `subject`.
    fn create(&self, subject: &str, partition: &str) -> Result<Box<dyn FlowSink>, SinkError>;
}

impl<F> SinkFactory for F
where
    F: Fn(&str, &str) -> Result<Box<dyn FlowSink>, SinkError> + Send + Sync,
{
    fn create(&self, subject: &str, partition: &str) -> Result<Box<dyn FlowSink>, SinkError> {
        self(subject, partition)
    }
}

/// The sinks [`SinkSettings`] asks for. All stdout sinks share one writer, opened with
/// the first of them; all JetStream sinks share one message-id generator, so ids never
/// repeat across subjects, and each publishes through its partition's connection (the
/// install's unless the partition has its own credentials or stream).
pub struct ConfiguredSinks {
    settings: SinkSettings,
    stdout: OnceLock<Arc<Mutex<Stdout>>>,
    ids: Arc<MessageIdGenerator>,
}

impl ConfiguredSinks {
    pub fn new(settings: SinkSettings) -> Self {
        Self { settings, stdout: OnceLock::new(), ids: Arc::new(MessageIdGenerator::new()) }
    }
}

impl SinkFactory for ConfiguredSinks {
    fn create(&self, subject: &str, partition: &str) -> Result<Box<dyn FlowSink>, SinkError> {
        match &self.settings {
            SinkSettings::Stdout => {
                let stdout = self.stdout.get_or_init(|| Arc::new(Mutex::new(Stdout::open())));
                Ok(Box::new(JsonLinesSink::new(Arc::clone(stdout))))
            }
            SinkSettings::Discard => Ok(Box::new(DiscardSink)),
            SinkSettings::JetStream(settings) => {
                let link = settings.link_for(partition);
                Ok(Box::new(JetStreamSink::new(subject, link, settings, Arc::clone(&self.ids))))
            }
        }
    }
}

fn to_u64(n: usize) -> u64 {
    u64::try_from(n).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sink_errors_have_stable_reasons() {
        assert_eq!(SinkError::Timeout(Duration::from_secs(1)).reason(), "sink_timeout");
        assert_eq!(SinkError::Rejected("full".into()).reason(), "sink_rejected");
        assert_eq!(SinkError::from(std::io::Error::other("x")).reason(), "sink_io");
        assert_eq!(SinkError::Unsupported("x").reason(), "sink_unsupported");
    }

    #[test]
    fn a_delivery_of_none_gives_up_every_flow_under_one_reason() {
        let delivery = Delivery::none(7, "nats_connect_failed");
        assert_eq!(delivery.delivered, 0);
        assert_eq!(delivery.given_up_total(), 7);
        assert_eq!(delivery.given_up.get("nats_connect_failed"), Some(&7));
        assert!(Delivery::none(0, "x").given_up.is_empty());
    }
}
