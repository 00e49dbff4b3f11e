//! Where the publisher hands its batches: the [`FlowSink`] trait, the embedded
//! JSON-lines sink on standard output, and the factory that builds one sink per subject.
//!
//! A sink owns its delivery policy (retries, acks, timeouts). It reports what became of
//! each flow of a batch as a [`Delivery`]: delivered, or given up under a reason (a
//! JetStream sink may lose part of a batch). When `publish` returns an error the whole
//! batch is given up under [`SinkError::reason`]. Either way the publisher counts and
//! moves on, so a dead sink sheds load instead of stalling the pipeline forever.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use flowpb::FlowMessage;
use thiserror::Error;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::Mutex;

use crate::settings::SinkSettings;

/// The future a sink returns: a boxed `async` block (the trait must stay object-safe so
/// the publisher can hold any sink).
pub type SinkFuture<'a, T = ()> = Pin<Box<dyn Future<Output = Result<T, SinkError>> + Send + 'a>>;

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
        Self { delivered: u64::try_from(flows).unwrap_or(u64::MAX), given_up: BTreeMap::new() }
    }

    /// Records `count` flows given up for `reason`.
    pub fn give_up(&mut self, reason: &'static str, count: u64) {
        *self.given_up.entry(reason).or_default() += count;
    }

    pub fn given_up_total(&self) -> u64 {
        self.given_up.values().sum()
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
}

impl SinkError {
    /// A short, stable label for the `flows_dropped` counter.
    pub fn reason(&self) -> &'static str {
        match self {
            SinkError::Io(_) => "sink_io",
            SinkError::Timeout(_) => "sink_timeout",
            SinkError::Rejected(_) => "sink_rejected",
        }
    }
}

/// A destination for batches of flows (stdout now, JetStream next).
pub trait FlowSink: Send + 'static {
    /// Delivers one batch, resolving once every flow of it is delivered (written, acked)
    /// or given up.
    fn publish<'a>(&'a mut self, flows: &'a [FlowMessage]) -> SinkFuture<'a, Delivery>;

    /// Completes whatever the sink still has in hand (buffered bytes, outstanding acks);
    /// called once when the publisher drains at shutdown.
    fn flush(&mut self) -> SinkFuture<'_> {
        Box::pin(async { Ok(()) })
    }
}

/// Builds the sink of each subject, once, when the collector starts. Sinks outlive
/// publisher restarts.
pub trait SinkFactory: Send + Sync {
    fn create(&self, subject: &str) -> Result<Box<dyn FlowSink>, SinkError>;
}

impl<F> SinkFactory for F
where
    F: Fn(&str) -> Result<Box<dyn FlowSink>, SinkError> + Send + Sync,
{
    fn create(&self, subject: &str) -> Result<Box<dyn FlowSink>, SinkError> {
        self(subject)
    }
}

/// Writes one JSON object per flow per line (`flowpb::json::to_json_line`), one write and
/// one flush per batch. The writer is shared behind an async mutex so several subjects can
/// write to the same stream without interleaving lines.
pub struct JsonLinesSink<W> {
    writer: Arc<Mutex<W>>,
    buffer: Vec<u8>,
}

/// The embedded default sink: JSON lines on standard output.
pub type StdoutSink = JsonLinesSink<tokio::io::Stdout>;

impl<W> JsonLinesSink<W> {
    /// A sink writing to `writer`, which other sinks may share.
    pub fn new(writer: Arc<Mutex<W>>) -> Self {
        Self { writer, buffer: Vec::new() }
    }
}

impl StdoutSink {
    /// A sink on the process's standard output (tokio's, which writes off the runtime
    /// threads).
    pub fn stdout() -> Self {
        Self::new(Arc::new(Mutex::new(tokio::io::stdout())))
    }
}

impl<W: AsyncWrite + Unpin + Send + 'static> FlowSink for JsonLinesSink<W> {
    fn publish<'a>(&'a mut self, flows: &'a [FlowMessage]) -> SinkFuture<'a, Delivery> {
        Box::pin(async move {
            self.buffer.clear();
            for flow in flows {
                self.buffer.extend_from_slice(flowpb::json::to_json_line(flow).as_bytes());
                self.buffer.push(b'\n');
            }
            let mut writer = self.writer.lock().await;
            writer.write_all(&self.buffer).await?;
            writer.flush().await?;
            Ok(Delivery::all(flows.len()))
        })
    }

    fn flush(&mut self) -> SinkFuture<'_> {
        Box::pin(async move {
            self.writer.lock().await.flush().await?;
            Ok(())
        })
    }
}

/// The sinks [`SinkSettings`] asks for. All stdout sinks share one writer.
pub struct ConfiguredSinks {
    settings: SinkSettings,
    stdout: Arc<Mutex<tokio::io::Stdout>>,
}

impl ConfiguredSinks {
    pub fn new(settings: SinkSettings) -> Self {
        Self { settings, stdout: Arc::new(Mutex::new(tokio::io::stdout())) }
    }
}

impl SinkFactory for ConfiguredSinks {
    fn create(&self, _subject: &str) -> Result<Box<dyn FlowSink>, SinkError> {
        match self.settings {
            SinkSettings::Stdout => Ok(Box::new(JsonLinesSink::new(Arc::clone(&self.stdout)))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_one_json_line_per_flow() {
        let out = Arc::new(Mutex::new(Vec::<u8>::new()));
        let mut sink = JsonLinesSink::new(Arc::clone(&out));
        let flows = vec![
            FlowMessage { src_port: 1, ..Default::default() },
            FlowMessage { src_port: 2, ..Default::default() },
        ];
        let delivery = sink.publish(&flows).await.map_err(|e| e.to_string()).unwrap();
        assert_eq!(delivery, Delivery::all(2));
        sink.publish(&flows[..1]).await.map_err(|e| e.to_string()).unwrap();
        sink.flush().await.map_err(|e| e.to_string()).unwrap();

        let text = String::from_utf8(out.lock().await.clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(text.ends_with('\n'));
        assert_eq!(lines[0], flowpb::json::to_json_line(&flows[0]));
        assert_eq!(lines[1], flowpb::json::to_json_line(&flows[1]));
        assert_eq!(lines[2], lines[0]);
    }

    #[test]
    fn sink_errors_have_stable_reasons() {
        assert_eq!(SinkError::Timeout(Duration::from_secs(1)).reason(), "sink_timeout");
        assert_eq!(SinkError::Rejected("full".into()).reason(), "sink_rejected");
        assert_eq!(SinkError::from(std::io::Error::other("x")).reason(), "sink_io");
    }
}
